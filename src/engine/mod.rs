//! The `Migrator`: the one path every caller takes to read or change a
//! schema. Connect (reading the files meanwhile), read the state, plan,
//! take the lock, read the state again, run.

mod bootstrap;
mod down;
mod lock;
mod repair;
mod run;
mod up;

use crate::dsn::Dsn;
use crate::error::{Error, OutOfOrder};
use crate::migration::{FileProblem, MigrationSet, ScannedFolder, Script, Version, sql};
use crate::plan::{self, Step};
use crate::report::{Event, HistoryReport, LockReport, Reporter, StatusReport, ValidateReport};
use crate::state::DbState;
use crate::store::{SessionSettings, StateDetail, Store, Tracking};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use bootstrap::Bootstrap;
pub use down::DownOptions;
pub use repair::RepairOptions;
pub use up::UpOptions;

/// How long a busy server is tried again when the lock is not waited for
/// (`--skip-if-locked`, `--safe=false`).
pub const BUSY_WAIT: Duration = Duration::from_secs(60);

/// The lease's length unless set otherwise (`--lock-lease`): how long a
/// killed runner's claim through a pooler lasts before another run may take
/// it over.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// What stands between `migrate` and the server, as the operator says
/// (`--pooler`); it decides the kind of migration lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Pooler {
    /// Decided per connection: a server listening on another port than the
    /// one dialled is taken to be behind a pooler.
    #[default]
    Auto,
    /// A direct connection: a session advisory lock.
    None,
    /// A pooler in session mode, which keeps each client's server
    /// connection: a session advisory lock.
    Session,
    /// A pooler in transaction mode: a lease.
    Transaction,
}

impl Pooler {
    pub fn parse(value: &str) -> Option<Pooler> {
        match value.trim().to_ascii_lowercase().as_str() {
            "auto" => Some(Pooler::Auto),
            "none" | "direct" => Some(Pooler::None),
            "session" => Some(Pooler::Session),
            "transaction" => Some(Pooler::Transaction),
            _ => None,
        }
    }
}

/// How `up`, `down` and `repair` treat the migration lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMode {
    /// Wait for it, at most this long.
    Wait(Duration),
    /// Return at once, successfully, if another instance holds it.
    SkipIfLocked,
    /// Take no lock (`--safe=false`): for a single instance only.
    Off,
}

/// Everything the engine needs to know about the database side.
#[derive(Clone, Debug)]
pub struct Database {
    pub dsn: Dsn,
    pub tracking: Tracking,
    pub lock: LockMode,
    /// `None`: derived from database, schema and table.
    pub lock_key: Option<i64>,
    /// What stands in front of the server: decides advisory lock or lease.
    pub pooler: Pooler,
    /// How long a lease lasts unless renewed.
    pub lease: Duration,
    /// Recorded as `applied_by` and in the journal. `None`: `user@host` of
    /// this process, looked up only when there is something to record.
    pub actor: Option<String>,
    /// `lock_timeout` and `statement_timeout` for every migration.
    pub session: SessionSettings,
    /// How long to keep trying the first connection (`--wait-for-db`);
    /// zero tries once.
    pub wait_for_db: Duration,
    /// Scripts `up` runs after the migrations, every time; `None` runs none.
    pub bootstrap: Option<Bootstrap>,
}

/// Where the migrations come from.
#[derive(Clone)]
enum Source {
    /// Already read (embedded in a binary, or loaded by the caller).
    Loaded(Arc<MigrationSet>),
    /// A folder whose names are checked; the contents are read while the
    /// connection is being opened.
    Folder(Arc<ScannedFolder>),
}

#[derive(Clone)]
pub struct Migrator {
    source: Source,
    database: Database,
}

impl Migrator {
    /// A migrator for migrations already read.
    pub fn new(migrations: MigrationSet, database: Database) -> Migrator {
        Migrator {
            source: Source::Loaded(Arc::new(migrations)),
            database,
        }
    }

