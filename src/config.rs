//! The config folder: every `*.yaml` / `*.yml` in it, entries by name
//! (`db_main: {dsn: ..., schema: ...}`), with `${VAR}` and `${VAR:default}`
//! expanded from the environment in the values that are used.

use crate::environment::Environment;
use crate::error::Error;
use serde_yaml_ng::Value;
use std::path::{Path, PathBuf};

/// The parsed files of a config folder.
#[derive(Default)]
pub struct ConfigFolder {
    files: Vec<ConfigFile>,
    /// What `${VAR}` expands from.
    env: Environment,
}

/// Names the files only: their text may hold passwords.
impl std::fmt::Debug for ConfigFolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.files.iter().map(|file| &file.path))
            .finish()
    }
}

struct ConfigFile {
    path: PathBuf,
    text: String,
    root: serde_yaml_ng::Mapping,
}

/// A value taken from a config file, with where it came from.
#[derive(Clone)]
pub struct ConfigValue {
    pub value: String,
    /// `config/db_main.yaml:3 (db_main.schema)`
    pub origin: String,
}

/// Shows where a value came from, not the value: it may be a DSN with its
/// password.
impl std::fmt::Debug for ConfigValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ConfigValue({})", self.origin)
    }
}

/// The settings of one database entry that the tool reads.
#[derive(Debug, Default)]
pub struct DbEntry {
    pub dsn: Option<ConfigValue>,
    pub schema: Option<ConfigValue>,
    pub table: Option<ConfigValue>,
    pub lock_key: Option<ConfigValue>,
    pub lock_wait: Option<ConfigValue>,
    pub pooler: Option<ConfigValue>,
    pub lock_lease: Option<ConfigValue>,
    pub migrations_path: Option<ConfigValue>,
    pub lock_timeout: Option<ConfigValue>,
    pub statement_timeout: Option<ConfigValue>,
    pub wait_for_db: Option<ConfigValue>,
    pub bootstrap_path: Option<ConfigValue>,
    /// The environment variables the bootstrap scripts read, each one a
    /// value with the origin of the list.
    pub bootstrap_variables: Option<Vec<ConfigValue>>,
}

/// Keys of an entry that this tool reads; any other key (an application's
/// pool size, say) is left alone, since the same file usually serves the
/// application too.
const ENTRY_KEYS: [&str; 12] = [
    "dsn",
    "schema",
    "table",
    "lock_key",
    "lock_wait",
    "pooler",
    "lock_lease",
    "migrations_path",
    "lock_timeout",
    "statement_timeout",
    "wait_for_db",
    "bootstrap_path",
];

