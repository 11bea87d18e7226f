//! The tracker API decoders must never panic on any body, whatever the
//! message type, and anything they accept must re-encode to the same bytes.
//! A decoded `SignedAnnounce` is also run through `verify` (signature and
//! certificate parsing included).
#![no_main]

use anomos_common::api::{
    AnnounceRequest, AnnounceResponse, ApiErrorBody, Message, SignedAnnounce,
};

fn round_trips<M: Message>(data: &[u8]) -> Option<M> {
    let m = M::decode(data).ok()?;
    assert_eq!(m.encode().expect("re-encode"), data);
    Some(m)
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some(signed) = round_trips::<SignedAnnounce>(data) {
        let now = AnnounceRequest::decode(&signed.body).map_or(0, |r| r.timestamp);
        let _ = signed.verify(now, 300);
    }
    let _ = round_trips::<AnnounceRequest>(data);
    let _ = round_trips::<AnnounceResponse>(data);
    let _ = round_trips::<ApiErrorBody>(data);
});
