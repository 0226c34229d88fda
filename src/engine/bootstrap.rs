//! Bootstrap scripts: run after every successful `up`, under the same lock,
//! each in a transaction (they must be idempotent). Values they need from
//! the environment reach them only as session settings set through bound
//! parameters.

use super::Database;
use crate::error::DbFailure;
use crate::error::Error;
use crate::migration::{FileProblem, Script};
use crate::report::{BootstrapRun, Event, Reporter};
use crate::store::{BootstrapFailure, Lock, Store};
use std::path::Path;

/// The scripts and the values they read.
#[derive(Clone)]
pub struct Bootstrap {
    /// In name order.
    pub scripts: Vec<Script>,
    /// Each variable's name and value; a script reads it as
    /// `current_setting('migrate.<name in lower case>')`.
    pub variables: Vec<(String, String)>,
    /// Variables whose values `up` reads from the environment when it is
    /// about to run the scripts (not with `SKIP_MIGRATIONS` or
    /// `SKIP_BOOTSTRAP`), before it connects: a missing one is
    /// [`Error::MissingVariable`] and nothing runs.
    pub from_environment: Vec<String>,
}

impl std::fmt::Debug for Bootstrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bootstrap")
            .field(
                "scripts",
                &self.scripts.iter().map(|s| &s.path).collect::<Vec<_>>(),
            )
            .field(
                "variables",
                &self.variables.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("from_environment", &self.from_environment)
            .finish()
    }
}

impl Bootstrap {
    /// Reads every `*.sql` of `dir` in name order (hidden files and others
    /// ignored). A folder that does not exist has no scripts unless
    /// `required`.
    pub fn read(
        dir: &Path,
        required: bool,
        variables: Vec<(String, String)>,
    ) -> Result<Bootstrap, Error> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound && !required => {
                return Ok(Bootstrap {
                    scripts: Vec::new(),
                    variables,
                    from_environment: Vec::new(),
                });
            }
            Err(err) => {
                return Err(Error::Files(vec![FileProblem {
                    path: dir.to_path_buf(),
                    reason: format!("cannot read the bootstrap folder: {err}"),
                }]));
            }
        };
        let mut problems = Vec::new();
        let mut paths: Vec<_> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.extension().is_some_and(|e| e == "sql")
                    && !p
                        .file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with('.'))
            })
            .collect();
        paths.sort();
        // A script name that leads to no file (a dangling link, a folder)
        // is a problem, not a script quietly left out.
        paths.retain(|path| match std::fs::metadata(path) {
            Ok(meta) if meta.is_file() => true,
            Ok(_) => {
                problems.push(FileProblem {
                    path: path.clone(),
                    reason: "named like a bootstrap script, but not a file".into(),
                });
                false
            }
            Err(err) => {
                problems.push(FileProblem {
                    path: path.clone(),
                    reason: format!("cannot be read: {err}"),
                });
                false
            }
        });
        let mut scripts = Vec::new();
        for path in paths {
            match Script::read(&path) {
                Ok(script) if !script.transactional => problems.push(FileProblem {
                    path,
                    reason: "bootstrap scripts run in a transaction each; \
                             `-- migrate:no-transaction` does not apply to them"
                        .into(),
                }),
                Ok(script) => scripts.push(script),
                Err(reason) => problems.push(FileProblem { path, reason }),
            }
        }
        if !problems.is_empty() {
            return Err(Error::Files(problems));
        }
        super::check_scripts(scripts.iter())?;
        Ok(Bootstrap {
            scripts,
            variables,
            from_environment: Vec::new(),
        })
    }

    /// Bootstrap scripts from memory, as (file name, contents): the `*.sql`
    /// ones run in name order.
    pub fn from_files<'a>(
        label: &Path,
        files: impl IntoIterator<Item = (&'a str, &'a [u8])>,
        variables: Vec<(String, String)>,
    ) -> Result<Bootstrap, Error> {
        let mut files: Vec<(&str, &[u8])> = files
            .into_iter()
            .filter(|(name, _)| name.ends_with(".sql") && !name.starts_with('.'))
            .collect();
        files.sort();
        let mut scripts = Vec::new();
        let mut problems = Vec::new();
        for (name, bytes) in files {
            let path = label.join(name);
            match Script::from_bytes(&path, bytes) {
                Ok(script) if script.transactional => scripts.push(script),
                Ok(_) => problems.push(FileProblem {
                    path,
                    reason: "bootstrap scripts run in a transaction each; \
                             `-- migrate:no-transaction` does not apply to them"
                        .into(),
                }),
                Err(reason) => problems.push(FileProblem { path, reason }),
            }
        }
        if !problems.is_empty() {
            return Err(Error::Files(problems));
        }
        super::check_scripts(scripts.iter())?;
        Ok(Bootstrap {
            scripts,
            variables,
            from_environment: Vec::new(),
        })
    }

    /// Bootstrap scripts compiled into the binary (the `bootstrap` folder
    /// of an embedded migrations folder).
    #[cfg(feature = "embed")]
    pub fn from_embedded(
        dir: &include_dir::Dir<'_>,
        variables: Vec<(String, String)>,
    ) -> Result<Bootstrap, Error> {
        Bootstrap::from_files(dir.path(), crate::migration::embedded_files(dir), variables)
    }

    /// Declares variables whose values come from the environment when the
    /// scripts are about to run, so that a process started with
    /// `SKIP_MIGRATIONS=true` or `SKIP_BOOTSTRAP=true` needs none of them.
    pub fn with_environment<S: Into<String>>(
        mut self,
        names: impl IntoIterator<Item = S>,
    ) -> Bootstrap {
        self.from_environment
            .extend(names.into_iter().map(Into::into));
        self
    }

    /// This bootstrap with the values of `from_environment` read; an unset
    /// or empty one is an error.
    pub(super) fn resolved(&self) -> Result<Bootstrap, Error> {
        let mut resolved = self.clone();
        for name in &self.from_environment {
            match std::env::var(name) {
                Ok(value) if !value.is_empty() => resolved.variables.push((name.clone(), value)),
                _ => {
                    return Err(Error::MissingVariable {
                        name: name.clone(),
                        origin: "Bootstrap::with_environment".into(),
                    });
                }
            }
        }
        resolved.from_environment.clear();
        Ok(resolved)
    }

    /// The session setting a variable is read from.
    pub fn setting_name(variable: &str) -> String {
        format!("migrate.{}", variable.to_ascii_lowercase())
    }

    /// Hides every variable's value in `text` (an error message may quote
    /// it, as in "Key (email)=(...) already exists").
    fn redact(&self, text: &str) -> String {
        let mut text = text.to_owned();
        // Longest first: one value may contain another.
        let mut variables: Vec<&(String, String)> = self.variables.iter().collect();
        variables.sort_by_key(|(_, value)| std::cmp::Reverse(value.len()));
        for (name, value) in variables {
            if !value.is_empty() {
                text = text.replace(value.as_str(), &format!("<{name}>"));
            }
        }
        text
    }
}