impl ConfigFolder {
    /// Reads every YAML file of the folder. A folder that does not exist is
    /// empty unless `required` (it was named explicitly).
    pub fn read(dir: &Path, required: bool, env: &Environment) -> Result<ConfigFolder, Error> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound && !required => {
                return Ok(ConfigFolder {
                    files: Vec::new(),
                    env: env.clone(),
                });
            }
            Err(err) => {
                return Err(Error::Config {
                    origin: dir.display().to_string(),
                    message: format!("cannot read the config folder: {err}"),
                });
            }
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
            })
            .collect();
        paths.sort();
        let mut files = Vec::with_capacity(paths.len());
        for path in paths {
            let text = std::fs::read_to_string(&path).map_err(|err| Error::Config {
                origin: path.display().to_string(),
                message: format!("cannot read: {err}"),
            })?;
            let root = match serde_yaml_ng::from_str::<Value>(&text) {
                Ok(Value::Mapping(root)) => root,
                // An empty file, or one holding something else entirely.
                Ok(_) => serde_yaml_ng::Mapping::new(),
                Err(err) => {
                    let origin = match err.location() {
                        Some(at) => format!("{}:{}:{}", path.display(), at.line(), at.column()),
                        None => path.display().to_string(),
                    };
                    let message = err.to_string();
                    // serde_yaml_ng appends " at line L column C"; the origin has it.
                    let message = match message.find(" at line ") {
                        Some(i) => message[..i].to_owned(),
                        None => message,
                    };
                    return Err(Error::Config {
                        origin,
                        message: format!("not valid YAML: {message}"),
                    });
                }
            };
            files.push(ConfigFile { path, text, root });
        }
        Ok(ConfigFolder {
            files,
            env: env.clone(),
        })
    }

    /// The entry named `name`, its values expanded. `None` when no file has
    /// it; an error when two files do, or it is not a mapping.
    pub fn db_entry(&self, name: &str) -> Result<Option<DbEntry>, Error> {
        let found: Vec<(&ConfigFile, &Value)> = self
            .files
            .iter()
            .filter_map(|f| f.root.get(name).map(|v| (f, v)))
            .collect();
        let (file, value) = match found.as_slice() {
            [] => return Ok(None),
            [one] => *one,
            [first, second, ..] => {
                return Err(Error::Config {
                    origin: format!("{}:{}", first.0.path.display(), first.0.line_of_key(name)),
                    message: format!(
                        "`{name}` is also defined in {}:{}; keep one",
                        second.0.path.display(),
                        second.0.line_of_key(name)
                    ),
                });
            }
        };
        let entry_line = file.line_of_key(name);
        let Value::Mapping(map) = value else {
            return Err(Error::Config {
                origin: format!("{}:{entry_line}", file.path.display()),
                message: format!("`{name}` must be a mapping (dsn: ..., schema: ...)"),
            });
        };
        let mut entry = DbEntry::default();
        if let Some(raw) = map.get("bootstrap_variables") {
            let key = "bootstrap_variables";
            let line = file.line_of_field(entry_line, key);
            let origin = format!("{}:{line} ({name}.{key})", file.path.display());
            let names: Vec<String> = match raw {
                Value::Sequence(items) => items
                    .iter()
                    .map(|item| scalar(item, &origin, &self.env))
                    .collect::<Result<Vec<_>, _>>()?
                    .into_iter()
                    .flatten()
                    .collect(),
                other => scalar(other, &origin, &self.env)?
                    .map(|text| {
                        text.split(',')
                            .map(|n| n.trim().to_owned())
                            .filter(|n| !n.is_empty())
                            .collect()
                    })
                    .unwrap_or_default(),
            };
            entry.bootstrap_variables = Some(
                names
                    .into_iter()
                    .map(|value| ConfigValue {
                        value,
                        origin: origin.clone(),
                    })
                    .collect(),
            );
        }
        for key in ENTRY_KEYS {
            let Some(raw) = map.get(key) else { continue };
            let line = file.line_of_field(entry_line, key);
            let origin = format!("{}:{line} ({name}.{key})", file.path.display());
            let Some(value) = scalar(raw, &origin, &self.env)? else {
                continue;
            };
            let slot = match key {
                "dsn" => &mut entry.dsn,
                "schema" => &mut entry.schema,
                "table" => &mut entry.table,
                "lock_key" => &mut entry.lock_key,
                "lock_wait" => &mut entry.lock_wait,
                "pooler" => &mut entry.pooler,
                "lock_lease" => &mut entry.lock_lease,
                "lock_timeout" => &mut entry.lock_timeout,
                "statement_timeout" => &mut entry.statement_timeout,
                "wait_for_db" => &mut entry.wait_for_db,
                "bootstrap_path" => &mut entry.bootstrap_path,
                _ => &mut entry.migrations_path,
            };
            *slot = Some(ConfigValue { value, origin });
        }
        Ok(Some(entry))
    }
}