    /// A migrator for a folder whose names were checked by
    /// [`scan`](crate::migration::scan). The contents are read concurrently
    /// with connecting, which with many files is most of the start-up time.
    pub fn from_folder(folder: ScannedFolder, database: Database) -> Migrator {
        Migrator {
            source: Source::Folder(Arc::new(folder)),
            database,
        }
    }

    /// A migrator over a set already read and shared (a fleet's targets).
    pub(crate) fn shared(migrations: Arc<MigrationSet>, database: Database) -> Migrator {
        Migrator {
            source: Source::Loaded(migrations),
            database,
        }
    }

    pub fn database(&self) -> &Database {
        &self.database
    }

    /// A migrator over the same migrations with other database settings
    /// (a server's runs, each recorded with the caller as its actor).
    pub fn with_database(&self, database: Database) -> Migrator {
        Migrator {
            source: self.source.clone(),
            database,
        }
    }

    /// The migrations: a folder's contents are read (and checked) anew on
    /// each call; a set already read is shared.
    pub async fn migrations(&self) -> Result<Arc<MigrationSet>, Error> {
        self.load().await
    }

    async fn load(&self) -> Result<Arc<MigrationSet>, Error> {
        match &self.source {
            Source::Loaded(set) => Ok(Arc::clone(set)),
            Source::Folder(folder) => {
                let folder = Arc::clone(folder);
                tokio::task::spawn_blocking(move || folder.load())
                    .await
                    // The task is never cancelled; a panic in it is a bug
                    // and stays one.
                    .unwrap_or_else(|err| std::panic::resume_unwind(err.into_panic()))
                    .map(Arc::new)
                    .map_err(Error::Files)
            }
        }
    }

    /// Connects, trying again for `--wait-for-db`.
    async fn connect(&self, reporter: &dyn Reporter) -> Result<Store, Error> {
        let busy_wait = self.busy_wait();
        let mut said_busy = false;
        let store = Store::connect_waiting(
            &self.database.dsn,
            self.database.wait_for_db,
            busy_wait,
            |error, waited, busy| {
                if !busy {
                    reporter.event(Event::WaitingForDatabase { error, waited });
                } else if !said_busy {
                    said_busy = true;
                    reporter.event(Event::ServerBusy {
                        error,
                        limit: busy_wait,
                    });
                }
            },
        )
        .await?;
        reporter.event(Event::Connected {
            target: &self.database.dsn.describe(),
            server_version: store.server_version(),
        });
        Ok(store)
    }

    /// How long a connection the server turns away busy (too many clients,
    /// starting, stopping) is tried again: as long as the lock may be
    /// waited for, else [`BUSY_WAIT`].
    fn busy_wait(&self) -> Duration {
        match self.database.lock {
            LockMode::Wait(limit) => limit,
            LockMode::SkipIfLocked | LockMode::Off => BUSY_WAIT,
        }
    }

    /// Reads the files and, at the same time, connects and reads the state
    /// (with the applies the journal remembers and the state table lost,
    /// when something is pending).
    /// A problem with the files wins over one with the connection: it is
    /// the operator's to fix either way, and it is certain.
    async fn open(
        &self,
        detail: StateDetail,
        reporter: &dyn Reporter,
    ) -> Result<(Arc<MigrationSet>, Store, DbState), Error> {
        let tracking = &self.database.tracking;
        let connect = async {
            let store = self.connect(reporter).await?;
            match store.read_state(tracking, detail).await {
                Ok(state) => Ok((store, state)),
                Err(err) => {
                    store.close().await;
                    Err(err)
                }
            }
        };
        let (files, connected) = tokio::join!(self.load(), connect);
        match (files, connected) {
            (Ok(files), Ok((store, mut state))) => {
                // Only with something pending can a lost row matter: the
                // start-up path of a replica with nothing to do skips it.
                match look_for_lost_rows(store.client(), tracking, &files, &mut state).await {
                    Ok(()) => Ok((files, store, state)),
                    Err(err) => {
                        store.close().await;
                        Err(err)
                    }
                }
            }
            (Err(err), Ok((store, _))) => {
                store.close().await;
                Err(err)
            }
            (Err(err), Err(_)) | (Ok(_), Err(err)) => Err(err),
        }
    }

