//! Finding migration files in a folder and checking their names, before any
//! connection is made. Every problem is collected, so one run shows them all.

use super::{Migration, MigrationSet, Script, Version};
use std::fmt;
use std::path::{Path, PathBuf};

/// A file that cannot be used as it is, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProblem {
    pub path: PathBuf,
    pub reason: String,
}

impl fmt::Display for FileProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

enum Direction {
    Up,
    Down,
}

struct NamedFile {
    path: PathBuf,
    name: String,
}

#[derive(Default)]
struct VersionFiles {
    ups: Vec<NamedFile>,
    downs: Vec<NamedFile>,
}

/// A migration folder whose file names have been checked; the contents are
/// read by [`ScannedFolder::load`].
#[derive(Clone, Debug)]
pub struct ScannedFolder {
    pub dir: PathBuf,
    entries: Vec<ScannedMigration>,
}

#[derive(Clone, Debug)]
struct ScannedMigration {
    version: Version,
    name: String,
    path: PathBuf,
    down_path: Option<PathBuf>,
}

/// Reads and checks a migration folder: names, then contents. Every problem
/// is returned, not just the first.
pub fn discover(dir: &Path) -> Result<MigrationSet, Vec<FileProblem>> {
    scan(dir)?.load()
}

/// Lists the migration folder and checks the names: every `NNN_name.sql` /
/// `NNN_name.up.sql` with its optional `NNN_name.down.sql`. Files not
/// ending in `.sql` and hidden files are ignored; sub-folders (such as
/// `bootstrap/`) are not entered. A symbolic link counts as what it leads
/// to; one named like a migration that leads to no regular file is a
/// problem. Reads no file contents.
pub fn scan(dir: &Path) -> Result<ScannedFolder, Vec<FileProblem>> {
    let entries = std::fs::read_dir(dir).map_err(|err| {
        vec![FileProblem {
            path: dir.to_path_buf(),
            reason: format!("cannot read the migration folder: {err}"),
        }]
    })?;
    let mut problems = Vec::new();
    let mut names = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(err) => {
                problems.push(FileProblem {
                    path: dir.to_path_buf(),
                    reason: format!("cannot list the migration folder: {err}"),
                });
                continue;
            }
        };
        let path = entry.path();
        // The directory entry's type costs no system call; only a symlink
        // is looked through, so a linked migration file counts as a file.
        let unusable_link = match entry.file_type() {
            Ok(t) if t.is_symlink() => unusable_link_target(&path),
            Ok(t) if t.is_file() => None,
            Ok(_) => continue,
            Err(_) if path.is_file() => None,
            Err(_) => continue,
        };
        match entry.file_name().into_string() {
            Ok(name) => match unusable_link {
                // A link named like a migration that leads nowhere usable
                // would otherwise vanish from the folder without a word.
                Some(reason) => {
                    if !matches!(parse_file_name(&name), Ok(None)) {
                        problems.push(FileProblem { path, reason });
                    }
                }
                None => names.push((name, path)),
            },
            Err(name) => {
                if name.as_encoded_bytes().ends_with(b".sql") {
                    problems.push(FileProblem {
                        path,
                        reason: unusable_link
                            .unwrap_or_else(|| "the file name is not valid UTF-8".into()),
                    });
                }
            }
        }
    }
    check_names(dir, names, problems)
}

/// Why the symbolic link `path` cannot be read as a migration file, or
/// `None` when it leads to a regular file.
fn unusable_link_target(path: &Path) -> Option<String> {
    let why = match std::fs::metadata(path) {
        Ok(target) if target.is_file() => return None,
        Ok(target) if target.is_dir() => "which is a folder, not a file".to_owned(),
        Ok(_) => "which is not a regular file".to_owned(),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => "which does not exist".to_owned(),
        Err(err) => format!("which cannot be followed: {err}"),
    };
    let target = std::fs::read_link(path)
        .map(|t| t.display().to_string())
        .unwrap_or_else(|_| "?".into());
    Some(format!("a symbolic link to `{target}`, {why}"))
}