impl ConfigFolder {
    /// A top-level switch such as `skip-migrations: true`, from whichever
    /// file holds it (`deployment.yaml`, by convention); expanded.
    pub fn top_level(&self, key: &str) -> Result<Option<ConfigValue>, Error> {
        let found: Vec<(&ConfigFile, &Value)> = self
            .files
            .iter()
            .filter_map(|f| f.root.get(key).map(|v| (f, v)))
            .collect();
        match found.as_slice() {
            [] => Ok(None),
            [(file, value)] => {
                let origin = format!("{}:{}", file.path.display(), file.line_of_key(key));
                Ok(scalar(value, &origin, &self.env)?.map(|value| ConfigValue { value, origin }))
            }
            [first, second, ..] => Err(Error::Config {
                origin: format!("{}:{}", first.0.path.display(), first.0.line_of_key(key)),
                message: format!(
                    "`{key}` is also set in {}:{}; keep one",
                    second.0.path.display(),
                    second.0.line_of_key(key)
                ),
            }),
        }
    }
}

/// A single YAML value as text, `${VAR}`-expanded; `None` for null.
fn scalar(raw: &Value, origin: &str, env: &Environment) -> Result<Option<String>, Error> {
    let text = match raw {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => return Ok(None),
        _ => {
            return Err(Error::Config {
                origin: origin.to_owned(),
                message: "must be a single value, not a list or mapping".into(),
            });
        }
    };
    expand_env(&text, |var| env.get_raw(var).map(str::to_owned))
        .map(Some)
        .map_err(|message| Error::Config {
            origin: origin.to_owned(),
            message,
        })
}

impl ConfigFile {
    /// The 1-based line where a top-level key is written (1 if not found).
    fn line_of_key(&self, key: &str) -> usize {
        self.text
            .lines()
            .position(|line| {
                let line = line.trim_start_matches(['"', '\'']);
                line.starts_with(key)
                    && line[key.len()..]
                        .trim_start_matches(['"', '\''])
                        .trim_start()
                        .starts_with(':')
            })
            .map_or(1, |i| i + 1)
    }

    /// The line of `field:` at or after an entry's line (flow or block style).
    fn line_of_field(&self, entry_line: usize, field: &str) -> usize {
        self.text
            .lines()
            .enumerate()
            .skip(entry_line - 1)
            .find(|(_, line)| {
                line.match_indices(field).any(|(i, _)| {
                    let before = line[..i].chars().next_back();
                    let after = line[i + field.len()..].trim_start_matches(['"', '\'']);
                    matches!(before, None | Some(' ' | '{' | ',' | '"' | '\'' | '\t'))
                        && after.trim_start().starts_with(':')
                })
            })
            .map_or(entry_line, |(i, _)| i + 1)
    }
}

