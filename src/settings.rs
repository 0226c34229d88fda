//! Resolving the settings of a run: command-line flag, then environment
//! variable, then the config folder, then the default. Every error names
//! the flag, variable or file line the bad value came from.

pub mod fleet;

use crate::cli::GlobalArgs;
use crate::config::{ConfigFolder, ConfigValue, DbEntry};
use crate::dsn::Dsn;
use crate::duration::parse_duration;
use crate::engine::{Bootstrap, DEFAULT_LEASE, Database, LockMode, Pooler};
pub use crate::environment::Environment;
use crate::error::Error;
use crate::migration::Version;
use crate::store::{SessionSettings, Tracking};
use std::path::PathBuf;
use std::time::Duration;

/// How long `migrate wait` waits: `--timeout`, else `MIGRATE_WAIT_TIMEOUT`,
/// else 5 minutes.
pub fn wait_timeout(flag: Option<&str>, env: &Environment) -> Result<Duration, Error> {
    let given = flag.map(|t| ("--timeout", t)).or_else(|| {
        env.get("MIGRATE_WAIT_TIMEOUT")
            .map(|v| ("MIGRATE_WAIT_TIMEOUT", v))
    });
    match given {
        Some((origin, text)) => parse_duration(text).map_err(|message| Error::Config {
            origin: origin.into(),
            message,
        }),
        None => Ok(Duration::from_secs(5 * 60)),
    }
}

/// `--metrics-file`, else `MIGRATE_METRICS_FILE`: also wanted when the
/// other settings could not be resolved, so that file still tells of it.
pub fn metrics_file(args: &GlobalArgs, env: &Environment) -> Option<PathBuf> {
    args.metrics_file
        .clone()
        .or_else(|| env.get("MIGRATE_METRICS_FILE").map(PathBuf::from))
}

/// The resolved settings. Built before anything touches the database.
pub struct Settings {
    pub migrations_dir: PathBuf,
    pub tracking: Tracking,
    pub lock: LockMode,
    pub lock_key: Option<i64>,
    /// What stands in front of the server (`--pooler`).
    pub pooler: Pooler,
    /// How long a lease lasts unless renewed (`--lock-lease`).
    pub lease: Duration,
    pub yes: bool,
    pub dry_run: bool,
    pub target: Option<Version>,
    pub out_of_order: bool,
    /// `lock_timeout` and `statement_timeout` for each migration.
    pub session: SessionSettings,
    /// How long to keep trying the first connection.
    pub wait_for_db: Duration,
    /// `SKIP_MIGRATIONS`: `up` does nothing. Where it was said, when it
    /// was: the variable, or the config file and line.
    pub skip_migrations: Option<String>,
    /// `SKIP_BOOTSTRAP`: `up` runs no bootstrap scripts.
    pub skip_bootstrap: bool,
    pub bootstrap: BootstrapSettings,
    pub json: bool,
    pub verbosity: Verbosity,
    pub metrics_file: Option<PathBuf>,
    /// What these settings were resolved from, for the command-specific
    /// ones resolved later (`serve`'s, `wait`'s timeout).
    pub environment: Environment,
    dsn: Option<Sourced>,
}

/// How much `migrate` says beyond its results.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Verbosity {
    Quiet,
    #[default]
    Normal,
    Verbose,
}

impl Verbosity {
    /// `-q` wins over `-v`.
    pub fn from_flags(quiet: bool, verbose: bool) -> Verbosity {
        match (quiet, verbose) {
            (true, _) => Verbosity::Quiet,
            (false, true) => Verbosity::Verbose,
            (false, false) => Verbosity::Normal,
        }
    }
}

/// Where the bootstrap scripts are and what they read from the environment.
pub struct BootstrapSettings {
    /// `bootstrap_path`, or `<migrations>/bootstrap`.
    pub dir: PathBuf,
    /// Whether the folder was named (by config or environment): then it
    /// must exist.
    pub named: bool,
    /// Each declared variable, its value (`None`: not set) and where it was
    /// declared.
    pub variables: Vec<(String, Option<Secret>, String)>,
}