/// Runs every script, each in its own transaction; stops at the first
/// failure.
pub(super) async fn run(
    store: &Store,
    database: &Database,
    bootstrap: &Bootstrap,
    lock: Option<&Lock>,
    runs: &mut Vec<BootstrapRun>,
    reporter: &dyn Reporter,
) -> Result<(), Error> {
    let names: Vec<String> = bootstrap
        .variables
        .iter()
        .map(|(n, _)| Bootstrap::setting_name(n))
        .collect();
    let values: Vec<String> = bootstrap.variables.iter().map(|(_, v)| v.clone()).collect();
    let total = bootstrap.scripts.len();
    for (index, script) in bootstrap.scripts.iter().enumerate() {
        let name = script.file_name();
        reporter.event(Event::Bootstrapping {
            script: &name,
            index,
            total,
        });
        match store
            .run_bootstrap_script(
                &database.tracking,
                &database.session,
                script,
                (&names, &values),
                lock,
            )
            .await
        {
            Ok(duration) => {
                reporter.event(Event::Bootstrapped {
                    script: &name,
                    duration,
                });
                runs.push(BootstrapRun {
                    script: name,
                    duration,
                });
            }
            Err(BootstrapFailure::Failed(failure)) => {
                let failure = redact_failure(bootstrap, failure);
                return Err(Error::BootstrapFailed {
                    path: script.path.clone(),
                    failure: Box::new(failure),
                });
            }
            Err(BootstrapFailure::LockReleased) => {
                return Err(Error::LockReleased {
                    lease: matches!(lock, Some(Lock::Lease(_))),
                    label: format!("bootstrap script {name}"),
                    path: script.path.clone(),
                    statements: None,
                    notes: Vec::new(),
                });
            }
        }
    }
    Ok(())
}

fn redact_failure(bootstrap: &Bootstrap, mut failure: DbFailure) -> DbFailure {
    failure.message = bootstrap.redact(&failure.message);
    failure.detail = failure.detail.map(|d| bootstrap.redact(&d));
    failure.hint = failure.hint.map(|h| bootstrap.redact(&h));
    failure.context = failure.context.map(|c| bootstrap.redact(&c));
    failure
}

#[cfg(test)]
mod tests {
    use super::Bootstrap;

    #[test]
    fn redaction_replaces_the_longest_value_first() {
        let bootstrap = Bootstrap {
            scripts: Vec::new(),
            variables: vec![
                ("SHORT".into(), "admin".into()),
                ("LONG".into(), "admin@example.com".into()),
            ],
            from_environment: Vec::new(),
        };
        assert_eq!(
            bootstrap.redact("Key (email)=(admin@example.com) already exists; admin"),
            "Key (email)=(<LONG>) already exists; <SHORT>"
        );
    }
}
