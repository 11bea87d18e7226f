//! Cell vectors (PROTOCOL.md §4), round trips and strictness.

use super::*;
use crate::testvec::Vector;
use proptest::prelude::*;

/// The CREATE vector's code and the DATA vector's body: byte i is i mod 256.
fn pattern<const N: usize>() -> [u8; N] {
    std::array::from_fn(|i| i as u8)
}

fn credit(n: u16) -> CellMsg {
    CellMsg::Credit(NonZeroU16::new(n).expect("nonzero"))
}

fn vector_cells() -> Vec<(&'static str, Cell)> {
    vec![
        ("cell_padding", Cell::new(CircuitId::LINK, CellMsg::Padding)),
        (
            "cell_create",
            Cell::new(CircuitId(1), CellMsg::Create(Box::new(pattern()))),
        ),
        ("cell_confirm", Cell::new(CircuitId(2), CellMsg::Confirm)),
        (
            "cell_data",
            Cell::new(CircuitId(0x0102_0304), CellMsg::Data(Box::new(pattern()))),
        ),
        (
            "cell_break",
            Cell::new(CircuitId(7), CellMsg::Break(BreakReason::LinkLost)),
        ),
        ("cell_break_ack", Cell::new(CircuitId(7), CellMsg::BreakAck)),
        ("cell_credit", Cell::new(CircuitId(0xfffffffe), credit(100))),
    ]
}

/// Rebuild the full documented bytes: `head`, then the documented tail.
fn documented_bytes(v: &Vector) -> Vec<u8> {
    let mut bytes = v.bytes("head");
    let len = v.u64("len") as usize;
    match v.str("tail") {
        "zeros" => bytes.resize(len, 0),
        // Body byte i (counting from offset 5) is i mod 256, up to `until`.
        "pattern" => {
            let until = v.u64("pattern_until") as usize;
            while bytes.len() < until {
                bytes.push((bytes.len() - CELL_HEADER_LEN) as u8);
            }
            bytes.resize(len, 0);
        }
        other => panic!("unknown tail {other}"),
    }
    bytes
}

#[test]
fn vectors_encode_and_decode() {
    for (name, cell) in vector_cells() {
        let v = Vector::load(name);
        let doc = documented_bytes(&v);
        let enc = cell.to_bytes();
        assert_eq!(enc.len(), v.u64("len") as usize, "{name}");
        assert_eq!(&enc[..], &doc[..], "{name}: encode");
        assert_eq!(
            hex::encode(crate::crypto::sha256(&enc)),
            v.str("sha256"),
            "{name}: digest"
        );
        assert_eq!(Cell::decode(&doc), Ok((cell, CELL_LEN)), "{name}: decode");
    }
}

#[test]
fn strictness() {
    let mut ok = Cell::new(CircuitId(3), CellMsg::Confirm).to_bytes();
    let malformed = |b: &[u8]| matches!(Cell::decode(b), Err(DecodeError::Malformed(_)));
    for cmd in 7..=255u8 {
        ok[4] = cmd;
        assert!(malformed(&ok), "command {cmd}");
    }
    // Circuit commands on id 0, padding on a circuit.
    for cmd in 1..=6u8 {
        let mut b = [0u8; CELL_LEN];
        b[4] = cmd;
        assert!(malformed(&b), "command {cmd} on id 0");
    }
    let mut pad = Cell::new(CircuitId::LINK, CellMsg::Padding).to_bytes();
    pad[3] = 1;
    assert!(malformed(&pad));
    let mut zero_credit = Cell::new(CircuitId(3), credit(1)).to_bytes();
    zero_credit[CELL_HEADER_LEN + 1] = 0;
    assert!(malformed(&zero_credit));
    let mut bad_reason = Cell::new(CircuitId(3), CellMsg::Break(BreakReason::None)).to_bytes();
    bad_reason[CELL_HEADER_LEN] = 7;
    assert!(malformed(&bad_reason));
}

#[test]
fn debug_hides_bodies() {
    let cell = Cell::new(CircuitId(1), CellMsg::Data(Box::new([0xab; CELL_BODY_LEN])));
    let s = format!("{cell:?}");
    assert!(!s.contains("171") && !s.contains("ab"), "{s}");
}

fn arb_msg() -> impl Strategy<Value = CellMsg> {
    prop_oneof![
        Just(CellMsg::Confirm),
        Just(CellMsg::BreakAck),
        (0u8..=6).prop_map(|r| CellMsg::Break(BreakReason::from_byte(r).expect("reason"))),
        (1u16..).prop_map(credit),
        prop::collection::vec(any::<u8>(), CREATE_CODE_LEN)
            .prop_map(|v| CellMsg::Create(Box::new(v.try_into().expect("len")))),
        prop::collection::vec(any::<u8>(), CELL_BODY_LEN)
            .prop_map(|v| CellMsg::Data(Box::new(v.try_into().expect("len")))),
    ]
}

fn arb_cell() -> impl Strategy<Value = Cell> {
    prop_oneof![
        1 => Just(Cell::new(CircuitId::LINK, CellMsg::Padding)),
        6 => (1u32.., arb_msg()).prop_map(|(c, m)| Cell::new(CircuitId(c), m)),
    ]
}

