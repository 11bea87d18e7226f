//! Test-vector reader: the vectors in `PROTOCOL.md` are the ones the tests
//! check, so the document cannot drift from the code.
//!
//! A vector is a fenced block opened by a line "```vector NAME" and closed
//! by "```". Each line inside is `key = value` (value in hex unless the test
//! says otherwise); an indented line continues the previous value, so long
//! byte strings can wrap.

use std::collections::BTreeMap;

/// The `PROTOCOL.md` text, compiled in.
pub const PROTOCOL_MD: &str = include_str!("../../PROTOCOL.md");

/// A named vector: key → value (whitespace removed).
#[derive(Debug)]
pub struct Vector(BTreeMap<String, String>);

impl Vector {
    /// The vector called `name` in PROTOCOL.md. Panics (test-only code) if absent.
    pub fn load(name: &str) -> Vector {
        let opener = format!("```vector {name}");
        let mut lines = PROTOCOL_MD.lines().skip_while(|l| l.trim() != opener);
        assert!(
            lines.next().is_some(),
            "vector {name} missing from PROTOCOL.md"
        );
        let mut map = BTreeMap::new();
        let mut last: Option<String> = None;
        for line in lines.take_while(|l| l.trim() != "```") {
            if line.starts_with(char::is_whitespace) && !line.trim().is_empty() {
                let key = last.clone().expect("continuation line before any key");
                map.entry(key)
                    .and_modify(|v: &mut String| v.push_str(line.trim()));
            } else if let Some((k, v)) = line.split_once('=') {
                let k = k.trim().to_string();
                map.insert(k.clone(), v.trim().to_string());
                last = Some(k);
            }
        }
        Vector(map)
    }

    /// The raw string value of `key`.
    pub fn str(&self, key: &str) -> &str {
        self.0
            .get(key)
            .unwrap_or_else(|| panic!("vector key {key} missing"))
    }

    /// The hex value of `key`, decoded.
    pub fn bytes(&self, key: &str) -> Vec<u8> {
        hex::decode(self.str(key)).unwrap_or_else(|e| panic!("vector key {key}: bad hex: {e}"))
    }

    /// The hex value of `key` as a fixed-size array.
    pub fn array<const N: usize>(&self, key: &str) -> [u8; N] {
        self.bytes(key)
            .try_into()
            .unwrap_or_else(|v: Vec<u8>| panic!("vector key {key}: {} bytes, want {N}", v.len()))
    }

    /// A decimal value.
    pub fn u64(&self, key: &str) -> u64 {
        self.str(key)
            .parse()
            .unwrap_or_else(|e| panic!("vector key {key}: {e}"))
    }
}
