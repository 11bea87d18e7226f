//! Cell decoding must never panic, and whatever it accepts must re-encode to
//! exactly the bytes it came from (strict decoding: one encoding per cell).
//! The stream reader must cut the same cells out of the input in any chunking.
#![no_main]

use anomos_common::cell::{peek_header, Cell, CellMut, CellReader, CELL_LEN};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = peek_header(data);
    if let Ok((cell, used)) = Cell::decode(data) {
        assert_eq!(used, CELL_LEN);
        assert_eq!(&cell.to_bytes()[..], &data[..CELL_LEN]);
    }

    // The first byte picks a chunk size; the rest is the stream.
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk) * 7 + 1;
    let mut reader = CellReader::new();
    let mut taken = 0;
    for piece in stream.chunks(chunk) {
        reader.push(piece);
        while let Some(result) = reader.next_cell() {
            let expected = Cell::decode(&stream[taken..]).map(|(c, _)| c);
            assert_eq!(result, expected);
            taken += CELL_LEN;
        }
    }
    assert_eq!(taken, stream.len() / CELL_LEN * CELL_LEN);
    assert_eq!(reader.buffered(), stream.len() % CELL_LEN);

    // The in-place view agrees with the owned decoder on every whole cell.
    let mut copy = stream.to_vec();
    for piece in copy.chunks_exact_mut(CELL_LEN) {
        let expected = Cell::decode(piece).map(|(c, _)| c);
        if let Ok(view) = CellMut::new(piece) {
            assert_eq!(view.as_ref().to_cell(), expected);
        }
    }
});