/// Offsets of body bytes the format requires to be zero.
fn zero_region(msg: &CellMsg) -> std::ops::Range<usize> {
    let start = match msg {
        CellMsg::Data(_) => CELL_LEN,
        CellMsg::Create(_) => CELL_HEADER_LEN + CREATE_CODE_LEN,
        CellMsg::Break(_) => CELL_HEADER_LEN + 1,
        CellMsg::Credit(_) => CELL_HEADER_LEN + 2,
        _ => CELL_HEADER_LEN,
    };
    start..CELL_LEN
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn round_trip(cell in arb_cell()) {
        let mut v = Vec::new();
        cell.encode_into(&mut v);
        prop_assert_eq!(v.len(), CELL_LEN);
        prop_assert_eq!(peek_header(&v), Ok((cell.circ, cell.msg.command())));
        prop_assert_eq!(Cell::decode(&v), Ok((cell, CELL_LEN)));
    }

    #[test]
    fn truncations_need_more(cell in arb_cell()) {
        let bytes = cell.to_bytes();
        for k in 0..CELL_LEN {
            prop_assert_eq!(Cell::decode(&bytes[..k]), Err(DecodeError::NeedMore(CELL_LEN - k)));
        }
    }

    #[test]
    fn any_nonzero_padding_byte_is_malformed(cell in arb_cell(), pos in any::<prop::sample::Index>(), val in 1u8..) {
        let region = zero_region(&cell.msg);
        prop_assume!(!region.is_empty());
        let mut bytes = cell.to_bytes();
        bytes[region.start + pos.index(region.len())] = val;
        prop_assert!(matches!(Cell::decode(&bytes), Err(DecodeError::Malformed(_))));
    }

    #[test]
    fn random_bytes_never_panic_and_accepted_ones_are_canonical(
        bytes in prop::collection::vec(any::<u8>(), 0..1100),
        hdr in prop::collection::vec(any::<u8>(), 5),
    ) {
        for input in [bytes.clone(), [&hdr[..], &bytes[..]].concat()] {
            if let Ok((cell, used)) = Cell::decode(&input) {
                prop_assert_eq!(used, CELL_LEN);
                prop_assert_eq!(&cell.to_bytes()[..], &input[..CELL_LEN]);
            }
            let _ = peek_header(&input);
        }
    }

    #[test]
    fn reader_reassembles_any_chunking(
        cells in prop::collection::vec(arb_cell(), 0..6),
        cuts in prop::collection::vec(1usize..1500, 1..8),
        use_spare in any::<bool>(),
    ) {
        let mut stream = Vec::new();
        for c in &cells { c.encode_into(&mut stream); }
        let mut reader = CellReader::new();
        let mut got = Vec::new();
        let mut rest = &stream[..];
        let mut i = 0;
        while !rest.is_empty() {
            let n = cuts[i % cuts.len()].min(rest.len());
            i += 1;
            if use_spare {
                reader.spare_mut(n)[..n].copy_from_slice(&rest[..n]);
                reader.commit(n);
            } else {
                reader.push(&rest[..n]);
            }
            rest = &rest[n..];
            while let Some(c) = reader.next_cell() { got.push(c.expect("valid")); }
        }
        prop_assert_eq!(reader.buffered(), 0);
        prop_assert_eq!(got, cells);
    }
}

#[test]
fn reader_in_place_forwarding() {
    let cells: Vec<Cell> = (1..=5u32)
        .map(|i| {
            Cell::new(
                CircuitId(i),
                CellMsg::Data(Box::new([i as u8; CELL_BODY_LEN])),
            )
        })
        .collect();
    let mut stream = Vec::new();
    cells.iter().for_each(|c| c.encode_into(&mut stream));
    let mut reader = CellReader::new();
    reader.push(&stream[..CELL_LEN * 2 + 10]);
    assert_eq!(reader.whole_cells(), 2);
    // One cell through the single-cell view, in place.
    let mut out = Vec::new();
    {
        let mut c = reader.next_mut().expect("cell");
        assert_eq!(c.command(), Ok(Command::Data));
        c.set_circ(CircuitId(100 + c.circ().0));
        c.body_mut().iter_mut().for_each(|b| *b ^= 0xff);
        assert_eq!(c.as_ref().circ(), CircuitId(101));
    }
    reader.push(&stream[CELL_LEN * 2 + 10..]);
    // The rest as one batch.
    let batch = reader.whole_cells_mut();
    assert_eq!(batch.len(), 4 * CELL_LEN);
    for chunk in batch.chunks_exact_mut(CELL_LEN) {
        let mut c = CellMut::new(chunk).expect("whole");
        c.set_circ(CircuitId(100 + c.circ().0));
    }
    out.extend_from_slice(batch);
    reader.consume_cells(4);
    assert_eq!(reader.buffered(), 0);
    assert!(reader.next_mut().is_none() && reader.next_cell().is_none());
    let (c, _) = Cell::decode(&out[CELL_LEN..]).expect("decode");
    assert_eq!(c.circ, CircuitId(103));
    assert_eq!(c.msg, CellMsg::Data(Box::new([3; CELL_BODY_LEN])));
    assert_eq!(peek_header(&out[..3]), Err(DecodeError::NeedMore(2)));
    assert!(matches!(
        CellMut::new(&mut out[..10]),
        Err(DecodeError::NeedMore(1014))
    ));
}