/// Applies the naming rules to a folder's files (name, path): every
/// problem together.
fn check_names(
    dir: &Path,
    names: Vec<(String, PathBuf)>,
    mut problems: Vec<FileProblem>,
) -> Result<ScannedFolder, Vec<FileProblem>> {
    // Sorted, then grouped by version: one allocation for the lot, where a
    // map of versions would make two lists per version.
    let mut parsed = Vec::with_capacity(names.len());
    for (file_name, path) in names {
        match parse_file_name(&file_name) {
            Ok(None) => {}
            Ok(Some((version, name, direction))) => parsed.push((
                version.sort_key(),
                version,
                direction,
                NamedFile { path, name },
            )),
            Err(reason) => problems.push(FileProblem { path, reason }),
        }
    }
    parsed.sort_unstable_by(|a, b| {
        (a.0.cmp(&b.0))
            .then_with(|| a.1.cmp(&b.1))
            .then_with(|| a.3.path.cmp(&b.3.path))
    });
    let mut by_version: Vec<(Version, VersionFiles)> = Vec::with_capacity(parsed.len());
    for (_, version, direction, named) in parsed {
        let files = match by_version.last_mut() {
            Some((last, files)) if *last == version => files,
            _ => {
                by_version.push((version, VersionFiles::default()));
                &mut by_version.last_mut().expect("pushed above").1
            }
        };
        match direction {
            Direction::Up => files.ups.push(named),
            Direction::Down => files.downs.push(named),
        }
    }

    let mut usable = Vec::with_capacity(by_version.len());
    for (version, files) in by_version {
        if files.ups.len() > 1 {
            problems.push(duplicate(&version, &files.ups));
        }
        if files.downs.len() > 1 {
            problems.push(duplicate(&version, &files.downs));
        }
        let Some(up) = files.ups.first() else {
            for down in &files.downs {
                problems.push(FileProblem {
                    path: down.path.clone(),
                    reason: format!("a down file with no up file for version {version}"),
                });
            }
            continue;
        };
        if let Some(down) = files.downs.iter().find(|d| d.name != up.name) {
            problems.push(FileProblem {
                path: down.path.clone(),
                reason: format!(
                    "the down file's name does not match its up file {}",
                    display_name(&up.path)
                ),
            });
        }
        if files.ups.len() == 1 && files.downs.len() <= 1 {
            usable.push((version, files));
        }
    }

    if !problems.is_empty() {
        problems.sort_by(|a, b| a.path.cmp(&b.path).then(a.reason.cmp(&b.reason)));
        problems.dedup();
        return Err(problems);
    }
    let entries = usable
        .into_iter()
        .map(|(version, mut files)| {
            let up = files.ups.remove(0);
            ScannedMigration {
                version,
                name: up.name,
                path: up.path,
                down_path: files.downs.pop().map(|d| d.path),
            }
        })
        .collect();
    Ok(ScannedFolder {
        dir: dir.to_path_buf(),
        entries,
    })
}

/// Migrations from memory (compiled into a binary, say): the same naming
/// rules and checks as a folder, for files given as (file name, contents).
/// `label` stands for the folder in messages.
pub fn from_files<'a>(
    label: &Path,
    files: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> Result<MigrationSet, Vec<FileProblem>> {
    let files: Vec<(&str, &[u8])> = files.into_iter().collect();
    let names = files
        .iter()
        .map(|(name, _)| (name.to_string(), label.join(name)))
        .collect();
    let scanned = check_names(label, names, Vec::new())?;
    let contents = |path: &Path| {
        files
            .iter()
            .find(|(name, _)| label.join(name) == path)
            .map(|(_, bytes)| *bytes)
            .unwrap_or_default()
    };
    let mut migrations = Vec::with_capacity(scanned.entries.len());
    let mut problems = Vec::new();
    for entry in &scanned.entries {
        let up = Script::from_bytes(&entry.path, contents(&entry.path));
        let down = entry
            .down_path
            .as_ref()
            .map(|p| {
                Script::from_bytes(p, contents(p))
                    .map(Box::new)
                    .map_err(|reason| (p.clone(), reason))
            })
            .transpose();
        match (up, down) {
            (Ok(up), Ok(down)) => migrations.push(Migration {
                version: entry.version.clone(),
                name: entry.name.clone(),
                up,
                down_path: entry.down_path.clone(),
                down,
            }),
            (Err(reason), _) => problems.push(FileProblem {
                path: entry.path.clone(),
                reason,
            }),
            (_, Err((path, reason))) => problems.push(FileProblem { path, reason }),
        }
    }
    if problems.is_empty() {
        Ok(MigrationSet {
            dir: label.to_path_buf(),
            migrations,
        })
    } else {
        Err(problems)
    }
}

impl ScannedFolder {
    /// How many migrations the folder holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The versions the folder holds.
    pub fn versions(&self) -> impl Iterator<Item = &Version> {
        self.entries.iter().map(|e| &e.version)
    }