impl std::fmt::Debug for BootstrapSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootstrapSettings")
            .field("dir", &self.dir)
            .field("named", &self.named)
            .field(
                "variables",
                &self
                    .variables
                    .iter()
                    .map(|(n, v, _)| (n, v.is_some()))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// A value that must not be shown: `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<hidden>)")
    }
}

/// `lock_timeout` for each migration unless set otherwise: long enough for
/// a busy table's short transactions to finish, short enough that a
/// migration queued behind a long query does not stall every query of the
/// table behind it for long. Retried three times with backoff.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// The shortest `--lock-lease`.
pub const MIN_LEASE: Duration = Duration::from_secs(3);

/// A raw value and where it came from (`--dsn`, `DB_DSN`, `config/x.yaml:3 (db_main.dsn)`).
#[derive(Clone)]
struct Sourced {
    value: String,
    origin: String,
}

/// The DSN is shown by origin only: it may hold a password.
impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("migrations_dir", &self.migrations_dir)
            .field("tracking", &self.tracking)
            .field("lock", &self.lock)
            .field("lock_key", &self.lock_key)
            .field("pooler", &self.pooler)
            .field("lease", &self.lease)
            .field("yes", &self.yes)
            .field("dry_run", &self.dry_run)
            .field("target", &self.target)
            .field("out_of_order", &self.out_of_order)
            .field("session", &self.session)
            .field("wait_for_db", &self.wait_for_db)
            .field("skip_migrations", &self.skip_migrations)
            .field("skip_bootstrap", &self.skip_bootstrap)
            .field("bootstrap", &self.bootstrap)
            .field("json", &self.json)
            .field("verbosity", &self.verbosity)
            .field("metrics_file", &self.metrics_file)
            .field("dsn_from", &self.dsn.as_ref().map(|d| &d.origin))
            .finish()
    }
}

/// PostgreSQL truncates longer identifiers silently; the tool refuses them.
const MAX_IDENTIFIER_BYTES: usize = 63;