    /// As [`Migrator::open`], over a connection the caller keeps from one
    /// target to the next (a fleet's worker).
    async fn read_over(
        &self,
        store: &Store,
        detail: StateDetail,
    ) -> Result<(Arc<MigrationSet>, DbState), Error> {
        let migrations = self.load().await?;
        let tracking = &self.database.tracking;
        let mut state = store.read_state(tracking, detail).await?;
        look_for_lost_rows(store.client(), tracking, &migrations, &mut state).await?;
        Ok((migrations, state))
    }

    /// `status` over a connection the caller keeps.
    pub(crate) async fn status_over(&self, store: &Store) -> Result<StatusReport, Error> {
        let (migrations, state) = self.read_over(store, StateDetail::Full).await?;
        Ok(status_report(&migrations, &state))
    }

    /// `validate` over a connection the caller keeps, with the newest
    /// applied version.
    pub(crate) async fn validate_over(
        &self,
        store: &Store,
    ) -> Result<(ValidateReport, Option<Version>), Error> {
        let (migrations, state) = self.read_over(store, StateDetail::Plan).await?;
        let newest = plan::newest_applied(&state.rows).cloned();
        validate_state(&migrations, &state).map(|report| (report, newest))
    }

    /// Connects as the settings say (waiting for `--wait-for-db`), for a
    /// caller that runs several targets over one connection.
    pub(crate) async fn connect_for(&self, reporter: &dyn Reporter) -> Result<Store, Error> {
        self.connect(reporter).await
    }

    /// Every version with its status; reads only, creates nothing.
    pub async fn status(&self, reporter: &dyn Reporter) -> Result<StatusReport, Error> {
        let (migrations, store, state) = self.open(StateDetail::Full, reporter).await?;
        store.close().await;
        Ok(status_report(&migrations, &state))
    }

    /// `status` over a connection the caller holds (a pooled one).
    pub async fn status_on(&self, client: &tokio_postgres::Client) -> Result<StatusReport, Error> {
        let migrations = self.load().await?;
        let tracking = &self.database.tracking;
        let mut state = crate::store::read_state(client, tracking, StateDetail::Full).await?;
        look_for_lost_rows(client, tracking, &migrations, &mut state).await?;
        Ok(status_report(&migrations, &state))
    }

    /// `history` over a connection the caller holds.
    pub async fn history_on(
        &self,
        client: &tokio_postgres::Client,
    ) -> Result<HistoryReport, Error> {
        let entries = crate::store::read_journal(client, &self.database.tracking).await?;
        Ok(HistoryReport { entries })
    }

    /// The journal, oldest first; reads only, creates nothing.
    pub async fn history(&self, reporter: &dyn Reporter) -> Result<HistoryReport, Error> {
        let store = self.connect(reporter).await?;
        let entries = store.read_journal(&self.database.tracking).await;
        store.close().await;
        Ok(HistoryReport { entries: entries? })
    }

    /// Creates the schema and the tracking tables if they are missing, under
    /// the lock, as the first `up` would; changes nothing else.
    pub async fn init(&self, reporter: &dyn Reporter) -> Result<(), Error> {
        let mut store = self.connect(reporter).await?;
        let result = async {
            let tracking = &self.database.tracking;
            let state = store.read_state(tracking, StateDetail::Plan).await?;
            let locked =
                lock::acquire(&mut store, &self.database, &state.database, reporter).await?;
            if let lock::Locked::Skipped = locked {
                return Ok(());
            }
            let key = lock::key_of(&self.database, &state.database, tracking);
            let created = match store.ensure_tracking_tables(tracking).await {
                Ok(()) => store.ensure_lease_table(tracking, key).await,
                Err(err) => Err(err),
            };
            let released = locked.release(&store, &self.database).await;
            created.and(released)
        }
        .await;
        store.close().await;
        result
    }