    /// Reads and hashes every up file; reports every unreadable or
    /// non-UTF-8 file.
    pub fn load(&self) -> Result<MigrationSet, Vec<FileProblem>> {
        let read = read_up_files(&self.entries);
        if read.iter().all(Result::is_ok) {
            Ok(MigrationSet {
                dir: self.dir.clone(),
                // Collected in place: the migrations take the list's room.
                migrations: read.into_iter().filter_map(Result::ok).collect(),
            })
        } else {
            Err(read.into_iter().filter_map(Result::err).collect())
        }
    }
}

fn duplicate(version: &Version, files: &[NamedFile]) -> FileProblem {
    let names: Vec<String> = files.iter().map(|f| display_name(&f.path)).collect();
    FileProblem {
        path: files[0].path.clone(),
        reason: format!(
            "version {version} is used by more than one file: {}",
            names.join(", ")
        ),
    }
}

fn display_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `Ok(None)` for a file that is not a migration at all (ignored), the parts
/// for a migration file, and the reason for a file that looks like one but
/// is misnamed.
fn parse_file_name(file_name: &str) -> Result<Option<(Version, String, Direction)>, String> {
    if file_name.starts_with('.') {
        return Ok(None);
    }
    let Some(stem) = file_name.strip_suffix(".sql") else {
        let lower = file_name.to_ascii_lowercase();
        if lower.ends_with(".sql") {
            return Err("the extension must be lower-case `.sql`".into());
        }
        return Ok(None);
    };
    let (stem, direction) = if let Some(stem) = stem.strip_suffix(".down") {
        (stem, Direction::Down)
    } else if let Some(stem) = stem.strip_suffix(".up") {
        (stem, Direction::Up)
    } else {
        (stem, Direction::Up)
    };
    const EXPECTED: &str = "expected NNN_name.sql, NNN_name.up.sql or NNN_name.down.sql \
         (NNN digits, name of letters, digits, `_` and `-`)";
    let Some((version, name)) = stem.split_once('_') else {
        return Err(format!("no `_` between version and name; {EXPECTED}"));
    };
    let Some(version) = Version::parse(version) else {
        return Err(format!(
            "the version `{version}` is not all digits; {EXPECTED}"
        ));
    };
    if name.is_empty() {
        return Err(format!("the name after the version is empty; {EXPECTED}"));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(format!("the name `{name}` contains {bad:?}; {EXPECTED}"));
    }
    Ok(Some((version, name.to_owned(), direction)))
}

type FileContent = Result<Script, String>;

/// Reads and checks the up files, in order. A large folder is read by two
/// threads, each with its own buffer: the kernel's work per file (open,
/// read, close) dominates, and while the engine connects the server has
/// little to do.
fn read_up_files(entries: &[ScannedMigration]) -> Vec<Result<Migration, FileProblem>> {
    const SPLIT_FROM: usize = 512;
    let read_all = |entries: &[ScannedMigration],
                    into: &mut Vec<Result<Migration, FileProblem>>| {
        let mut buffer = Vec::new();
        into.extend(
            entries
                .iter()
                .map(|entry| match read_up_file(&entry.path, &mut buffer) {
                    Ok(up) => Ok(Migration {
                        version: entry.version.clone(),
                        name: entry.name.clone(),
                        up,
                        down_path: entry.down_path.clone(),
                        down: None,
                    }),
                    Err(reason) => Err(FileProblem {
                        path: entry.path.clone(),
                        reason,
                    }),
                }),
        );
    };
    // Room for all from the start: the second half is moved in after the
    // first without the list growing, so it is never held twice.
    let mut read = Vec::with_capacity(entries.len());
    if entries.len() < SPLIT_FROM {
        read_all(entries, &mut read);
        return read;
    }
    let (first, second) = entries.split_at(entries.len() / 2);
    std::thread::scope(|scope| {
        let later = std::thread::Builder::new()
            .name("read-files".into())
            .spawn_scoped(scope, || {
                let mut rest = Vec::with_capacity(second.len());
                read_all(second, &mut rest);
                rest
            });
        read_all(first, &mut read);
        match later {
            Ok(thread) => match thread.join() {
                Ok(rest) => read.extend(rest),
                Err(panic) => std::panic::resume_unwind(panic),
            },
            // No thread to be had: this one reads the rest.
            Err(_) => read_all(second, &mut read),
        }
    });
    read
}