impl Settings {
    /// Resolves the settings from the flags, the environment and the
    /// config folder.
    pub fn resolve(args: &GlobalArgs, environment: &Environment) -> Result<Settings, Error> {
        let env = |name: &str| environment.get(name).map(str::to_owned);
        let flag = |value: Option<&str>, name: &str| {
            value.map(|v| Sourced {
                value: v.to_owned(),
                origin: name.to_owned(),
            })
        };
        let var = |name: &str| {
            env(name).map(|value| Sourced {
                value,
                origin: name.to_owned(),
            })
        };
        let from_config = |value: &Option<ConfigValue>| {
            value.as_ref().map(|v| Sourced {
                value: v.value.clone(),
                origin: v.origin.clone(),
            })
        };

        let config_dir = args
            .config
            .clone()
            .or_else(|| var("MIGRATE_CONFIG").map(|s| PathBuf::from(s.value)));
        let folder = match &config_dir {
            Some(dir) => ConfigFolder::read(dir, true, environment)?,
            None => ConfigFolder::read(&PathBuf::from("config"), false, environment)?,
        };
        let db = flag(args.db.as_deref(), "--db").or_else(|| var("MIGRATE_DB"));
        let entry_name = db
            .as_ref()
            .map_or("db_main", |s| s.value.as_str())
            .to_owned();
        let entry = match folder.db_entry(&entry_name)? {
            Some(entry) => entry,
            None if db.is_some() => {
                let dir = config_dir.unwrap_or_else(|| PathBuf::from("config"));
                return Err(Error::Config {
                    origin: db.map(|d| d.origin).unwrap_or_default(),
                    message: format!(
                        "no entry `{entry_name}` in any *.yaml file of {}/",
                        dir.display()
                    ),
                });
            }
            None => DbEntry::default(),
        };

        let migrations_dir = match &args.path {
            Some(path) => path.clone(),
            None => var("MIGRATE_PATH")
                .or_else(|| from_config(&entry.migrations_path))
                .map_or_else(|| PathBuf::from("migrations"), |s| PathBuf::from(s.value)),
        };

        let dsn = flag(args.dsn.as_ref().map(|d| d.0.as_str()), "--dsn")
            .or_else(|| var("DB_DSN"))
            .or_else(|| var("DATABASE_URL"))
            .or_else(|| from_config(&entry.dsn));

        let schema = flag(args.schema.as_deref(), "--schema")
            .or_else(|| var("MIGRATE_SCHEMA"))
            .or_else(|| from_config(&entry.schema));
        let schema = identifier(schema, "public", 0)?;
        let table = flag(args.table.as_deref(), "--table")
            .or_else(|| var("MIGRATE_TABLE"))
            .or_else(|| from_config(&entry.table));
        // The journal is `<table>_log` and the lease `<table>_lock`, which
        // must fit too.
        let table = identifier(table, "schema_migrations", "_lock".len())?;

        let lock_key = flag(args.lock_key.as_deref(), "--lock-key")
            .or_else(|| var("MIGRATE_LOCK_KEY"))
            .or_else(|| from_config(&entry.lock_key))
            .map(|s| {
                s.value.trim().parse::<i64>().map_err(|_| Error::Config {
                    origin: s.origin.clone(),
                    message: format!("`{}` is not a 64-bit integer lock key", s.value),
                })
            })
            .transpose()?;

        let duration =
            |value: Option<&str>, flag_name: &str, env: &str, config: &Option<ConfigValue>| {
                flag(value, flag_name)
                    .or_else(|| var(env))
                    .or_else(|| from_config(config))
                    .map(|s| {
                        parse_duration(&s.value).map_err(|message| Error::Config {
                            origin: s.origin.clone(),
                            message,
                        })
                    })
                    .transpose()
            };
        let lock_wait = duration(
            args.lock_wait.as_deref(),
            "--lock-wait",
            "MIGRATE_LOCK_WAIT",
            &entry.lock_wait,
        )?
        .unwrap_or(Duration::from_secs(5 * 60));
        let pooler = flag(args.pooler.as_deref(), "--pooler")
            .or_else(|| var("MIGRATE_POOLER"))
            .or_else(|| from_config(&entry.pooler))
            .map(|s| {
                Pooler::parse(&s.value).ok_or_else(|| Error::Config {
                    origin: s.origin.clone(),
                    message: format!(
                        "`{}` is not one of auto, none, session, transaction",
                        s.value
                    ),
                })
            })
            .transpose()?
            .unwrap_or_default();
        let lease = match flag(args.lock_lease.as_deref(), "--lock-lease")
            .or_else(|| var("MIGRATE_LOCK_LEASE"))
            .or_else(|| from_config(&entry.lock_lease))
        {
            None => DEFAULT_LEASE,
            Some(s) => {
                let lease = parse_duration(&s.value).map_err(|message| Error::Config {
                    origin: s.origin.clone(),
                    message,
                })?;
                if lease < MIN_LEASE {
                    return Err(Error::Config {
                        origin: s.origin.clone(),
                        message: format!(
                            "`{}` is shorter than the shortest lease, {} s: it is renewed every \
                             third of it, and a renewal must not be due before the last one is back",
                            s.value,
                            MIN_LEASE.as_secs()
                        ),
                    });
                }
                lease
            }
        };
        let lock_timeout = duration(
            args.lock_timeout.as_deref(),
            "--lock-timeout",
            "MIGRATE_LOCK_TIMEOUT",
            &entry.lock_timeout,
        )?
        .unwrap_or(DEFAULT_LOCK_TIMEOUT);
        let statement_timeout = duration(
            args.statement_timeout.as_deref(),
            "--statement-timeout",
            "MIGRATE_STATEMENT_TIMEOUT",
            &entry.statement_timeout,
        )?;
        let wait_for_db = duration(
            args.wait_for_db.as_deref(),
            "--wait-for-db",
            "MIGRATE_WAIT_FOR_DB",
            &entry.wait_for_db,
        )?
        .unwrap_or(Duration::ZERO);
        let out_of_order = if args.out_of_order {
            true
        } else {
            env_bool(&env, "MIGRATE_OUT_OF_ORDER")?.unwrap_or(false)
        };

        let skip_if_locked = if args.skip_if_locked {
            true
        } else {
            env_bool(&env, "MIGRATE_SKIP_IF_LOCKED")?.unwrap_or(false)
        };
        let safe = match &args.safe {
            Some(value) => parse_bool(value).ok_or_else(|| Error::Config {
                origin: "--safe".into(),
                message: format!("`{value}` is not one of true, false, 1, 0, yes, no"),
            })?,
            None => env_bool(&env, "MIGRATE_SAFE")?.unwrap_or(true),
        };
        let lock = match (safe, skip_if_locked) {
            (false, true) => {
                return Err(Error::Usage(
                    "--skip-if-locked needs the lock, but --safe=false takes none; drop one of them"
                        .into(),
                ));
            }
            (false, false) => LockMode::Off,
            (true, true) => LockMode::SkipIfLocked,
            (true, false) => LockMode::Wait(lock_wait),
        };

        let target = args
            .target
            .as_deref()
            .map(|t| {
                Version::parse(t).ok_or_else(|| {
                    Error::Usage(format!("--target: `{t}` is not a version (digits only)"))
                })
            })
            .transpose()?;

        let skip_migrations = switch(&env, &folder, "SKIP_MIGRATIONS", "skip-migrations")?;
        let skip_bootstrap = switch(&env, &folder, "SKIP_BOOTSTRAP", "skip-bootstrap")?.is_some();

        let bootstrap_dir =
            var("MIGRATE_BOOTSTRAP_PATH").or_else(|| from_config(&entry.bootstrap_path));
        let declared: Vec<ConfigValue> = match env("MIGRATE_BOOTSTRAP_VARIABLES") {
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(|n| ConfigValue {
                    value: n.to_owned(),
                    origin: "MIGRATE_BOOTSTRAP_VARIABLES".into(),
                })
                .collect(),
            None => entry.bootstrap_variables.clone().unwrap_or_default(),
        };
        let mut variables = Vec::new();
        for declared in declared {
            let name = declared.value;
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(Error::Config {
                    origin: declared.origin,
                    message: format!("`{name}` is not an environment variable name"),
                });
            }
            let value = env(&name).map(Secret);
            variables.push((name, value, declared.origin));
        }
        let bootstrap = BootstrapSettings {
            named: bootstrap_dir.is_some(),
            dir: bootstrap_dir.map_or_else(
                || migrations_dir.join("bootstrap"),
                |s| PathBuf::from(s.value),
            ),
            variables,
        };
        let metrics_file = metrics_file(args, environment);
        let verbosity = Verbosity::from_flags(args.quiet, args.verbose);