/// Expands `${VAR}` and `${VAR:default}`; `$$` is a literal `$`. The
/// default applies when the variable is unset or empty.
pub fn expand_env(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if let Some(after) = rest.strip_prefix("$$") {
            out.push('$');
            rest = after;
            continue;
        }
        let Some(body_start) = rest.strip_prefix("${") else {
            out.push('$');
            rest = &rest[1..];
            continue;
        };
        let Some(end) = body_start.find('}') else {
            return Err("`${` without a closing `}`".into());
        };
        let body = &body_start[..end];
        let (var, default) = match body.split_once(':') {
            Some((var, default)) => (var, Some(default)),
            None => (body, None),
        };
        if var.is_empty() || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "`${{{body}}}` does not name an environment variable"
            ));
        }
        match (lookup(var).filter(|v| !v.is_empty()), default) {
            (Some(value), _) => out.push_str(&value),
            (None, Some(default)) => out.push_str(default),
            (None, None) => {
                return Err(format!(
                    "environment variable {var} is not set (set it, or write ${{{var}:default}})"
                ));
            }
        }
        rest = &body_start[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(var: &str) -> Option<String> {
        match var {
            "HOST" => Some("db.internal".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_variables_and_defaults() {
        assert_eq!(
            expand_env("postgres://${HOST}/x", env).unwrap(),
            "postgres://db.internal/x"
        );
        assert_eq!(
            expand_env("${NOPE:localhost}:${PORT:5432}", env).unwrap(),
            "localhost:5432"
        );
        assert_eq!(expand_env("${EMPTY:fallback}", env).unwrap(), "fallback");
        assert_eq!(expand_env("${NOPE:}", env).unwrap(), "");
        assert_eq!(
            expand_env("a$b $$ ${HOST:x:y}", env).unwrap(),
            "a$b $ db.internal"
        );
        assert_eq!(expand_env("${NOPE:a:b}", env).unwrap(), "a:b");
    }

    #[test]
    fn expansion_errors_name_the_variable() {
        assert!(
            expand_env("${MISSING}", env)
                .unwrap_err()
                .contains("MISSING is not set")
        );
        assert!(expand_env("${HOST", env).unwrap_err().contains("closing"));
        assert!(
            expand_env("${}", env)
                .unwrap_err()
                .contains("does not name")
        );
        assert!(
            expand_env("${A B}", env)
                .unwrap_err()
                .contains("does not name")
        );
    }

    fn folder(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        dir
    }

    #[test]
    fn reads_the_selected_entry_with_origins() {
        let dir = folder(&[
            ("app.yaml", "server:\n  port: 8080\n"),
            (
                "db_main.yaml",
                "# databases\ndb_main:\n  dsn: postgres://h/db\n  schema: auth\n  lock_key: 42\n  max_conns: 10\n",
            ),
            (
                "other.yml",
                "db_reports: {dsn: 'postgres://r/db', schema: reports}\n",
            ),
            ("notes.txt", "db_main: ignored"),
        ]);
        let folder = ConfigFolder::read(dir.path(), true, &Environment::default()).unwrap();
        let main = folder.db_entry("db_main").unwrap().unwrap();
        assert_eq!(main.dsn.as_ref().unwrap().value, "postgres://h/db");
        assert_eq!(main.lock_key.as_ref().unwrap().value, "42");
        let origin = &main.schema.as_ref().unwrap().origin;
        assert!(
            origin.ends_with("db_main.yaml:4 (db_main.schema)"),
            "{origin}"
        );
        let reports = folder.db_entry("db_reports").unwrap().unwrap();
        assert_eq!(reports.schema.as_ref().unwrap().value, "reports");
        assert!(
            reports
                .schema
                .unwrap()
                .origin
                .ends_with("other.yml:1 (db_reports.schema)")
        );
        assert!(folder.db_entry("db_nope").unwrap().is_none());
    }

    #[test]
    fn malformed_yaml_names_file_and_line() {
        let dir = folder(&[("db_main.yaml", "db_main:\n  dsn: x\n   schema: [unclosed\n")]);
        let err = ConfigFolder::read(dir.path(), true, &Environment::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("db_main.yaml:3:"), "{err}");
        assert!(err.contains("not valid YAML"), "{err}");
    }

    #[test]
    fn an_entry_in_two_files_is_an_error() {
        let dir = folder(&[
            ("a.yaml", "db_main: {dsn: x}\n"),
            ("b.yaml", "\n\ndb_main: {dsn: y}\n"),
        ]);
        let folder = ConfigFolder::read(dir.path(), true, &Environment::default()).unwrap();
        let err = folder.db_entry("db_main").unwrap_err().to_string();
        assert!(
            err.contains("a.yaml:1") && err.contains("b.yaml:3"),
            "{err}"
        );
    }

    #[test]
    fn missing_folder_is_empty_unless_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("config");
        assert!(
            ConfigFolder::read(&missing, false, &Environment::default())
                .unwrap()
                .db_entry("db_main")
                .unwrap()
                .is_none()
        );
        assert!(ConfigFolder::read(&missing, true, &Environment::default()).is_err());
    }

    #[test]
    fn unset_variable_names_file_line_and_variable() {
        let dir = folder(&[(
            "db.yaml",
            "db_main:\n  schema: app\n  dsn: ${MIGRATE_TEST_SURELY_UNSET_VAR}\n",
        )]);
        let folder = ConfigFolder::read(dir.path(), true, &Environment::default()).unwrap();
        let err = folder.db_entry("db_main").unwrap_err().to_string();
        assert!(err.contains("db.yaml:3 (db_main.dsn)"), "{err}");
        assert!(
            err.contains("MIGRATE_TEST_SURELY_UNSET_VAR is not set"),
            "{err}"
        );
    }
}
