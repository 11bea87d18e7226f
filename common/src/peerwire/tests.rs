use super::*;
use crate::testvec::Vector;
use proptest::prelude::*;

fn enc(m: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    m.encode(&mut out);
    out
}

fn dec(b: &[u8]) -> Result<(Message, usize), DecodeError> {
    Message::decode(b, MAX_MESSAGE_LEN)
}

/// Encode `m`, compare with the vector's bytes, decode them back.
fn check_vector(name: &str, m: Message) {
    let v = Vector::load(name);
    let bytes = v.bytes("bytes");
    assert_eq!(enc(&m), bytes, "{name}: encode");
    assert_eq!(m.encoded_len(), bytes.len(), "{name}: encoded_len");
    assert_eq!(dec(&bytes), Ok((m, bytes.len())), "{name}: decode");
}

fn field(v: &Vector, key: &str) -> u32 {
    u32::try_from(v.u64(key)).expect("u32 field")
}

#[test]
fn handshake_vector() {
    let v = Vector::load("pw_handshake");
    let hs = Handshake {
        version: v.u64("version") as u16,
        infohash: InfoHash(v.array("infohash")),
    };
    assert_eq!(hs, Handshake::new(hs.infohash));
    let bytes = v.bytes("bytes");
    assert_eq!(&hs.to_bytes()[..], &bytes[..]);
    assert_eq!(Handshake::decode(&bytes), Ok((hs, HANDSHAKE_LEN)));
    // Independent reading of the documented layout.
    assert_eq!(&bytes[..8], b"ANOMOSPW");
    assert_eq!(&bytes[10..42], &hs.infohash.0);
}

#[test]
fn message_vectors() {
    check_vector("pw_keepalive", Message::KeepAlive);
    check_vector("pw_choke", Message::Choke);
    check_vector("pw_unchoke", Message::Unchoke);
    check_vector("pw_interested", Message::Interested);
    check_vector("pw_not_interested", Message::NotInterested);
    let v = Vector::load("pw_have");
    check_vector(
        "pw_have",
        Message::Have {
            piece: field(&v, "piece"),
        },
    );
    let v = Vector::load("pw_bitfield");
    let bits = v.bytes("bits");
    let count = field(&v, "pieces");
    assert!(crate::piece::Bitfield::from_bytes(&bits, count).is_ok());
    check_vector("pw_bitfield", Message::Bitfield(bits));
    for (name, cancel) in [("pw_request", false), ("pw_cancel", true)] {
        let v = Vector::load(name);
        let (piece, offset, len) = (field(&v, "piece"), field(&v, "offset"), field(&v, "len"));
        let m = if cancel {
            Message::Cancel { piece, offset, len }
        } else {
            Message::Request { piece, offset, len }
        };
        check_vector(name, m);
    }
    let v = Vector::load("pw_piece");
    let m = Message::Piece {
        piece: field(&v, "piece"),
        offset: field(&v, "offset"),
        data: v.bytes("data"),
    };
    check_vector("pw_piece", m);
}

#[test]
fn handshake_rejects_bad_bytes() {
    let good = Handshake::new(InfoHash([9; 32])).to_bytes();
    for pos in [0, 7, 42, 47] {
        let mut b = good;
        b[pos] ^= 1;
        assert!(matches!(
            Handshake::decode(&b),
            Err(DecodeError::Malformed(_))
        ));
    }
    // Another version decodes; the swarm core refuses it with a reason.
    let mut b = good;
    b[9] = 2;
    assert_eq!(Handshake::decode(&b).map(|(h, _)| h.version), Ok(2));
    assert!(matches!(
        Handshake::decode(b"BitTorrent protocol"),
        Err(DecodeError::Malformed(_))
    ));
    assert_eq!(
        Handshake::decode(b"ANOMO"),
        Err(DecodeError::NeedMore(HANDSHAKE_LEN - 5))
    );
}

#[test]
fn strict_lengths_and_ids() {
    let malformed = |b: &[u8]| matches!(dec(b), Err(DecodeError::Malformed(_)));
    // Unknown id, judged from the header alone.
    assert!(malformed(&[0, 0, 0, 1, 9]));
    assert!(malformed(&[0, 0, 0, 1, 0xff]));
    // Fixed sizes: one byte too many or too few, before the body arrives.
    assert!(malformed(&[0, 0, 0, 2, 0]));
    assert!(malformed(&[0, 0, 0, 4, 4]));
    assert!(malformed(&[0, 0, 0, 6, 4]));
    assert!(malformed(&[0, 0, 0, 12, 6]));
    assert!(malformed(&[0, 0, 0, 14, 8]));
    // Empty bitfield, piece without data.
    assert!(malformed(&[0, 0, 0, 1, 5]));
    assert!(malformed(&[0, 0, 0, 9, 7]));
    // Request / cancel lengths 0 and above a block.
    let req = |id: u8, len: u32| {
        let mut b = vec![0, 0, 0, 13, id, 0, 0, 0, 1, 0, 0, 0, 0];
        b.extend_from_slice(&len.to_be_bytes());
        b
    };
    for id in [6, 8] {
        assert!(malformed(&req(id, 0)));
        assert!(malformed(&req(id, BLOCK_LEN + 1)));
        assert!(dec(&req(id, BLOCK_LEN)).is_ok());
    }
    // A full block is the largest message; one more byte is refused from
    // the length prefix alone, with nothing of the body buffered.
    let full = Message::Piece {
        piece: 0,
        offset: 0,
        data: vec![7; BLOCK_LEN as usize],
    };
    assert_eq!(enc(&full).len(), LEN_PREFIX + MAX_MESSAGE_LEN as usize);
    assert_eq!(dec(&enc(&full)).map(|(m, _)| m), Ok(full));
    assert_eq!(
        dec(&(MAX_MESSAGE_LEN + 1).to_be_bytes()),
        Err(DecodeError::Malformed("message too long"))
    );
    assert!(malformed(&[0, 0, 0x40, 0x0a, 7]));
    assert_eq!(dec(&[0, 0, 0]), Err(DecodeError::NeedMore(1)));
    assert_eq!(dec(&[0, 0, 0, 5]), Err(DecodeError::NeedMore(1)));
    assert_eq!(dec(&[0, 0, 0, 5, 4, 1]), Err(DecodeError::NeedMore(3)));
}