    /// Waits until every migration of the folder is applied (none pending,
    /// none failed), polling the state every second; reads only. Drift
    /// ends the wait at once (exit 3); so does a pending file older than
    /// the newest applied one, which no `up` applies by itself, and an
    /// error that waiting does not cure (no privilege on the schema,
    /// another tool's table). While the server cannot be reached or goes
    /// away, it keeps trying until the time is up, then returns the last
    /// error.
    pub async fn wait_until_applied(
        &self,
        timeout: Duration,
        reporter: &dyn Reporter,
    ) -> Result<ValidateReport, Error> {
        let start = std::time::Instant::now();
        let migrations = self.load().await?;
        let tracking = &self.database.tracking;
        let mut store: Option<Store> = None;
        let mut last: Option<(usize, usize)> = None;
        // What was still to do at the last look, for the timeout's message.
        let mut waiting: Vec<String> = Vec::new();
        loop {
            // Every call to the server is bounded by the time left (with a
            // moment's grace for the last look): a server that stops
            // answering on an open connection must not outlast --timeout.
            let remaining = timeout.saturating_sub(start.elapsed());
            let bound = remaining.max(Duration::from_millis(500));
            let timed_out = |waiting: &[String]| Error::WaitTimeout {
                waited: timeout,
                waiting: if waiting.is_empty() {
                    vec!["(the database did not answer in time)".into()]
                } else {
                    waiting.to_vec()
                },
            };
            if store.is_none() {
                // Keeps trying while the failure may pass (the server
                // down or starting); a refused password ends the wait.
                let waited_before = start.elapsed();
                let connect = Store::connect_waiting(
                    &self.database.dsn,
                    remaining,
                    remaining,
                    |error, waited, _busy| {
                        reporter.event(Event::WaitingForDatabase {
                            error,
                            waited: waited_before + waited,
                        })
                    },
                );
                match tokio::time::timeout(bound, connect).await {
                    Ok(open) => store = Some(open?),
                    Err(_) => return Err(timed_out(&waiting)),
                }
            }
            if let Some(open) = &store {
                let read =
                    tokio::time::timeout(bound, open.read_state(tracking, StateDetail::Plan));
                let Ok(read) = read.await else {
                    if let Some(open) = store.take() {
                        open.close().await;
                    }
                    return Err(timed_out(&waiting));
                };
                let read = match read {
                    Ok(mut state) => {
                        look_for_lost_rows(open.client(), tracking, &migrations, &mut state)
                            .await
                            .map(|()| state)
                    }
                    Err(err) => Err(err),
                };
                match read {
                    Ok(state) => {
                        let steps = plan::pending(&migrations, &state.rows, None);
                        check_drift(&migrations, &state, &out_of_order(&steps, &state))?;
                        let rows = plan::status_rows(&migrations, &state.rows);
                        let totals = plan::totals(&rows);
                        if totals.pending == 0 && totals.failed == 0 {
                            if let Some(open) = store.take() {
                                open.close().await;
                            }
                            return Ok(ValidateReport { totals });
                        }
                        let now = (totals.pending, totals.failed);
                        if last != Some(now) {
                            reporter.event(Event::WaitingForMigrations {
                                pending: totals.pending,
                                failed: totals.failed,
                                waited: start.elapsed(),
                            });
                            last = Some(now);
                        }
                        waiting = rows
                            .iter()
                            .filter(|r| {
                                matches!(r.status, plan::Status::Pending | plan::Status::Failed)
                            })
                            .map(|r| format!("{}_{} ({})", r.version, r.name, r.status.label()))
                            .collect();
                        if start.elapsed() >= timeout {
                            if let Some(open) = store.take() {
                                open.close().await;
                            }
                            return Err(timed_out(&waiting));
                        }
                    }
                    Err(err) if passes(&err) && start.elapsed() < timeout => store = None,
                    Err(err) => {
                        if let Some(open) = store.take() {
                            open.close().await;
                        }
                        return Err(err);
                    }
                }
            }
            tokio::time::sleep(Duration::from_secs(1).min(timeout.saturating_sub(start.elapsed())))
                .await;
        }
    }

