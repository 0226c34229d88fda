//! The database side: one connection per run, the tracking tables, the
//! advisory lock and the execution of migrations.

mod bootstrap;
mod execute;
mod lease;
mod lock;
mod sql;
mod state;
pub(crate) mod tls;

pub use bootstrap::BootstrapFailure;
pub use execute::{Action, Done, Run, RunError};
pub use lease::{LeaseClaim, Renewer, forget_lease, give_up_leases, remember_lease};
pub use lock::{Lock, LockWait, Taken, Taker, Watch, default_lock_key, lock_holder};
pub use sql::{ACTIVE_SQL_TRANSACTION, LOCK_NOT_AVAILABLE, SessionSettings};
pub use state::{StateDetail, read_journal, read_state, read_unrecorded};

use crate::dsn::{Dsn, TlsMode};
use crate::error::{DbFailure, Error};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls};

/// Where the tool keeps its bookkeeping: `<schema>.<table>` and
/// `<schema>.<table>_log`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tracking {
    pub schema: String,
    pub table: String,
}

impl Tracking {
    pub fn journal_name(&self) -> String {
        format!("{}_log", self.table)
    }

    /// `"schema"."table"`, quoted for SQL.
    pub fn state_table(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.table))
    }

    pub fn journal_table(&self) -> String {
        format!(
            "{}.{}",
            quote_ident(&self.schema),
            quote_ident(&self.journal_name())
        )
    }

    /// `schema.table` as an operator would write it, for messages.
    pub fn display_state(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }
}

/// Quotes an identifier for SQL: always quoted, `"` doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Half to one and a half times `pause`, from the clock's nanoseconds:
/// enough to spread instances that were turned away at the same moment.
fn jitter(pause: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        ^ std::process::id().wrapping_mul(2_654_435_761);
    pause.mul_f64(0.5 + f64::from(nanos % 1000) / 1000.0)
}

/// Runs a connection, passing on each notification (`LISTEN`) it brings.
fn drive<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
    notified: Arc<tokio::sync::Notify>,
) -> JoinHandle<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(tokio_postgres::AsyncMessage::Notification(_))) => notified.notify_one(),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            }
        }
    })
}

/// One open connection and what was learnt while opening it.
pub struct Store {
    client: Client,
    /// What it was opened with.
    dsn: Dsn,
    connection: JoinHandle<()>,
    /// Woken by a notification on a channel this session listens to.
    notified: Arc<tokio::sync::Notify>,
    server_version: String,
    statements: Option<execute::Statements>,
    backend_pid: Option<i32>,
    /// The server's `port` setting, as read at connect.
    server_port: Option<u16>,
    /// Through a pooler in transaction mode, the length of the lease: then
    /// nothing is set for the session, and each migration's transaction
    /// may stay idle at most that long.
    pooled: Option<Duration>,
}

