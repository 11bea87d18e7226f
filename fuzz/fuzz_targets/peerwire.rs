//! Piece-protocol decoding must never panic, whatever the bytes; an
//! accepted handshake or message re-encodes to exactly the bytes it came
//! from (strict decoding: one encoding each), and the streaming reader cuts
//! the same frames out of the input in any chunking.
#![no_main]

use anomos_common::peerwire::{
    max_len_for, Frame, Handshake, Message, MessageReader, HANDSHAKE_LEN, MAX_MESSAGE_LEN,
};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok((hs, used)) = Handshake::decode(data) {
        assert_eq!(used, HANDSHAKE_LEN);
        assert_eq!(&hs.to_bytes()[..], &data[..HANDSHAKE_LEN]);
    }
    // The first byte picks a chunk size and a length limit; the rest is a
    // stream after a valid handshake.
    let Some((&pick, stream)) = data.split_first() else {
        return;
    };
    let max_len = if pick & 1 == 0 {
        MAX_MESSAGE_LEN
    } else {
        max_len_for(u32::from(pick) << 12)
    };
    if let Ok((m, used)) = Message::decode(stream, max_len) {
        let mut out = Vec::new();
        m.encode(&mut out);
        assert_eq!(out, &stream[..used]);
    }

    let mut reader = MessageReader::new(max_len);
    reader.push(&Handshake::new(anomos_common::InfoHash([0; 32])).to_bytes());
    assert!(matches!(reader.next_frame(), Ok(Some(Frame::Handshake(_)))));
    let chunk = usize::from(pick) * 5 + 1;
    let mut taken = 0;
    'outer: for part in stream.chunks(chunk) {
        reader.push(part);
        loop {
            match reader.next_frame() {
                Ok(Some(Frame::Message(m))) => {
                    let (want, used) =
                        Message::decode(&stream[taken..], max_len).expect("reader agrees");
                    assert_eq!(m, want);
                    taken += used;
                }
                Ok(Some(Frame::Handshake(_))) => panic!("second handshake"),
                Ok(None) => break,
                Err(e) => {
                    assert_eq!(Message::decode(&stream[taken..], max_len), Err(e));
                    break 'outer;
                }
            }
        }
    }
});