    /// Who holds the migration lock; reads only.
    pub async fn lock_status(&self, reporter: &dyn Reporter) -> Result<LockReport, Error> {
        let store = self.connect(reporter).await?;
        let result = async {
            let tracking = &self.database.tracking;
            let key = match self.database.lock_key {
                Some(key) => key,
                None => {
                    let state = store.read_state(tracking, StateDetail::Plan).await?;
                    lock::key_of(&self.database, &state.database, tracking)
                }
            };
            Ok(LockReport {
                key,
                holder: store.lock_holder(tracking, key).await?,
            })
        }
        .await;
        store.close().await;
        result
    }

    /// `lock_status` over a connection the caller holds (a pooled one).
    pub async fn lock_on(&self, client: &tokio_postgres::Client) -> Result<LockReport, Error> {
        let tracking = &self.database.tracking;
        let key = match self.database.lock_key {
            Some(key) => key,
            None => {
                let row = client
                    .query_one("SELECT current_database()", &[])
                    .await
                    .map_err(|err| Error::database("cannot read the database's name", err))?;
                lock::key_of(&self.database, row.get(0), tracking)
            }
        };
        Ok(LockReport {
            key,
            holder: crate::store::lock_holder(client, tracking, key).await?,
        })
    }

    /// Compares files and database; reads only. Drift (CHANGED or MISSING
    /// applied files, pending files older than the newest applied one) is
    /// an error, exit 3.
    pub async fn validate(&self, reporter: &dyn Reporter) -> Result<ValidateReport, Error> {
        let (migrations, store, state) = self.open(StateDetail::Plan, reporter).await?;
        store.close().await;
        validate_state(&migrations, &state)
    }
}

/// Drift is an error; otherwise the totals.
fn validate_state(migrations: &MigrationSet, state: &DbState) -> Result<ValidateReport, Error> {
    let steps = plan::pending(migrations, &state.rows, None);
    check_drift(migrations, state, &out_of_order(&steps, state))?;
    let rows = plan::status_rows(migrations, &state.rows);
    Ok(ValidateReport {
        totals: plan::totals(&rows),
    })
}

/// The status of every version, with what `up` would refuse.
fn status_report(migrations: &MigrationSet, state: &DbState) -> StatusReport {
    let rows = plan::status_rows(migrations, &state.rows);
    let totals = plan::totals(&rows);
    let steps = plan::pending(migrations, &state.rows, None);
    StatusReport {
        out_of_order: out_of_order(&steps, state),
        unrecorded: plan::drift(migrations, state)
            .into_iter()
            .filter(|d| matches!(d.drift, plan::Drift::Unrecorded { .. }))
            .collect(),
        rows,
        totals,
    }
}

/// Reads which versions the journal says were applied while their rows are
/// gone, when anything is pending: only then can it matter.
pub(super) async fn look_for_lost_rows(
    client: &tokio_postgres::Client,
    tracking: &Tracking,
    migrations: &MigrationSet,
    state: &mut DbState,
) -> Result<(), Error> {
    if !plan::pending(migrations, &state.rows, None).is_empty() {
        state.unrecorded =
            crate::store::read_unrecorded(client, tracking, state.rows.len()).await?;
    }
    Ok(())
}

/// Pending steps older than the newest applied version, for messages.
fn out_of_order(steps: &[Step], state: &DbState) -> Vec<OutOfOrder> {
    let newest = plan::newest_applied(&state.rows).map(|v| v.to_string());
    plan::out_of_order(steps, &state.rows)
        .into_iter()
        .map(|s| OutOfOrder {
            label: s.migration.label(),
            newest_applied: newest.clone().unwrap_or_default(),
        })
        .collect()
}

