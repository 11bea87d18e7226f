//! Large copies on the data path, made in pieces of at most [`PIECE`] bytes.
//!
//! Why: glibc 2.36 (Debian 12) copies anything above 2112 bytes with
//! `rep movsb`, and on AMD Zen that runs ~30 times slower (1.2–1.7 GB/s
//! instead of 35–58 GB/s, measured on the build machine) whenever the
//! destination lies 1–63 bytes past the source modulo 4 KiB, which a run of
//! cells copied from a link read into an outbound buffer hits at random.
//! Pieces of 2 KiB are copied with vector loads whatever their alignment,
//! at full speed. (Copies inside OpenSSL and the kernel are out of reach;
//! `GLIBC_TUNABLES=glibc.cpu.x86_rep_movsb_threshold=…` moves the switch
//! for a whole process.)

/// Largest piece handed to one `memcpy`: below glibc's `rep movsb` switch.
pub const PIECE: usize = 2048;

/// `dst.extend_from_slice(src)`, piecewise.
pub fn extend(dst: &mut Vec<u8>, src: &[u8]) {
    dst.reserve(src.len());
    for piece in src.chunks(PIECE) {
        dst.extend_from_slice(piece);
    }
}

/// `dst.copy_from_slice(src)`, piecewise. Panics if the lengths differ, as
/// `copy_from_slice` does.
pub fn copy(dst: &mut [u8], src: &[u8]) {
    assert_eq!(
        dst.len(),
        src.len(),
        "copy between slices of unequal length"
    );
    for (d, s) in dst.chunks_mut(PIECE).zip(src.chunks(PIECE)) {
        d.copy_from_slice(s);
    }
}

/// `buf.copy_within(from.., 0)` for `from > 0` (moving bytes to the
/// front), piecewise: front to back, so no piece overwrites bytes a later
/// one still has to read.
pub fn to_front(buf: &mut [u8], from: usize) {
    let len = buf.len().saturating_sub(from);
    let mut done = 0;
    while done < len {
        let n = PIECE.min(len - done);
        buf.copy_within(from + done..from + done + n, done);
        done += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn piecewise_copies_equal_plain_ones(
            src in prop::collection::vec(any::<u8>(), 0..9000),
            head in prop::collection::vec(any::<u8>(), 0..100),
            from in 1usize..9000,
        ) {
            let mut a = head.clone();
            extend(&mut a, &src);
            prop_assert_eq!(&a[..head.len()], &head[..]);
            prop_assert_eq!(&a[head.len()..], &src[..]);
            let mut b = vec![0u8; src.len()];
            copy(&mut b, &src);
            prop_assert_eq!(&b, &src);
            let mut moved = src.clone();
            let mut expect = src.clone();
            let from = from.min(src.len());
            to_front(&mut moved, from);
            expect.copy_within(from.., 0);
            prop_assert_eq!(moved, expect);
        }
    }
}
