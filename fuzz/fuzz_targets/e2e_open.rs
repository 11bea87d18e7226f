//! The e2e channel and handshake parsers on arbitrary bytes: nothing
//! panics, a record opens only if it is exactly what the matching sender
//! would have sealed, and the channel stays closed after a failure.
#![no_main]

use anomos_common::crypto::{CircuitSecret, X25519Secret};
use anomos_common::e2e::{Channel, ChannelKeys, Initiator, Responder, Role};

fn keys() -> ChannelKeys {
    ChannelKeys {
        key_ox: [1; 32],
        key_xo: [2; 32],
        prefix_ox: [3; 4],
        prefix_xo: [4; 4],
        confirm: [5; 32],
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // Records: the first byte picks how the rest is cut into records.
    if let Some((&cut, rest)) = data.split_first() {
        let mut rx = Channel::new(&keys(), Role::Exit).expect("fixed keys");
        // The sender in lockstep: it seals what rx opened, at the same seq.
        let mut tx = Channel::new(&keys(), Role::Originator).expect("fixed keys");
        let mut failed = false;
        for record in rest.chunks(usize::from(cut) + 1) {
            let mut buf = record.to_vec();
            match rx.open_in_place(&mut buf) {
                Ok(plain) => {
                    assert!(!failed, "opened after a failure");
                    let mut resealed = Vec::new();
                    tx.seal(plain, &mut resealed).expect("fits");
                    assert_eq!(resealed, record, "open is not the inverse of seal");
                }
                Err(_) => failed = true,
            }
        }
        if failed {
            assert!(rx.open(&[0; 32]).is_err(), "channel reopened after a failure");
        }
    }

    // Handshake: arbitrary bytes as INIT and as ACCEPT.
    let secret = CircuitSecret([7; 32]);
    let eph = || X25519Secret::from_bytes([9; 32]).expect("fixed key");
    let _ = Responder::accept_with_ephemeral(eph(), &secret, data);
    let (initiator, _) = Initiator::with_ephemeral(eph(), &secret);
    let _ = initiator.finish(data);
});