        Ok(Settings {
            environment: environment.clone(),
            migrations_dir,
            tracking: Tracking { schema, table },
            lock,
            lock_key,
            pooler,
            lease,
            yes: args.yes,
            dry_run: args.dry_run,
            target,
            out_of_order,
            session: SessionSettings {
                lock_timeout,
                statement_timeout,
            },
            wait_for_db,
            skip_migrations,
            skip_bootstrap,
            bootstrap,
            json: args.json,
            verbosity,
            metrics_file,
            dsn,
        })
    }

    /// The connection string, parsed; an error naming every place to set it
    /// when none was given.
    pub fn dsn(&self) -> Result<Dsn, Error> {
        let Some(dsn) = &self.dsn else {
            return Err(Error::Usage(
                "no database given: pass --dsn, set DB_DSN or DATABASE_URL, or give a `dsn` \
                 to the db_main entry of a config/*.yaml file"
                    .into(),
            ));
        };
        Dsn::parse(&dsn.value).map_err(|message| Error::Config {
            origin: dsn.origin.clone(),
            message: format!("invalid connection string: {message}"),
        })
    }
}

fn identifier(value: Option<Sourced>, default: &str, suffix: usize) -> Result<String, Error> {
    let Some(value) = value else {
        return Ok(default.to_owned());
    };
    let problem = if value.value.is_empty() {
        Some("must not be empty".to_owned())
    } else if value.value.contains('\0') {
        Some("must not contain a NUL character".to_owned())
    } else if value.value.len() + suffix > MAX_IDENTIFIER_BYTES {
        Some(format!(
            "`{}` is longer than PostgreSQL's {} bytes{}",
            value.value,
            MAX_IDENTIFIER_BYTES - suffix,
            if suffix > 0 {
                " (the lease table adds `_lock`)"
            } else {
                ""
            }
        ))
    } else {
        None
    };
    match problem {
        Some(message) => Err(Error::Config {
            origin: value.origin,
            message,
        }),
        None => Ok(value.value),
    }
}

