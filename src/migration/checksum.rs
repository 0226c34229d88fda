//! The checksum of a migration file: SHA-256 over its bytes with CRLF
//! normalised to LF, so a Windows checkout does not look like an edit.
//!
//! The algorithm is part of the stored state (every applied row carries one),
//! so it is pinned by the tests below: changing it would mark every applied
//! migration of every user as CHANGED.

use sha2::{Digest, Sha256};
use std::fmt;

/// A lower-case hex SHA-256 digest, 64 characters, kept inline: one
/// allocation fewer for each of ten thousand files.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Checksum([u8; 64]);

impl Checksum {
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("hex digits are ASCII")
    }

    /// The first 12 hex digits, enough to tell two versions of a file apart
    /// in a message.
    pub fn short(&self) -> &str {
        &self.as_str()[..12]
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Checksum").field(&self.as_str()).finish()
    }
}

/// Hashes file contents: every `\r\n` counts as `\n`; nothing else changes
/// (a lone `\r`, a byte-order mark and trailing whitespace all count).
pub fn checksum(bytes: &[u8]) -> Checksum {
    let mut hasher = Sha256::new();
    let mut start = 0;
    let mut from = 0;
    while let Some(offset) = bytes[from..].iter().position(|&b| b == b'\r') {
        let cr = from + offset;
        if bytes.get(cr + 1) == Some(&b'\n') {
            hasher.update(&bytes[start..cr]);
            start = cr + 1;
        }
        from = cr + 1;
    }
    hasher.update(&bytes[start..]);
    let digest = hasher.finalize();
    let mut hex = [0u8; 64];
    for (i, byte) in digest.iter().enumerate() {
        hex[2 * i] = b"0123456789abcdef"[usize::from(byte >> 4)];
        hex[2 * i + 1] = b"0123456789abcdef"[usize::from(byte & 0xf)];
    }
    Checksum(hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CREATE: &str = "CREATE TABLE t (id int);\n";

    #[test]
    fn pinned_known_digests() {
        // Pinned with coreutils: `printf '' | sha256sum` and
        // `printf 'CREATE TABLE t (id int);\n' | sha256sum`.
        assert_eq!(
            checksum(b"").as_str(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            checksum(CREATE.as_bytes()).as_str(),
            "12c83f983b0c94b9c7010dcc92149589d5fb01a3d32af8f6d699545d95db9040"
        );
    }

    #[test]
    fn crlf_counts_as_lf() {
        let lf = "SELECT 1;\nSELECT 2;\n";
        let crlf = "SELECT 1;\r\nSELECT 2;\r\n";
        assert_eq!(checksum(lf.as_bytes()), checksum(crlf.as_bytes()));
        // Mixed endings too.
        assert_eq!(
            checksum(lf.as_bytes()),
            checksum(b"SELECT 1;\r\nSELECT 2;\n")
        );
    }

    #[test]
    fn lone_cr_and_edits_are_changes() {
        let lf = checksum(b"SELECT 1;\nSELECT 2;\n");
        assert_ne!(lf, checksum(b"SELECT 1;\rSELECT 2;\r"));
        assert_ne!(lf, checksum(b"SELECT 1;\nSELECT 2; \n"));
        assert_ne!(lf, checksum(b"SELECT 1;\nSELECT 3;\n"));
        // A CR at the very end (no LF after it) is kept.
        assert_ne!(checksum(b"SELECT 1;\n"), checksum(b"SELECT 1;\n\r"));
    }

    #[test]
    fn byte_order_mark_is_part_of_the_file() {
        let bom = [b"\xEF\xBB\xBF".as_slice(), CREATE.as_bytes()].concat();
        assert_ne!(checksum(&bom), checksum(CREATE.as_bytes()));
        assert_eq!(
            checksum(&bom).as_str(),
            "6b589efcb172a7e2e9e6639f972d28b72ffcbf307ae61713c6f8ad3be66704ff"
        );
    }
}