/// Refuses to go on over CHANGED or MISSING applied migrations, or over
/// the out-of-order pending ones given.
fn check_drift(
    migrations: &MigrationSet,
    state: &DbState,
    out_of_order: &[OutOfOrder],
) -> Result<(), Error> {
    let drifted = plan::drift(migrations, state);
    if drifted.is_empty() && out_of_order.is_empty() {
        Ok(())
    } else {
        Err(Error::Drift {
            drifted,
            out_of_order: out_of_order.to_vec(),
        })
    }
}

/// Refuses, before anything runs, transactional scripts that would take
/// over the transaction they run in (their work would not commit with
/// its record), and statement-by-statement scripts that cannot be split.
/// A transactional file the lexer cannot read is left to the server.
fn check_scripts<'a>(scripts: impl Iterator<Item = &'a Script>) -> Result<(), Error> {
    let problems: Vec<FileProblem> = scripts
        .filter_map(|script| {
            let reason = match (sql::split(&script.sql), script.transactional) {
                (Err(err), false) => {
                    format!("{err}; a `-- migrate:no-transaction` file must split into statements")
                }
                (Err(_), true) => return None,
                (Ok(statements), _) if statements.iter().any(|s| s.copy_from_stdin) => {
                    let line = statements.iter().find(|s| s.copy_from_stdin)?.line;
                    format!(
                        "line {line}: COPY ... FROM STDIN needs data sent alongside the \
                         statement, which a migration cannot do; use INSERT, or COPY from a \
                         file on the server"
                    )
                }
                (Ok(statements), true) => {
                    let (line, keyword) = statements
                        .iter()
                        .find_map(|s| s.transaction_control().map(|k| (s.line, k)))?;
                    format!(
                        "line {line}: {keyword} would take over the transaction the migration \
                         runs in, so its work would not commit together with its record; remove \
                         the file's transaction statements (each migration already runs in one \
                         transaction)"
                    )
                }
                (Ok(_), false) => return None,
            };
            Some(FileProblem {
                path: script.path.clone(),
                reason,
            })
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Files(problems))
    }
}

fn applied_count(rows: &[crate::state::StateRow]) -> usize {
    rows.iter()
        .filter(|r| r.status == crate::state::RowStatus::Applied)
        .count()
}

/// Checks that `version` names a migration of the folder.
fn known_version(migrations: &MigrationSet, version: &Version, flag: &str) -> Result<(), Error> {
    if migrations.find(version).is_none() {
        return Err(Error::Usage(format!(
            "{flag} {version}: no migration file in {} has that version",
            display_dir(&migrations.dir)
        )));
    }
    Ok(())
}

fn display_dir(dir: &Path) -> String {
    dir.display().to_string()
}

/// `true false 1 0 yes no`, any case.
pub fn parse_switch(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

/// An environment switch (`SKIP_MIGRATIONS`): `None` when unset or empty,
/// an error naming the variable and value when it is not a switch value.
pub fn env_switch(name: &str) -> Result<Option<bool>, Error> {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => {
            parse_switch(&value).map(Some).ok_or_else(|| Error::Config {
                origin: name.to_owned(),
                message: format!("`{value}` is not one of true, false, 1, 0, yes, no"),
            })
        }
        _ => Ok(None),
    }
}

/// `user@host`: who ran a migration, for `applied_by` and the journal. In
/// Kubernetes the host name is the pod's name.
pub fn default_actor() -> String {
    let user = std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|u| u.name)
        })
        .unwrap_or_else(|| format!("uid {}", nix::unistd::getuid()));
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown-host".into());
    format!("{user}@{host}")
}

/// Whether an error reading the state may pass by itself: the connection
/// was lost, or the server is shutting down, starting or out of
/// connections (SQLSTATE classes 08, 57 and 53).
fn passes(err: &Error) -> bool {
    match err {
        Error::Database { failure, .. } => {
            failure.connection_lost
                || failure
                    .code
                    .as_deref()
                    .is_some_and(|c| ["08", "57", "53"].iter().any(|class| c.starts_with(class)))
        }
        _ => false,
    }
}