use crate::engine::parse_switch as parse_bool;

/// Where a deployment switch was turned on, if it was: the environment
/// variable, else the config folder's top-level key.
fn switch(
    env: &dyn Fn(&str) -> Option<String>,
    folder: &ConfigFolder,
    name: &str,
    key: &str,
) -> Result<Option<String>, Error> {
    if let Some(value) = env_bool(env, name)? {
        return Ok(value.then(|| name.to_owned()));
    }
    match folder.top_level(key)? {
        Some(v) => match parse_bool(&v.value) {
            Some(value) => Ok(value.then(|| format!("{key} ({})", v.origin))),
            None => Err(Error::Config {
                origin: v.origin.clone(),
                message: format!(
                    "{key}: `{}` is not one of true, false, 1, 0, yes, no",
                    v.value
                ),
            }),
        },
        None => Ok(None),
    }
}

impl Settings {
    /// The engine's view of the database side, without bootstrap scripts.
    pub fn database(&self) -> Result<Database, Error> {
        Ok(Database {
            dsn: self.dsn()?,
            tracking: self.tracking.clone(),
            lock: self.lock,
            lock_key: self.lock_key,
            pooler: self.pooler,
            lease: self.lease,
            actor: None,
            session: self.session.clone(),
            wait_for_db: self.wait_for_db,
            bootstrap: None,
        })
    }

    /// The bootstrap scripts, read (unless `SKIP_BOOTSTRAP`), with the
    /// declared variables' values; a declared variable the environment
    /// lacks is an error here, before any migration runs.
    pub fn bootstrap_scripts(&self) -> Result<Option<Bootstrap>, Error> {
        if self.skip_bootstrap {
            return Ok(None);
        }
        let mut bootstrap = Bootstrap::read(&self.bootstrap.dir, self.bootstrap.named, Vec::new())?;
        // The variables are the scripts' to read: a folder without scripts
        // (another `--path` beside the same config, say) needs none of them.
        if bootstrap.scripts.is_empty() {
            return Ok(Some(bootstrap));
        }
        for (name, value, origin) in &self.bootstrap.variables {
            match value {
                Some(value) => bootstrap.variables.push((name.clone(), value.0.clone())),
                None => {
                    return Err(Error::MissingVariable {
                        name: name.clone(),
                        origin: origin.clone(),
                    });
                }
            }
        }
        Ok(Some(bootstrap))
    }

    /// `migrate wait`'s time limit; see [`wait_timeout`].
    pub fn wait_timeout(&self, flag: Option<&str>) -> Result<Duration, Error> {
        wait_timeout(flag, &self.environment)
    }