/// Reads one file into `buffer` (reused across files: open, read, close,
/// no size lookup) and checks it.
fn read_up_file(path: &Path, buffer: &mut Vec<u8>) -> FileContent {
    use std::io::Read;
    // Not read_to_end: it asks for the file's size first, one more system
    // call per file. `buffer` keeps its (initialised) capacity across files.
    let mut len = 0;
    let mut file =
        std::fs::File::open(path).map_err(|err| format!("cannot read the file: {err}"))?;
    loop {
        if len == buffer.len() {
            buffer.resize((buffer.len() * 2).max(16 * 1024), 0);
        }
        match file.read(&mut buffer[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(format!("cannot read the file: {err}")),
        }
    }
    Script::from_bytes(path, &buffer[..len])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migration::checksum;

    fn folder(files: &[(&str, &[u8])]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, contents) in files {
            std::fs::write(dir.path().join(name), contents).unwrap();
        }
        dir
    }

    fn reasons(problems: &[FileProblem]) -> Vec<String> {
        problems
            .iter()
            .map(|p| format!("{}: {}", display_name(&p.path), p.reason))
            .collect()
    }

    #[test]
    fn finds_up_and_down_files_in_numeric_order() {
        let dir = folder(&[
            ("010_b.sql", b"SELECT 10;"),
            ("007_a.up.sql", b"SELECT 7;"),
            ("007_a.down.sql", b"SELECT -7;"),
            ("0100_c.sql", b"SELECT 100;"),
            ("000_init.sql", b"SELECT 0;"),
            ("README.md", b"not a migration"),
            (".gitkeep", b""),
            (".#001_lock.sql", b""),
        ]);
        std::fs::create_dir(dir.path().join("bootstrap")).unwrap();
        std::fs::write(dir.path().join("bootstrap/001_admin.sql"), "x").unwrap();
        let set = discover(dir.path()).unwrap();
        let labels: Vec<String> = set.migrations.iter().map(Migration::label).collect();
        assert_eq!(labels, ["000_init", "007_a", "010_b", "0100_c"]);
        assert!(set.migrations[1].down_path.is_some());
        assert!(set.migrations[0].down_path.is_none());
        assert_eq!(set.migrations[2].up.sql, "SELECT 10;");
    }

    #[test]
    fn versions_past_any_integer_sort_among_the_others() {
        let forty = format!("1{}", "0".repeat(39));
        let thirty_nine = "9".repeat(39);
        let padded = format!("{}1", "0".repeat(45));
        let names = [
            format!("{forty}_b.sql"),
            format!("{thirty_nine}_c.sql"),
            format!("{padded}_a.sql"),
            "2_d.sql".to_owned(),
        ];
        let files: Vec<(&str, &[u8])> = names
            .iter()
            .map(|n| (n.as_str(), &b"SELECT 1;"[..]))
            .collect();
        let dir = folder(&files);
        let set = discover(dir.path()).unwrap();
        let names: Vec<&str> = set.migrations.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["a", "d", "c", "b"]);
    }

    #[test]
    fn every_naming_problem_is_reported_together() {
        let dir = folder(&[
            ("001_ok.sql", b"SELECT 1;"),
            ("002_first.sql", b""),
            ("002_second.sql", b""),
            ("02_third.up.sql", b""),
            ("003_orphan.down.sql", b""),
            ("abc_x.sql", b""),
            ("004.sql", b""),
            ("005_has space.sql", b""),
            ("006_.sql", b""),
            ("007_upper.SQL", b""),
            ("008_a.sql", b""),
            ("008_b.down.sql", b""),
        ]);
        let problems = discover(dir.path()).unwrap_err();
        let text = reasons(&problems).join("\n");
        insta::assert_snapshot!(text);
    }

    #[test]
    fn every_unreadable_file_is_reported_together() {
        let dir = folder(&[
            ("001_ok.sql", b"SELECT 1;"),
            ("002_latin1.sql", b"SELECT 1;\nSELECT 'caf\xe9';"),
            ("003_binary.sql", b"\xff\xfe"),
        ]);
        let scanned = scan(dir.path()).unwrap();
        assert_eq!(scanned.len(), 3);
        let problems = scanned.load().unwrap_err();
        assert_eq!(
            reasons(&problems),
            [
                "002_latin1.sql: not valid UTF-8 (line 2, byte 21); migrations must be UTF-8 text",
                "003_binary.sql: not valid UTF-8 (line 1, byte 0); migrations must be UTF-8 text",
            ]
        );
    }

    #[test]
    fn nul_bytes_are_reported_with_their_line() {
        let dir = folder(&[
            ("001_ok.sql", b"SELECT 1;"),
            ("002_nul.sql", b"SELECT 1;\nSELECT '\0';"),
            ("003_utf16.sql", b"S\0E\0L\0"),
        ]);
        let problems = discover(dir.path()).unwrap_err();
        assert_eq!(
            reasons(&problems),
            [
                "002_nul.sql: contains a NUL byte (line 2, byte 18); PostgreSQL does not accept \
                 NUL in SQL text",
                "003_utf16.sql: contains a NUL byte (line 1, byte 1); PostgreSQL does not accept \
                 NUL in SQL text; the file looks like UTF-16, and migrations must be UTF-8 text",
            ]
        );
    }

    #[cfg(unix)]
    #[test]
    fn links_are_followed_and_unusable_ones_named() {
        use std::os::unix::fs::symlink;
        let dir = folder(&[("001_a.sql", b"SELECT 1;")]);
        let path = dir.path();
        symlink("001_a.sql", path.join("002_b.sql")).unwrap();
        symlink("missing.sql", path.join("003_c.sql")).unwrap();
        symlink(".", path.join("004_d.down.sql")).unwrap();
        symlink("005_loop.sql", path.join("005_loop.sql")).unwrap();
        symlink("missing", path.join("README")).unwrap();
        symlink("missing", path.join(".#006_e.sql")).unwrap();
        let problems = scan(path).unwrap_err();
        let text = reasons(&problems);
        assert_eq!(text.len(), 3, "{text:?}");
        assert_eq!(
            text[0],
            "003_c.sql: a symbolic link to `missing.sql`, which does not exist"
        );
        assert_eq!(
            text[1],
            "004_d.down.sql: a symbolic link to `.`, which is a folder, not a file"
        );
        assert!(
            text[2].starts_with(
                "005_loop.sql: a symbolic link to `005_loop.sql`, which cannot be followed: "
            ),
            "{text:?}"
        );
        for name in ["003_c.sql", "004_d.down.sql", "005_loop.sql"] {
            std::fs::remove_file(path.join(name)).unwrap();
        }
        let set = discover(path).unwrap();
        assert_eq!(set.migrations[1].label(), "002_b");
        assert_eq!(set.migrations[1].up.sql, "SELECT 1;");
    }

    #[test]
    fn many_files_are_read_in_order_with_one_buffer() {
        // 1200: past the count read by two threads, whose halves must join
        // in order, and whose problems are all reported, in order.
        let dir = tempfile::tempdir().unwrap();
        for v in 1..=1200 {
            std::fs::write(
                dir.path().join(format!("{v}_m.sql")),
                format!("SELECT {v};"),
            )
            .unwrap();
        }
        let set = discover(dir.path()).unwrap();
        assert_eq!(set.len(), 1200);
        for (i, m) in set.migrations.iter().enumerate() {
            assert_eq!(m.up.sql, format!("SELECT {};", i + 1));
            assert_eq!(m.up.checksum, checksum(m.up.sql.as_bytes()));
        }
        for v in [3, 1100] {
            std::fs::write(dir.path().join(format!("{v}_m.sql")), b"\xff").unwrap();
        }
        let problems = discover(dir.path()).unwrap_err();
        assert_eq!(
            reasons(&problems),
            [
                "3_m.sql: not valid UTF-8 (line 1, byte 0); migrations must be UTF-8 text",
                "1100_m.sql: not valid UTF-8 (line 1, byte 0); migrations must be UTF-8 text",
            ]
        );
    }

    #[test]
    fn large_files_between_small_ones_are_read_whole() {
        let big = format!("SELECT '{}';", "x".repeat(100_000));
        let dir = folder(&[
            ("1_small.sql", b"SELECT 1;"),
            ("2_big.sql", big.as_bytes()),
            ("3_small.sql", b"SELECT 3;"),
        ]);
        let set = discover(dir.path()).unwrap();
        let sql: Vec<&str> = set.migrations.iter().map(|m| m.up.sql.as_str()).collect();
        assert_eq!(sql, ["SELECT 1;", big.as_str(), "SELECT 3;"]);
        assert_eq!(set.migrations[1].up.checksum, checksum(big.as_bytes()));
    }

    #[test]
    fn missing_folder_is_one_problem_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let problems = discover(&missing).unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].path, missing);
        assert!(
            problems[0]
                .reason
                .starts_with("cannot read the migration folder")
        );
    }

    #[test]
    fn byte_order_mark_is_not_sent_but_is_hashed() {
        let dir = folder(&[("001_bom.sql", b"\xEF\xBB\xBFSELECT 1;")]);
        let set = discover(dir.path()).unwrap();
        assert_eq!(set.migrations[0].up.sql, "SELECT 1;");
        assert_ne!(set.migrations[0].up.checksum, checksum(b"SELECT 1;"));
    }
}
