//! `migrate new NAME`: the next numbered pair of files.

use super::discover::scan;
use super::{FileProblem, Version};
use std::path::{Path, PathBuf};

/// Writes `NNN_name.sql` and `NNN_name.down.sql` into `dir` (created if
/// missing): NNN is one more than the highest version, as wide as it (three
/// digits in an empty folder). Returns the two paths.
pub fn new_migration(dir: &Path, name: &str) -> Result<(PathBuf, PathBuf), Vec<FileProblem>> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(vec![FileProblem {
            path: dir.to_path_buf(),
            reason: format!("`{name}` is not a migration name: use letters, digits, `_` and `-`"),
        }]);
    }
    let highest = if dir.exists() {
        scan(dir)?.versions().max().cloned()
    } else {
        None
    };
    let version = next_version(highest.as_ref());
    let up = dir.join(format!("{version}_{name}.sql"));
    let down = dir.join(format!("{version}_{name}.down.sql"));
    let write = |path: &Path, text: String| {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .and_then(|mut file| std::io::Write::write_all(&mut file, text.as_bytes()))
            .map_err(|err| {
                vec![FileProblem {
                    path: path.to_path_buf(),
                    reason: format!("cannot create the file: {err}"),
                }]
            })
    };
    std::fs::create_dir_all(dir).map_err(|err| {
        vec![FileProblem {
            path: dir.to_path_buf(),
            reason: format!("cannot create the migration folder: {err}"),
        }]
    })?;
    write(
        &up,
        format!(
            "-- {version}_{name}: runs in one transaction with its record.\n\
             -- A first line `-- migrate:no-transaction` runs it statement by statement instead\n\
             -- (for CREATE INDEX CONCURRENTLY); then write it to be safe to run again.\n\n"
        ),
    )?;
    write(&down, format!("-- Undoes {version}_{name}.\n\n"))?;
    Ok((up, down))
}

/// One more than `highest`, as wide as it; `001` after nothing.
fn next_version(highest: Option<&Version>) -> String {
    let Some(highest) = highest else {
        return "001".into();
    };
    let text = highest.as_str();
    // Decimal increment of arbitrarily long digit strings.
    let mut digits: Vec<u8> = text.bytes().map(|b| b - b'0').collect();
    let mut i = digits.len();
    loop {
        if i == 0 {
            digits.insert(0, 1);
            break;
        }
        i -= 1;
        if digits[i] == 9 {
            digits[i] = 0;
        } else {
            digits[i] += 1;
            break;
        }
    }
    digits.iter().map(|d| char::from(b'0' + d)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn next_versions_keep_the_width() {
        assert_eq!(next_version(None), "001");
        assert_eq!(next_version(Some(&v("004"))), "005");
        assert_eq!(next_version(Some(&v("009"))), "010");
        assert_eq!(next_version(Some(&v("999"))), "1000");
        assert_eq!(next_version(Some(&v("7"))), "8");
        assert_eq!(next_version(Some(&v("20261121093000"))), "20261121093001");
    }

    #[test]
    fn writes_the_pair_and_refuses_bad_names() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("007_a.sql"), "").unwrap();
        std::fs::write(dir.path().join("012_b.up.sql"), "").unwrap();
        let (up, down) = new_migration(dir.path(), "add_index").unwrap();
        assert!(up.ends_with("013_add_index.sql"), "{up:?}");
        assert!(down.ends_with("013_add_index.down.sql"), "{down:?}");
        assert!(
            std::fs::read_to_string(&up)
                .unwrap()
                .starts_with("-- 013_add_index")
        );
        let err = new_migration(dir.path(), "bad name").unwrap_err();
        assert!(err[0].reason.contains("not a migration name"));
        let fresh = dir.path().join("fresh");
        let (up, _) = new_migration(&fresh, "first").unwrap();
        assert!(up.ends_with("fresh/001_first.sql"));
    }
}