    /// `SKIP_MIGRATIONS` (or `skip-migrations` in the config folder) alone,
    /// before anything else is resolved: `up` then exits 0 whatever else
    /// the environment or the config lacks. Where it was said, if it was.
    pub fn skip_migrations(
        args: &GlobalArgs,
        environment: &Environment,
    ) -> Result<Option<String>, Error> {
        let env = |name: &str| environment.get(name).map(str::to_owned);
        if let Some(value) = env_bool(&env, "SKIP_MIGRATIONS")? {
            return Ok(value.then(|| "SKIP_MIGRATIONS".to_owned()));
        }
        let folder = match args
            .config
            .clone()
            .or_else(|| env("MIGRATE_CONFIG").map(PathBuf::from))
        {
            Some(dir) => ConfigFolder::read(&dir, true, environment)?,
            None => ConfigFolder::read(&PathBuf::from("config"), false, environment)?,
        };
        switch(&env, &folder, "SKIP_MIGRATIONS", "skip-migrations")
    }
}

fn env_bool(env: &dyn Fn(&str) -> Option<String>, name: &str) -> Result<Option<bool>, Error> {
    match env(name) {
        None => Ok(None),
        Some(value) => parse_bool(&value).map(Some).ok_or_else(|| Error::Config {
            origin: name.to_owned(),
            message: format!("`{value}` is not one of true, false, 1, 0, yes, no"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Resolves with `env` as the whole environment and, unless the test
    /// names one, an empty config folder (not the repository's ./config).
    fn resolve(mut args: GlobalArgs, env: &[(&str, &str)]) -> Result<Settings, Error> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let empty = tempfile::tempdir().unwrap();
        if args.config.is_none() && !env.contains_key("MIGRATE_CONFIG") {
            args.config = Some(empty.path().to_path_buf());
        }
        Settings::resolve(&args, &Environment::from_pairs(env))
    }

    #[test]
    fn defaults() {
        let s = resolve(GlobalArgs::default(), &[]).unwrap();
        assert_eq!(s.migrations_dir, PathBuf::from("migrations"));
        assert_eq!(s.tracking.schema, "public");
        assert_eq!(s.tracking.table, "schema_migrations");
        assert_eq!(s.lock, LockMode::Wait(Duration::from_secs(300)));
        assert!(s.lock_key.is_none());
        assert!(matches!(s.dsn(), Err(Error::Usage(_))));
    }

    #[test]
    fn flags_beat_environment_beats_config() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("db.yaml"),
            "db_main:\n  dsn: postgres://config/db\n  schema: from_config\n  table: t_config\n  lock_wait: 1m\n",
        )
        .unwrap();
        let args = GlobalArgs {
            config: Some(dir.path().to_path_buf()),
            schema: Some("from_flag".into()),
            ..GlobalArgs::default()
        };
        let env = [
            ("MIGRATE_SCHEMA", "from_env"),
            ("MIGRATE_TABLE", "t_env"),
            ("DATABASE_URL", "postgres://url/db"),
        ];
        let s = resolve(args, &env).unwrap();
        assert_eq!(s.tracking.schema, "from_flag");
        assert_eq!(s.tracking.table, "t_env");
        assert_eq!(s.lock, LockMode::Wait(Duration::from_secs(60)));
        assert_eq!(
            s.dsn().unwrap().describe().split('@').nth(1),
            Some("url:5432/db")
        );
        // DB_DSN wins over DATABASE_URL.
        let args = GlobalArgs {
            config: Some(dir.path().to_path_buf()),
            ..GlobalArgs::default()
        };
        let s = resolve(
            args,
            &[
                ("DB_DSN", "postgres://dbdsn/x"),
                ("DATABASE_URL", "postgres://url/db"),
            ],
        )
        .unwrap();
        assert!(s.dsn().unwrap().describe().contains("dbdsn:5432/x"));
    }

    #[test]
    fn bad_values_name_their_origin() {
        type Case = (GlobalArgs, Vec<(&'static str, &'static str)>, &'static str);
        let cases: Vec<Case> = vec![
            (
                GlobalArgs {
                    lock_wait: Some("5x".into()),
                    ..GlobalArgs::default()
                },
                vec![],
                "--lock-wait: `5x` is not a duration",
            ),
            (
                GlobalArgs::default(),
                vec![("MIGRATE_LOCK_WAIT", "soon")],
                "MIGRATE_LOCK_WAIT: `soon`",
            ),
            (
                GlobalArgs::default(),
                vec![("MIGRATE_SAFE", "maybe")],
                "MIGRATE_SAFE: `maybe` is not one of",
            ),
            (
                GlobalArgs {
                    safe: Some("nope".into()),
                    ..GlobalArgs::default()
                },
                vec![],
                "--safe: `nope`",
            ),
            (
                GlobalArgs {
                    lock_key: Some("12ab".into()),
                    ..GlobalArgs::default()
                },
                vec![],
                "--lock-key: `12ab` is not a 64-bit integer",
            ),
            (
                GlobalArgs {
                    table: Some("t".repeat(60)),
                    ..GlobalArgs::default()
                },
                vec![],
                "longer than PostgreSQL's 58 bytes (the lease table adds `_lock`)",
            ),
            (
                GlobalArgs {
                    schema: Some(String::new()),
                    ..GlobalArgs::default()
                },
                vec![],
                "--schema: must not be empty",
            ),
            (
                GlobalArgs {
                    safe: Some("false".into()),
                    skip_if_locked: true,
                    ..GlobalArgs::default()
                },
                vec![],
                "--skip-if-locked needs the lock",
            ),
            (
                GlobalArgs {
                    target: Some("v2".into()),
                    ..GlobalArgs::default()
                },
                vec![],
                "--target: `v2` is not a version",
            ),
        ];
        for (args, env, expected) in cases {
            let err = resolve(args, &env).unwrap_err().to_string();
            assert!(err.contains(expected), "expected {expected:?} in {err:?}");
        }
    }

    #[test]
    fn named_entry_must_exist() {
        let err = resolve(
            GlobalArgs {
                db: Some("db_nope".into()),
                ..GlobalArgs::default()
            },
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("--db: no entry `db_nope`"), "{err}");
    }

    #[test]
    fn bad_dsn_names_where_it_came_from_and_hides_the_password() {
        let s = resolve(
            GlobalArgs::default(),
            &[("DB_DSN", "postgres://u:hunter2@h/db?sslmode=sure")],
        )
        .unwrap();
        let err = s.dsn().unwrap_err().to_string();
        assert!(
            err.starts_with("DB_DSN: invalid connection string"),
            "{err}"
        );
        assert!(!err.contains("hunter2"));
    }

    #[test]
    fn debug_output_never_shows_the_dsn() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("db.yaml"),
            "db_main:\n  dsn: postgres://u:hunter2@h/db\n",
        )
        .unwrap();
        let args = GlobalArgs {
            config: Some(dir.path().to_path_buf()),
            ..GlobalArgs::default()
        };
        let from_config = resolve(args, &[]).unwrap();
        let folder = ConfigFolder::read(dir.path(), true, &Environment::default()).unwrap();
        let entry = folder.db_entry("db_main").unwrap();
        let from_env = resolve(
            GlobalArgs::default(),
            &[("DB_DSN", "postgres://u:hunter2@h/db")],
        )
        .unwrap();
        let cli = <crate::cli::Cli as clap::Parser>::parse_from([
            "migrate",
            "--dsn",
            "postgres://u:hunter2@h/db",
        ]);
        for debug in [
            format!("{from_config:?}"),
            format!("{from_env:?}"),
            format!("{entry:?}"),
            format!("{folder:?}"),
            format!("{cli:?}"),
        ] {
            assert!(!debug.contains("hunter2"), "{debug}");
        }
        assert!(format!("{from_env:?}").contains("DB_DSN"));
    }

    #[test]
    fn safe_false_and_skip_if_locked() {
        let s = resolve(
            GlobalArgs {
                safe: Some("false".into()),
                ..GlobalArgs::default()
            },
            &[],
        )
        .unwrap();
        assert_eq!(s.lock, LockMode::Off);
        let s = resolve(GlobalArgs::default(), &[("MIGRATE_SKIP_IF_LOCKED", "YES")]).unwrap();
        assert_eq!(s.lock, LockMode::SkipIfLocked);
    }
}
