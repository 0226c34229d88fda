//! Migration files as the engine sees them: versions, names, checksums.

mod checksum;
mod discover;
pub mod sql;

pub use checksum::{Checksum, checksum};
pub use discover::{FileProblem, ScannedFolder, discover, scan};

use std::cmp::Ordering;
use std::fmt;
use std::path::PathBuf;

/// A migration version: the digits of the file name, kept as written.
///
/// Versions compare numerically (`007` < `010` < `0100`), so `007` and `7`
/// are the same version; the text is what every message and table shows.
#[derive(Clone, Debug)]
pub struct Version(String);

impl Version {
    /// Parses a version: one or more ASCII digits, nothing else.
    pub fn parse(text: &str) -> Option<Version> {
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            Some(Version(text.to_owned()))
        } else {
            None
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The digits without leading zeros (`"0"` for all zeros): the numeric
    /// identity that ordering and matching use.
    fn significant(&self) -> &str {
        let trimmed = self.0.trim_start_matches('0');
        if trimmed.is_empty() { "0" } else { trimmed }
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.significant() == other.significant()
    }
}

impl Eq for Version {}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        let (a, b) = (self.significant(), other.significant());
        a.len().cmp(&b.len()).then_with(|| a.cmp(b))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl std::hash::Hash for Version {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.significant().hash(state)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One up migration (and its down file, when there is one), read and checked.
#[derive(Clone, Debug)]
pub struct Migration {
    pub version: Version,
    pub name: String,
    /// The up file.
    pub path: PathBuf,
    /// The up file's SQL, as sent to the server (a leading UTF-8 BOM removed).
    pub sql: String,
    pub checksum: Checksum,
    pub down_path: Option<PathBuf>,
}

impl Migration {
    /// `007_add_index`: how a migration is named in every message.
    pub fn label(&self) -> String {
        format!("{}_{}", self.version, self.name)
    }

    /// The file name of the up file, for messages.
    pub fn file_name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// Every migration of a folder, ordered by version.
#[derive(Clone, Debug, Default)]
pub struct MigrationSet {
    pub dir: PathBuf,
    pub migrations: Vec<Migration>,
}

impl MigrationSet {
    pub fn find(&self, version: &Version) -> Option<&Migration> {
        self.migrations
            .binary_search_by(|m| m.version.cmp(version))
            .ok()
            .map(|i| &self.migrations[i])
    }

    pub fn len(&self) -> usize {
        self.migrations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.migrations.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn versions_order_numerically_not_by_text() {
        let mut versions = [v("0100"), v("010"), v("007"), v("000"), v("9")];
        versions.sort();
        let texts: Vec<&str> = versions.iter().map(Version::as_str).collect();
        assert_eq!(texts, ["000", "007", "9", "010", "0100"]);
    }

    #[test]
    fn leading_zeros_do_not_make_a_new_version() {
        assert_eq!(v("007"), v("7"));
        assert_eq!(v("000"), v("0"));
        assert_ne!(v("070"), v("7"));
        assert_eq!(v("007").to_string(), "007");
    }

    #[test]
    fn versions_longer_than_any_integer_still_order() {
        assert!(v("123456789012345678901234567890") < v("123456789012345678901234567891"));
        assert!(v("99999999999999999999") < v("100000000000000000000"));
    }

    #[test]
    fn only_digits_make_a_version() {
        for bad in ["", "1a", "-1", " 1", "１"] {
            assert!(Version::parse(bad).is_none(), "{bad:?} parsed");
        }
    }
}
