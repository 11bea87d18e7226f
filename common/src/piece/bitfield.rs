//! Which pieces a peer has, as one bit per piece.
//!
//! Wire form as in BitTorrent: `ceil(n / 8)` bytes, piece 0 in the most
//! significant bit of byte 0; the spare low bits of the last byte must be
//! zero, so every set of pieces has exactly one encoding.

use crate::wire::DecodeError;

/// A fixed-length set of piece indices.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Bitfield {
    bytes: Vec<u8>,
    len: u32,
    count: u32,
}

impl std::fmt::Debug for Bitfield {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bitfield({}/{})", self.count, self.len)
    }
}

impl Bitfield {
    /// An empty set over `len` pieces.
    pub fn new(len: u32) -> Self {
        Self {
            bytes: vec![0; Self::byte_len(len)],
            len,
            count: 0,
        }
    }

    /// A full set over `len` pieces (a seed's bitfield).
    pub fn full(len: u32) -> Self {
        let mut b = Self::new(len);
        for i in 0..len {
            b.set(i);
        }
        b
    }

    /// Bytes of the wire form for `len` pieces.
    pub fn byte_len(len: u32) -> usize {
        len.div_ceil(8) as usize
    }

    /// Number of pieces the set ranges over.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Whether the set ranges over zero pieces.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of pieces present.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Whether every piece is present.
    pub fn is_complete(&self) -> bool {
        self.count == self.len
    }

    /// Whether piece `i` is present (false out of range).
    pub fn get(&self, i: u32) -> bool {
        i < self.len && self.bytes[(i / 8) as usize] & (0x80 >> (i % 8)) != 0
    }

    /// Add piece `i`. Returns whether it was newly added (false if already
    /// present or out of range).
    pub fn set(&mut self, i: u32) -> bool {
        if i >= self.len || self.get(i) {
            return false;
        }
        self.bytes[(i / 8) as usize] |= 0x80 >> (i % 8);
        self.count += 1;
        true
    }

    /// Remove piece `i` (a piece that failed re-verification). Returns
    /// whether it was present.
    pub fn clear(&mut self, i: u32) -> bool {
        if !self.get(i) {
            return false;
        }
        self.bytes[(i / 8) as usize] &= !(0x80 >> (i % 8));
        self.count -= 1;
        true
    }

    /// Indices present, ascending.
    pub fn iter_set(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.len).filter(|&i| self.get(i))
    }

    /// Indices missing, ascending.
    pub fn iter_missing(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.len).filter(|&i| !self.get(i))
    }

    /// The wire form.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Parse the wire form of a set over `len` pieces: exactly
    /// `ceil(len / 8)` bytes, spare bits zero.
    pub fn from_bytes(bytes: &[u8], len: u32) -> Result<Self, DecodeError> {
        let want = Self::byte_len(len);
        if bytes.len() != want {
            return Err(DecodeError::Malformed("bitfield length"));
        }
        let spare = (want * 8) as u64 - u64::from(len);
        if let Some(&last) = bytes.last() {
            // The low `spare` bits of the last byte (spare < 8).
            if spare > 0 && last & ((1u8 << spare) - 1) != 0 {
                return Err(DecodeError::Malformed("bitfield spare bits"));
            }
        }
        let count = bytes.iter().map(|b| b.count_ones()).sum();
        Ok(Self {
            bytes: bytes.to_vec(),
            len,
            count,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn msb_first_wire_form() {
        let mut b = Bitfield::new(10);
        assert!(b.set(0));
        assert!(!b.set(0));
        assert!(b.set(9));
        assert!(!b.set(10));
        assert_eq!(b.as_bytes(), &[0x80, 0x40]);
        assert_eq!(b.count(), 2);
        assert_eq!(b.iter_missing().count(), 8);
        assert!(b.clear(0));
        assert!(!b.clear(0));
        assert_eq!(b.iter_set().collect::<Vec<_>>(), vec![9]);
        assert_eq!(Bitfield::full(10).as_bytes(), &[0xff, 0xc0]);
        assert!(Bitfield::full(10).is_complete());
    }

    #[test]
    fn decode_checks_length_and_spare_bits() {
        assert!(Bitfield::from_bytes(&[0xff, 0xc0], 10).is_ok());
        assert_eq!(
            Bitfield::from_bytes(&[0xff, 0xe0], 10),
            Err(DecodeError::Malformed("bitfield spare bits"))
        );
        assert_eq!(
            Bitfield::from_bytes(&[0xff], 10),
            Err(DecodeError::Malformed("bitfield length"))
        );
        assert_eq!(
            Bitfield::from_bytes(&[0xff, 0, 0], 10),
            Err(DecodeError::Malformed("bitfield length"))
        );
        assert!(Bitfield::from_bytes(&[], 0).expect("empty").is_complete());
        assert!(Bitfield::from_bytes(&[0xff], 8)
            .expect("full")
            .is_complete());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn round_trips(len in 0u32..200, picks in proptest::collection::vec(any::<u32>(), 0..64)) {
            let mut b = Bitfield::new(len);
            let mut want = std::collections::BTreeSet::new();
            for p in picks {
                if len > 0 {
                    b.set(p % len);
                    want.insert(p % len);
                }
            }
            prop_assert_eq!(b.count() as usize, want.len());
            prop_assert_eq!(b.iter_set().collect::<Vec<_>>(), want.iter().copied().collect::<Vec<_>>());
            prop_assert_eq!(b.iter_set().count() + b.iter_missing().count(), len as usize);
            let back = Bitfield::from_bytes(b.as_bytes(), len).expect("decode");
            prop_assert_eq!(back, b);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..40), len in 0u32..400) {
            if let Ok(b) = Bitfield::from_bytes(&bytes, len) {
                prop_assert_eq!(b.as_bytes(), &bytes[..]);
                prop_assert!(b.count() <= len);
            }
        }
    }
}
