//! Running a bootstrap script: in a transaction, under the migration lock,
//! with the bootstrap variables as transaction-local settings.

use super::sql::SessionSettings;
use super::{Lock, Store, Tracking};
use crate::error::DbFailure;
use crate::migration::{Script, sql};
use std::time::{Duration, Instant};

/// Why a bootstrap script did not commit.
#[derive(Debug)]
pub enum BootstrapFailure {
    /// It (or migrate's statements around it) failed; rolled back.
    Failed(DbFailure),
    /// It released the migration lock; rolled back.
    LockReleased,
}

/// Which failed: migrate's own statements around the script (the
/// transaction, the session, the variables), or the script, or the script
/// let go of the lock.
enum Failed {
    Setup(tokio_postgres::Error),
    Script(tokio_postgres::Error),
    LockReleased,
}

fn lock_still_held(held: Result<bool, tokio_postgres::Error>) -> Result<(), Failed> {
    match held {
        Ok(true) => Ok(()),
        Ok(false) => Err(Failed::LockReleased),
        Err(err) => Err(Failed::Setup(err)),
    }
}

impl Store {
    /// Runs a bootstrap script in a transaction, with each `names[i]` set to
    /// `values[i]` for that transaction only (never spliced into SQL, and
    /// never in a statement the server could log). A script that releases
    /// the migration lock (or runs when the lease is no longer this run's)
    /// is rolled back.
    pub async fn run_bootstrap_script(
        &self,
        tracking: &Tracking,
        settings: &SessionSettings,
        script: &Script,
        variables: (&[String], &[String]),
        lock: Option<&Lock>,
    ) -> Result<Duration, BootstrapFailure> {
        let (names, values) = variables;
        let client = self.client();
        self.session_touched();
        let start = Instant::now();
        let reset = self.reset_for_bookkeeping();
        let result = async {
            if names.is_empty() {
                let begin = format!(
                    "{}; {}",
                    self.pooled_begin(),
                    self.transaction_preamble(tracking, settings)
                );
                let (begun, ran, reset, held) = tokio::join!(
                    client.batch_execute(&begin),
                    client.batch_execute(&script.sql),
                    client.batch_execute(&reset),
                    self.holds_claim(lock)
                );
                begun.map_err(Failed::Setup)?;
                ran.map_err(Failed::Script)?;
                return lock_still_held(reset.and(held));
            }
            // The values travel as COPY data, which no statement log
            // (log_statement, log_min_duration_statement, pgaudit) records,
            // as bound parameters would be; set_config makes them
            // transaction-local settings and the table is gone before the
            // script runs.
            let begin = format!(
                "{}; {} CREATE TEMPORARY TABLE {VALUES_TABLE} (name text, value text) ON COMMIT DROP;",
                self.pooled_begin(),
                self.transaction_preamble(tracking, settings)
            );
            let copy = format!("COPY {VALUES_TABLE} FROM STDIN");
            let (begun, sink) = tokio::join!(
                client.batch_execute(&begin),
                client.copy_in::<_, std::io::Cursor<Vec<u8>>>(&copy)
            );
            begun.map_err(Failed::Setup)?;
            let mut sink = std::pin::pin!(sink.map_err(Failed::Setup)?);
            let mut data = String::new();
            for (name, value) in names.iter().zip(values) {
                data.push_str(&copy_text(name));
                data.push('\t');
                data.push_str(&copy_text(value));
                data.push('\n');
            }
            futures_util::SinkExt::send(&mut sink, std::io::Cursor::new(data.into_bytes()))
                .await
                .map_err(Failed::Setup)?;
            sink.finish().await.map_err(Failed::Setup)?;
            let set = format!(
                "SELECT set_config(name, value, true) FROM {VALUES_TABLE}; DROP TABLE {VALUES_TABLE};"
            );
            let (set, ran, reset, held) = tokio::join!(
                client.batch_execute(&set),
                client.batch_execute(&script.sql),
                client.batch_execute(&reset),
                self.holds_claim(lock)
            );
            set.map_err(Failed::Setup)?;
            ran.map_err(Failed::Script)?;
            lock_still_held(reset.and(held))
        }
        .await;
        let duration = start.elapsed();
        match result {
            Ok(()) => client
                .batch_execute("COMMIT")
                .await
                .map(|()| duration)
                .map_err(|err| BootstrapFailure::Failed(DbFailure::from(err))),
            Err(Failed::LockReleased) => {
                client.batch_execute("ROLLBACK").await.ok();
                Err(BootstrapFailure::LockReleased)
            }
            Err(Failed::Setup(err)) => {
                client.batch_execute("ROLLBACK").await.ok();
                let mut failure = DbFailure::from(err);
                // Its position is in migrate's statements, not the script.
                failure.position = None;
                let mut context =
                    "before the script ran, while preparing its transaction".to_owned();
                if !names.is_empty() {
                    context.push_str(
                        " and passing the bootstrap variables, which go through a temporary \
                         table: the role needs the TEMPORARY privilege on the database",
                    );
                }
                failure.context = Some(context);
                Err(BootstrapFailure::Failed(failure))
            }
            Err(Failed::Script(err)) => {
                client.batch_execute("ROLLBACK").await.ok();
                let mut failure = DbFailure::from(err);
                if let Some(position) = failure.position {
                    let at =
                        sql::locate(&script.sql, sql::position_to_offset(&script.sql, position));
                    failure.context = Some(match failure.context.take() {
                        Some(context) => {
                            format!("{context}\nat line {}, column {}", at.line, at.column)
                        }
                        None => format!("at line {}, column {}", at.line, at.column),
                    });
                }
                Err(BootstrapFailure::Failed(failure))
            }
        }
    }
}

/// Holds the bootstrap values for the moment `set_config` reads them.
const VALUES_TABLE: &str = "pg_temp.migrate_bootstrap_values";

/// A field of COPY's text format: backslash, tab, newline and carriage
/// return escaped.
fn copy_text(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    for c in field.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::copy_text;

    #[test]
    fn copy_text_escapes_what_the_format_reads_specially() {
        assert_eq!(copy_text("plain ü"), "plain ü");
        assert_eq!(copy_text("a\\b\tc\nd\re"), "a\\\\b\\tc\\nd\\re");
    }
}