impl Store {
    /// Opens the connection. Adds a 10 s connect timeout and 30 s TCP
    /// keepalives when the DSN leaves them at the driver's defaults (none
    /// and 2 h), so a dead network is noticed in minutes, not hours.
    pub async fn connect(dsn: &Dsn) -> Result<Store, Error> {
        let mut config = dsn.config.clone();
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        if config.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
            config.keepalives_idle(Duration::from_secs(30));
        }
        let connect_error = |err: tokio_postgres::Error| {
            let failure = DbFailure::from(err);
            // Worth trying again (--wait-for-db): a server that is down,
            // starting or full. Not: a refused password or certificate.
            let retryable = !failure.code.as_deref().is_some_and(|c| c.starts_with("28"))
                && !failure.message.contains("TLS");
            // Connection pressure, which passes by itself: too many clients
            // (53300), or the server starting up or shutting down (57P03).
            let busy = matches!(failure.code.as_deref(), Some("53300" | "57P03"));
            Error::Connect {
                target: dsn.describe(),
                message: failure.to_string(),
                retryable,
                busy,
            }
        };
        let notified = Arc::new(tokio::sync::Notify::new());
        let (client, server_version, connection) = if dsn.tls_mode() == TlsMode::Disable {
            let (client, connection) = config.connect(NoTls).await.map_err(connect_error)?;
            let version = connection
                .parameter("server_version")
                .unwrap_or("")
                .to_owned();
            (client, version, drive(connection, Arc::clone(&notified)))
        } else {
            let tls = tls::connector(dsn)?;
            let (client, connection) = config.connect(tls).await.map_err(connect_error)?;
            let version = connection
                .parameter("server_version")
                .unwrap_or("")
                .to_owned();
            (client, version, drive(connection, Arc::clone(&notified)))
        };
        let store = Store {
            client,
            dsn: dsn.clone(),
            connection,
            notified,
            server_version,
            statements: None,
            backend_pid: None,
            server_port: None,
            pooled: None,
        };
        let mut store = store;
        store.server_port = store.refuse_statement_pooling(dsn).await?;
        Ok(store)
    }

    /// A pooler in statement mode (PgBouncer's `pool_mode=statement`)
    /// allows no transaction of more than one statement, and every
    /// migration is one with its record: refused before anything runs. A
    /// `BEGIN` sent on its own (pipelined with the rest, so it costs one
    /// round trip) is what such a pooler refuses. Returns the server's
    /// `port` setting, read in the same transaction.
    async fn refuse_statement_pooling(&self, dsn: &Dsn) -> Result<Option<u16>, Error> {
        let (begun, port, committed) = tokio::join!(
            self.client.batch_execute("BEGIN"),
            self.client.simple_query("SELECT current_setting('port')"),
            self.client.batch_execute("COMMIT")
        );
        let port = port.map(|messages| {
            messages.iter().find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(row) => {
                    row.get(0).and_then(|v| v.parse::<u16>().ok())
                }
                _ => None,
            })
        });
        match begun.and(port).and_then(|port| committed.map(|()| port)) {
            Ok(port) => Ok(port),
            Err(err)
                if DbFailure::from_ref(&err)
                    .message
                    .contains("statement pooling") =>
            {
                Err(Error::Usage(format!(
                    "{} goes through a connection pooler in statement mode (PgBouncer's \
                     pool_mode=statement), which allows no transaction of more than one \
                     statement, and each migration commits in one with its record: connect \
                     directly, or through a pool in transaction or session mode",
                    dsn.describe()
                )))
            }
            Err(err) => {
                let failure = DbFailure::from(err);
                let busy = matches!(failure.code.as_deref(), Some("53300" | "57P03"));
                if failure.connection_lost || busy || failure.severity.as_deref() == Some("FATAL") {
                    // The connection did not last its first statement: as
                    // good as not connected.
                    Err(Error::Connect {
                        target: dsn.describe(),
                        message: failure.to_string(),
                        retryable: true,
                        busy,
                    })
                } else {
                    Err(Error::Database {
                        context: "cannot start a transaction".into(),
                        failure: Box::new(failure),
                    })
                }
            }
        }
    }

    /// Connects, trying again with backoff (250 ms doubling to 5 s, the
    /// last try at the deadline) for up to `wait` while the failure is one
    /// that may pass (the server is down or starting), and for up to
    /// `busy_wait` while the server is full or starting or stopping (100 ms
    /// doubling to 2 s, with jitter, so that many instances turned away
    /// together do not come back together). `retrying` hears of each failed
    /// try, and whether it was turned away busy. The last error is returned
    /// when the time runs out.
    pub async fn connect_waiting(
        dsn: &Dsn,
        wait: Duration,
        busy_wait: Duration,
        mut retrying: impl FnMut(&str, Duration, bool),
    ) -> Result<Store, Error> {
        let start = std::time::Instant::now();
        let mut pause = Duration::from_millis(250);
        let mut busy_pause = Duration::from_millis(100);
        loop {
            match Store::connect(dsn).await {
                Ok(store) => return Ok(store),
                Err(Error::Connect {
                    message,
                    busy: true,
                    ..
                }) if start.elapsed() < busy_wait.max(wait) => {
                    retrying(&message, start.elapsed(), true);
                    let left = busy_wait.max(wait).saturating_sub(start.elapsed());
                    tokio::time::sleep(jitter(busy_pause).min(left)).await;
                    busy_pause = (busy_pause * 2).min(Duration::from_secs(2));
                }
                Err(Error::Connect {
                    message,
                    retryable: true,
                    ..
                }) if start.elapsed() < wait => {
                    retrying(&message, start.elapsed(), false);
                    tokio::time::sleep(pause.min(wait.saturating_sub(start.elapsed()))).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// This session's server process id, once `prepare_session` has run;
    /// `None` through a pooler in transaction mode, where each transaction
    /// may run on another.
    pub fn backend_pid(&self) -> Option<i32> {
        self.backend_pid
    }

    /// Whether the server listens on a port the DSN dials: if not, something
    /// (a pooler, a proxy, a port forward) stands in between. `None` when
    /// the server did not say.
    pub fn dialled_directly(&self, dsn: &Dsn) -> Option<bool> {
        let port = self.server_port?;
        let dialled = dsn.config.get_ports();
        Some(if dialled.is_empty() {
            port == 5432
        } else {
            dialled.contains(&port)
        })
    }

    /// Runs through a pooler in transaction mode from now on, with a lease of
    /// `length` ([`Store::pooled`]).
    pub fn set_pooled(&mut self, length: Duration) {
        self.pooled = Some(length);
        self.statements = None;
    }

    /// The lease's length when running through a pooler in transaction mode.
    pub fn pooled(&self) -> Option<Duration> {
        self.pooled
    }

    /// The server's version as it reports it (`15.8 (Debian 15.8-1)`).
    pub fn server_version(&self) -> &str {
        &self.server_version
    }

    /// The server's major version (`15`; `9` for 9.6), 0 if unknown.
    pub fn server_major(&self) -> u32 {
        let digits: String = self
            .server_version
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().unwrap_or(0)
    }

    /// Settings for the session that applies migrations: the search path,
    /// and (PostgreSQL 14+) a check for a vanished client every second, so a
    /// killed `migrate` releases its lock and rolls back within a second even
    /// in the middle of a long statement.
    ///
    /// Through a pooler in transaction mode nothing is set: the next
    /// transaction may run on another server connection, and the settings
    /// would stay on this one for other clients. Each script sets what it
    /// needs itself.
    pub async fn prepare_session(&mut self, tracking: &Tracking) -> Result<(), Error> {
        if self.pooled.is_some() {
            self.backend_pid = None;
            return Ok(());
        }
        let schema = quote_ident(&tracking.schema);
        // From PostgreSQL 14 the setting exists: set at once. Looking it
        // up in pg_settings (which builds every setting's row) is for
        // older servers, and for one that says 14 and lacks it.
        let fast = format!(
            "SET search_path TO {schema}; SET client_connection_check_interval = '1s'; \
             SELECT pg_backend_pid()"
        );
        let portable = format!(
            "SET search_path TO {schema};
             SELECT set_config(name, '1s', false) FROM pg_settings
              WHERE name = 'client_connection_check_interval';
             SELECT pg_backend_pid()"
        );
        let first = if self.server_major() >= 14 {
            self.client.simple_query(&fast).await
        } else {
            self.client.simple_query(&portable).await
        };
        let messages = match first {
            Err(err) if err.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_OBJECT) => {
                self.client.simple_query(&portable).await
            }
            other => other,
        }
        .map_err(|err| Error::database("cannot set up the session", err))?;
        self.backend_pid = messages.iter().rev().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).and_then(|v| v.parse().ok()),
            _ => None,
        });
        Ok(())
    }

    /// Whether this connection was opened with `dsn`.
    pub fn dsn_matches(&self, dsn: &Dsn) -> bool {
        self.dsn.same_connection(dsn)
    }

    /// Makes the session as new, for the next target over the same
    /// connection: whatever a migration set for the session (a role, a
    /// search path, a setting without LOCAL) goes with `DISCARD ALL`, as
    /// do this run's bookkeeping statements and the types looked up.
    pub async fn reset(&mut self) -> Result<(), Error> {
        self.statements = None;
        self.backend_pid = None;
        self.client.clear_type_cache();
        self.client
            .batch_execute("DISCARD ALL")
            .await
            .map_err(|err| Error::database("cannot reset the session", err))
    }

    /// Closes the connection cleanly (the server logs no lost client).
    pub async fn close(self) {
        drop(self.client);
        let _ = tokio::time::timeout(Duration::from_secs(1), self.connection).await;
    }

    /// Whether the server answers a trivial query on this connection.
    pub async fn ping(&self) -> bool {
        self.client.simple_query("SELECT 1").await.is_ok()
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    pub(crate) fn client_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}