#[test]
fn bitfield_limit_follows_piece_count() {
    assert_eq!(max_len_for(1), MAX_MESSAGE_LEN);
    let n = 200_000;
    let limit = max_len_for(n);
    assert_eq!(limit, 1 + n.div_ceil(8));
    let m = Message::Bitfield(vec![0xff; n.div_ceil(8) as usize]);
    let b = enc(&m);
    assert!(matches!(dec(&b), Err(DecodeError::Malformed(_))));
    assert_eq!(Message::decode(&b, limit), Ok((m, b.len())));
}

#[test]
fn reader_wants_handshake_first_and_errors_stick() {
    let mut r = MessageReader::new(MAX_MESSAGE_LEN);
    r.push(&enc(&Message::Choke));
    assert!(r.next_frame().is_err());
    r.push(&Handshake::new(InfoHash([0; 32])).to_bytes());
    assert!(r.next_frame().is_err());
    assert_eq!(r.buffered(), 0);

    let mut r = MessageReader::new(MAX_MESSAGE_LEN);
    let hs = Handshake::new(InfoHash([3; 32]));
    r.push(&hs.to_bytes());
    r.push(&(MAX_MESSAGE_LEN + 1).to_be_bytes());
    assert_eq!(r.next_frame(), Ok(Some(Frame::Handshake(hs))));
    assert_eq!(
        r.next_frame(),
        Err(DecodeError::Malformed("message too long"))
    );
}

fn arb_message() -> impl Strategy<Value = Message> {
    let triple = (any::<u32>(), any::<u32>(), 1..=BLOCK_LEN);
    prop_oneof![
        Just(Message::KeepAlive),
        Just(Message::Choke),
        Just(Message::Unchoke),
        Just(Message::Interested),
        Just(Message::NotInterested),
        any::<u32>().prop_map(|piece| Message::Have { piece }),
        prop::collection::vec(any::<u8>(), 1..300).prop_map(Message::Bitfield),
        triple
            .clone()
            .prop_map(|(piece, offset, len)| Message::Request { piece, offset, len }),
        triple.prop_map(|(piece, offset, len)| Message::Cancel { piece, offset, len }),
        (
            any::<u32>(),
            any::<u32>(),
            prop_oneof![
                prop::collection::vec(any::<u8>(), 1..64),
                (1..=BLOCK_LEN as usize).prop_map(|n| vec![0xa5; n]),
            ]
        )
            .prop_map(|(piece, offset, data)| Message::Piece {
                piece,
                offset,
                data
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn round_trip_and_truncations(m in arb_message()) {
        let b = enc(&m);
        prop_assert_eq!(b.len(), m.encoded_len());
        prop_assert_eq!(dec(&b), Ok((m.clone(), b.len())));
        // Trailing bytes belong to the next message.
        let more = [&b[..], &[0xff, 0xff][..]].concat();
        prop_assert_eq!(dec(&more), Ok((m, b.len())));
        // Every proper prefix (sampled for big pieces) needs more, and
        // never more than what is actually missing.
        let step = (b.len() / 97).max(1);
        for k in (0..b.len()).step_by(step).chain([b.len() - 1]) {
            match dec(&b[..k]) {
                Err(DecodeError::NeedMore(n)) => prop_assert!(n >= 1 && n <= b.len() - k),
                other => prop_assert!(false, "prefix {} gave {:?}", k, other),
            }
        }
    }

    #[test]
    fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..80), header in any::<bool>()) {
        let input = if header && bytes.len() > 4 {
            // Steer towards plausible headers: small length, real id range.
            let mut b = bytes.clone();
            b[..3].fill(0);
            b[4] %= 10;
            b
        } else {
            bytes
        };
        if let Ok((m, n)) = dec(&input) {
            prop_assert_eq!(enc(&m), input[..n].to_vec());
        }
        if let Ok((h, n)) = Handshake::decode(&input) {
            prop_assert_eq!(&h.to_bytes()[..], &input[..n]);
        }
    }

    #[test]
    fn reader_is_chunking_independent(
        msgs in prop::collection::vec(arb_message(), 0..8),
        chunk in 1usize..600,
    ) {
        let hs = Handshake::new(InfoHash([0x42; 32]));
        let mut stream = hs.to_bytes().to_vec();
        for m in &msgs {
            m.encode(&mut stream);
        }
        let mut r = MessageReader::new(MAX_MESSAGE_LEN);
        let mut got = Vec::new();
        for c in stream.chunks(chunk) {
            r.push(c);
            while let Some(f) = r.next_frame().expect("valid stream") {
                got.push(f);
            }
        }
        let want: Vec<Frame> = std::iter::once(Frame::Handshake(hs))
            .chain(msgs.into_iter().map(Frame::Message))
            .collect();
        prop_assert_eq!(got, want);
        prop_assert_eq!(r.buffered(), 0);
    }
}
