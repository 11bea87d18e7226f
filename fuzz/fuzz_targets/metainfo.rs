//! `Metainfo::from_bytes` must never panic, and anything it accepts must
//! round-trip byte for byte (only canonical files are accepted) and have a
//! piece layout whose maths holds.
#![no_main]

use anomos_common::metainfo::Metainfo;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Metainfo::from_bytes(data) {
        assert_eq!(m.to_bytes(), data);
        let layout = m.layout();
        assert_eq!(layout.piece_count() as usize, m.piece_hashes().len());
        let last = layout.piece_count() - 1;
        let spanned: u64 = layout.file_spans(last).map(|s| u64::from(s.len)).sum();
        assert_eq!(Some(spanned as u32), layout.piece_len(last));
    }
});
