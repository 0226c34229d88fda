//! Migration files as the engine sees them: versions, names, checksums.

mod checksum;
mod discover;
mod new;
pub mod sql;

pub use checksum::{Checksum, checksum};
pub use discover::{FileProblem, ScannedFolder, discover, from_files, scan};
pub use new::new_migration;

use std::cmp::Ordering;
use std::fmt;
use std::path::{Path, PathBuf};

/// A migration version: the digits of the file name, kept as written.
///
/// Versions compare numerically (`007` < `010` < `0100`), so `007` and `7`
/// are the same version; the text is what every message and table shows.
#[derive(Clone, Debug)]
pub struct Version {
    text: String,
    /// Where the significant digits start (`"0"` for all zeros): found
    /// once, since ordering and matching compare versions many times over.
    from: usize,
}

/// As written in the file name (`"007"`): a string, leading zeros kept.
impl serde::Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl Version {
    /// Parses a version: one or more ASCII digits, nothing else.
    pub fn parse(text: &str) -> Option<Version> {
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            let from = text
                .bytes()
                .position(|b| b != b'0')
                .unwrap_or(text.len() - 1);
            Some(Version {
                text: text.to_owned(),
                from,
            })
        } else {
            None
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// A number that orders as the versions do, for versions of up to 38
    /// significant digits (longer ones share the largest key, and are
    /// ordered by [`Ord`] among themselves): a cheap first comparison.
    pub(crate) fn sort_key(&self) -> u128 {
        self.significant().parse().unwrap_or(u128::MAX)
    }

    /// The digits without leading zeros (`"0"` for all zeros): the numeric
    /// identity that ordering and matching use.
    fn significant(&self) -> &str {
        &self.text[self.from..]
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
        f.write_str(&self.text)
    }
}

/// One SQL file, read and checked: an up file, or a down file when it is
/// needed.
#[derive(Clone, Debug)]
pub struct Script {
    pub path: PathBuf,
    /// As sent to the server (a leading UTF-8 BOM removed).
    pub sql: String,
    pub checksum: Checksum,
    /// False when the first line is `-- migrate:no-transaction`: the file
    /// then runs statement by statement, outside a transaction.
    pub transactional: bool,
}

/// The files at the top level of an embedded folder, as (name, contents).
#[cfg(feature = "embed")]
pub(crate) fn embedded_files<'a>(
    dir: &'a include_dir::Dir<'_>,
) -> impl Iterator<Item = (&'a str, &'a [u8])> {
    dir.files().filter_map(|file| {
        file.path()
            .file_name()
            .and_then(|n| n.to_str())
            .map(|name| (name, file.contents()))
    })
}

/// The annotation that runs a file outside a transaction.
pub const NO_TRANSACTION: &str = "-- migrate:no-transaction";

impl Script {
    /// Reads a file: UTF-8, checksum, annotation. The error names the line.
    pub fn read(path: &Path) -> Result<Script, String> {
        let bytes = std::fs::read(path).map_err(|err| format!("cannot read the file: {err}"))?;
        Script::from_bytes(path, &bytes)
    }

    pub(crate) fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Script, String> {
        let checksum = checksum(bytes);
        let text = std::str::from_utf8(bytes).map_err(|err| {
            let at = err.valid_up_to();
            let line = line_at(bytes, at);
            format!("not valid UTF-8 (line {line}, byte {at}); migrations must be UTF-8 text")
        })?;
        // NUL is valid UTF-8, but the wire protocol ends a string at it:
        // the connection would refuse the whole file without saying where.
        if let Some(at) = bytes.iter().position(|&b| b == 0) {
            let line = line_at(bytes, at);
            let utf16 = if bytes.len() > 1 && (bytes[0] == 0 || bytes[1] == 0) {
                "; the file looks like UTF-16, and migrations must be UTF-8 text"
            } else {
                ""
            };
            return Err(format!(
                "contains a NUL byte (line {line}, byte {at}); PostgreSQL does not accept NUL \
                 in SQL text{utf16}"
            ));
        }
        // PostgreSQL does not skip a byte-order mark; the checksum keeps it.
        let sql = text.strip_prefix('\u{feff}').unwrap_or(text).to_owned();
        let first_line = sql.lines().next().unwrap_or("").trim_end();
        let transactional = match first_line.strip_prefix("-- migrate:") {
            None => true,
            Some("no-transaction") => false,
            Some(other) => {
                return Err(format!(
                    "line 1: unknown annotation `-- migrate:{other}`; the one annotation is \
                     `{NO_TRANSACTION}`"
                ));
            }
        };
        Ok(Script {
            path: path.to_path_buf(),
            sql,
            checksum,
            transactional,
        })
    }

    /// The file name, for messages.
    pub fn file_name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// The line (from 1) that byte `at` of a file is on.
fn line_at(bytes: &[u8], at: usize) -> usize {
    bytes[..at].iter().filter(|&&b| b == b'\n').count() + 1
}

/// One up migration (and its down file, when there is one), read and checked.
#[derive(Clone, Debug)]
pub struct Migration {
    pub version: Version,
    pub name: String,
    /// The up file.
    pub up: Script,
    /// The down file, read only when `down` needs it.
    pub down_path: Option<PathBuf>,
    /// The down file already read (migrations compiled into a binary).
    /// Boxed: most migrations of a folder carry none.
    pub down: Option<Box<Script>>,
}

impl Migration {
    /// `007_add_index`: how a migration is named in every message.
    pub fn label(&self) -> String {
        format!("{}_{}", self.version, self.name)
    }
}

/// Every migration of a folder, ordered by version.
#[derive(Clone, Debug, Default)]
pub struct MigrationSet {
    pub dir: PathBuf,
    pub migrations: Vec<Migration>,
}

impl MigrationSet {
    /// Migrations compiled into the binary with
    /// `include_dir!("$CARGO_MANIFEST_DIR/migrations")`: the top level of
    /// the folder, checked as a folder would be.
    #[cfg(feature = "embed")]
    pub fn from_embedded(dir: &include_dir::Dir<'_>) -> Result<MigrationSet, Vec<FileProblem>> {
        from_files(dir.path(), embedded_files(dir))
    }

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
