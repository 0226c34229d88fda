//! Fleets: one folder of migrations applied to many targets (every
//! tenant schema, or a list of databases) in one call, a few at a time.
//!
//! Each target is migrated as `migrate` alone would migrate it: its own
//! search_path, state table, journal and lock key. A worker keeps its
//! connection from one target to the next on the same database (the
//! session reset between them), so a fleet of N at a time holds at most N
//! connections while it runs; the main connection, which finds the
//! targets, is closed before the first starts.
//!
//! ```no_run
//! # async fn run(migrator: migrate::Migrator) -> Result<(), migrate::Error> {
//! use migrate::fleet::{Fleet, FleetOptions, Operation, Targets};
//! let fleet = Fleet::new(migrator, FleetOptions::default());
//! let chosen = fleet.select(&Targets::EachSchema("tenant_%".into())).await?;
//! let report = fleet
//!     .run(&chosen, &Operation::Up(Default::default()), &migrate::fleet::Quiet)
//!     .await?;
//! assert_eq!(report.exit_code(), 0, "{:?}", report.failures().collect::<Vec<_>>());
//! # Ok(()) }
//! ```

mod shard;
mod targets;

pub use shard::{Shard, shard_of};
pub use targets::{FleetTarget, Targets};

use crate::dsn::Dsn;
use crate::engine::{DownOptions, Migrator, UpOptions};
use crate::error::{Error, exit};
use crate::migration::{MigrationSet, Version};
use crate::report::{
    Activity, AppliedMigration, DownOutcome, DownReport, Event, MigrationRef, Progress, Reporter,
    RunFailed, Silent, StatusReport, UpOutcome, UpReport, ValidateReport,
};
use crate::store::Store;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One target as given: a name, and where it differs from the main
/// connection (its own database, its own schema, or both).
#[derive(Clone, Debug)]
pub struct Target {
    pub name: String,
    pub dsn: Option<Dsn>,
    pub schema: Option<String>,
}

/// How a fleet is run.
#[derive(Clone, Debug)]
pub struct FleetOptions {
    /// Targets at a time (at least 1).
    pub parallel: usize,
    /// The first K targets run alone first; if any fails, no other starts.
    pub canary: usize,
    /// A failure does not stop the targets not yet started.
    pub keep_going: bool,
    /// Only the targets whose name falls in this shard.
    pub shard: Option<Shard>,
    /// Keep each target's whole `status` (every migration's row); without,
    /// only its totals and versions are kept, so a fleet of many thousands
    /// of targets stays small in memory.
    pub details: bool,
}

impl Default for FleetOptions {
    fn default() -> FleetOptions {
        FleetOptions {
            parallel: 4,
            canary: 0,
            keep_going: false,
            shard: None,
            details: true,
        }
    }
}

/// What is done to each target.
#[derive(Clone, Debug)]
pub enum Operation {
    Up(UpOptions),
    /// Needs `to` or `steps`: "the last one" means something else on each
    /// target.
    Down(DownOptions),
    Status,
    Validate,
    /// Wait until each target has nothing pending, all within this long.
    Wait(Duration),
}

impl Operation {
    pub fn name(&self) -> &'static str {
        match self {
            Operation::Up(_) => "up",
            Operation::Down(_) => "down",
            Operation::Status => "status",
            Operation::Validate => "validate",
            Operation::Wait(_) => "wait",
        }
    }
}

/// How one target ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// `up`: nothing was pending.
    UpToDate,
    /// `up`: pending migrations were applied.
    Applied,
    /// `up` or `down` with `--dry-run`.
    DryRun,
    /// `--skip-if-locked` and another instance held the lock.
    SkippedLocked,
    /// Another instance did the work while this one waited for the lock.
    DoneElsewhere,
    /// `down`: rolled back.
    RolledBack,
    /// `down`: nothing in the range was applied.
    NothingToDo,
    /// `status`, `validate`, `wait`: read, and nothing is wrong.
    Checked,
    Failed,
    /// Not started: a failure stopped the fleet first.
    NotStarted,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::UpToDate => "up to date",
            Outcome::Applied => "applied",
            Outcome::DryRun => "dry run",
            Outcome::SkippedLocked => "skipped (locked)",
            Outcome::DoneElsewhere => "done elsewhere",
            Outcome::RolledBack => "rolled back",
            Outcome::NothingToDo => "nothing to do",
            Outcome::Checked => "ok",
            Outcome::Failed => "FAILED",
            Outcome::NotStarted => "not started",
        }
    }
}

/// What a target's operation returned.
#[derive(Debug)]
pub enum Detail {
    Up(UpReport),
    Down(DownReport),
    Status(StatusReport),
    Validated(ValidateReport),
    None,
}

/// One target's row of the summary.
#[derive(Debug)]
pub struct TargetReport {
    pub name: String,
    /// `user@host:port/db`, never the password.
    pub database: String,
    pub schema: String,
    pub outcome: Outcome,
    /// What `up` or `down` committed (on a failure too).
    pub done: Progress,
    pub detail: Detail,
    pub error: Option<Box<Error>>,
    pub duration: Duration,
}

impl TargetReport {
    fn not_started(target: &FleetTarget) -> TargetReport {
        TargetReport {
            name: target.name.clone(),
            database: target.database.dsn.describe(),
            schema: target.database.tracking.schema.clone(),
            outcome: Outcome::NotStarted,
            done: Progress::default(),
            detail: Detail::None,
            error: None,
            duration: Duration::ZERO,
        }
    }

    /// The newest applied version before the run, and after it.
    pub fn versions(&self) -> (Option<&Version>, Option<&Version>) {
        (
            self.done.version_before.as_ref(),
            self.done.version_after.as_ref(),
        )
    }

    /// What a read found (`status`, `validate`, `wait`).
    pub fn totals(&self) -> Option<&crate::plan::Totals> {
        match &self.detail {
            Detail::Status(report) => Some(&report.totals),
            Detail::Validated(report) => Some(&report.totals),
            _ => None,
        }
    }

    /// What is pending, once it was looked at.
    pub fn pending(&self) -> Option<usize> {
        self.totals().map(|t| t.pending).or(self.done.pending)
    }

    /// The exit code this target alone would have given.
    pub fn exit_code(&self) -> i32 {
        self.error.as_ref().map_or(exit::OK, |e| e.exit_code())
    }
}

fn newest_applied(report: &StatusReport) -> Option<&Version> {
    report
        .rows
        .iter()
        .filter(|r| r.status == crate::plan::Status::Applied)
        .map(|r| &r.version)
        .max()
}

/// The targets a fleet runs, once found, checked and sharded.
#[derive(Clone, Debug)]
pub struct Selection {
    pub targets: Vec<FleetTarget>,
    /// How many there were before sharding.
    pub found: usize,
    pub shard: Option<Shard>,
}

/// The whole run.
#[derive(Debug)]
pub struct FleetReport {
    pub operation: &'static str,
    /// In the order the targets were given.
    pub targets: Vec<TargetReport>,
    /// Why targets were left unstarted, if they were.
    pub stopped: Option<String>,
    /// The exit code of a signal that stopped the run (130, 143): it wins
    /// over every target's, since targets were left whatever they did.
    pub interrupted: Option<i32>,
    pub duration: Duration,
}

impl FleetReport {
    /// The most severe of the targets' exit codes: a failed migration (1)
    /// over drift (3) over a bad target (2) over an unreachable one (5)
    /// over a lock not acquired in time (4); 0 when every target is done.
    pub fn exit_code(&self) -> i32 {
        if let Some(code) = self.interrupted {
            return code;
        }
        self.targets
            .iter()
            .map(TargetReport::exit_code)
            .max_by_key(|code| severity(*code))
            .unwrap_or(exit::OK)
    }

    pub fn failures(&self) -> impl Iterator<Item = &TargetReport> {
        self.targets.iter().filter(|t| t.outcome == Outcome::Failed)
    }

    pub fn count(&self, outcome: Outcome) -> usize {
        self.targets.iter().filter(|t| t.outcome == outcome).count()
    }
}

/// Ranks exit codes for [`FleetReport::exit_code`].
pub fn severity(code: i32) -> u8 {
    match code {
        exit::OK => 0,
        exit::LOCK_TIMEOUT => 1,
        exit::UNREACHABLE => 2,
        exit::USAGE => 3,
        exit::DRIFT => 4,
        exit::FAILED => 5,
        _ => 6,
    }
}

/// Hears of each target as it starts and ends; called from the fleet's
/// one task, in the order things happen.
pub trait FleetReporter: Send + Sync {
    fn started(&self, _target: &FleetTarget) {}
    fn finished(&self, _report: &TargetReport) {}
}

/// A fleet reporter that ignores everything.
pub struct Quiet;

impl FleetReporter for Quiet {}

/// A fleet over a migrator's migrations and main database settings.
pub struct Fleet {
    migrator: Migrator,
    options: FleetOptions,
}

impl Fleet {
    pub fn new(migrator: Migrator, options: FleetOptions) -> Fleet {
        Fleet { migrator, options }
    }

    pub fn options(&self) -> &FleetOptions {
        &self.options
    }

    /// The same fleet run another way (a plan that goes on past a
    /// failure, say).
    pub fn with_options(&self, options: FleetOptions) -> Fleet {
        Fleet {
            migrator: self.migrator.clone(),
            options,
        }
    }

    /// Finds the targets (through the main connection, for a pattern or a
    /// query, closed afterwards), checks them and keeps this shard's. A
    /// pattern or query that finds nothing is an error; a shard that gets
    /// none of what was found is not (more pods than targets).
    pub async fn select(&self, source: &Targets) -> Result<Selection, Error> {
        let main = self.migrator.database();
        let found = if source.needs_connection() {
            let store = self.migrator.connect_for(&Silent).await?;
            let found = match source {
                Targets::EachSchema(pattern) => targets::each_schema(store.client(), pattern).await,
                Targets::Query(sql) => {
                    targets::from_query(store.client(), sql, &main.tracking.schema).await
                }
                Targets::Listed(_) => unreachable!("needs no connection"),
            };
            store.close().await;
            found?
        } else {
            match source {
                Targets::Listed(list) => list.clone(),
                _ => unreachable!("needs a connection"),
            }
        };
        if found.is_empty() {
            return Err(Error::Usage(match source {
                Targets::EachSchema(pattern) => format!(
                    "--each-schema {pattern}: no schema of {} matches",
                    main.dsn.describe()
                ),
                Targets::Query(_) => "--targets-query returned no rows: no target to run".into(),
                Targets::Listed(_) => "the list of targets is empty".into(),
            }));
        }
        let prepared = targets::prepare(found, main, source)?;
        let count = prepared.len();
        let targets = match self.options.shard {
            Some(shard) => prepared
                .into_iter()
                .filter(|t| shard.holds(&t.name))
                .collect(),
            None => prepared,
        };
        Ok(Selection {
            targets,
            found: count,
            shard: self.options.shard,
        })
    }

    /// Runs `operation` on every target selected, `parallel` at a time,
    /// the canaries first. A failure starts no new target (unless
    /// `keep_going`; a canary's failure stops the rest always); the
    /// targets running finish. Fails only when the migration files cannot
    /// be read (before any target starts): each target's error is in its
    /// row.
    pub async fn run(
        &self,
        selection: &Selection,
        operation: &Operation,
        reporter: &dyn FleetReporter,
    ) -> Result<FleetReport, Error> {
        self.run_until(selection, operation, reporter, std::future::pending())
            .await
    }

    /// As [`Fleet::run`], until `interrupt` gives an error (a signal):
    /// then the targets running are dropped (their connections close, so
    /// the server rolls back what was in progress), each is reported
    /// failed with that error, and no other starts.
    pub async fn run_until<F>(
        &self,
        selection: &Selection,
        operation: &Operation,
        reporter: &dyn FleetReporter,
        interrupt: F,
    ) -> Result<FleetReport, Error>
    where
        F: std::future::Future<Output = Error>,
    {
        if let Operation::Down(options) = operation
            && options.steps.is_none()
            && options.to.is_none()
        {
            return Err(Error::Usage(
                "down across a fleet needs --to VERSION or --steps N: \"the last migration\" is \
                 not the same one on every target"
                    .into(),
            ));
        }
        let started = Instant::now();
        let targets = &selection.targets;
        let slots: Mutex<Vec<Option<TargetReport>>> =
            Mutex::new(targets.iter().map(|_| None).collect());
        let mut stopped;
        let mut interrupted = None;
        let migrations = self.migrator.migrations().await?;
        let deadline = match operation {
            Operation::Wait(timeout) => Some(started + *timeout),
            _ => None,
        };
        let context = Context {
            migrations,
            operation,
            details: self.options.details,
            deadline,
            reporter,
            slots: &slots,
            stop: AtomicBool::new(false),
            stopped_by: Mutex::new(None),
            running: Mutex::new(Vec::new()),
        };
        let canary = self.options.canary.min(targets.len());
        let parallel = self.options.parallel.max(1);
        let all = async {
            if canary > 0 {
                context
                    .run_all(&targets[..canary], 0, parallel, false)
                    .await;
                if context.stop.load(Ordering::SeqCst) {
                    return Some(format!(
                        "a canary failed ({}): the other targets were not started",
                        context.first_failure().unwrap_or_default()
                    ));
                }
            }
            context
                .run_all(
                    &targets[canary..],
                    canary,
                    parallel,
                    self.options.keep_going,
                )
                .await;
            context.stop.load(Ordering::SeqCst).then(|| {
                format!(
                    "{} failed: the targets not yet started were left (--keep-going goes on \
                     with them)",
                    context.first_failure().unwrap_or_default()
                )
            })
        };
        tokio::select! {
            biased;
            reason = all => stopped = reason,
            error = interrupt => {
                stopped = Some(format!("{error}: the targets not yet started were left"));
                interrupted = Some(error.exit_code());
                let running = context.running.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let mut slots = slots.lock().unwrap_or_else(|e| e.into_inner());
                for (index, tracker) in running {
                    if slots[index].is_none() {
                        let report =
                            tracker.interrupted(TargetReport::not_started(&targets[index]), &error);
                        reporter.finished(&report);
                        slots[index] = Some(report);
                    }
                }
            }
        }
        let slots = slots.into_inner().unwrap_or_else(|e| e.into_inner());
        let reports: Vec<TargetReport> = slots
            .into_iter()
            .zip(targets)
            .map(|(slot, target)| slot.unwrap_or_else(|| TargetReport::not_started(target)))
            .collect();
        if interrupted.is_none() && reports.iter().all(|r| r.outcome != Outcome::NotStarted) {
            stopped = None;
        }
        Ok(FleetReport {
            operation: operation.name(),
            targets: reports,
            stopped,
            interrupted,
            duration: started.elapsed(),
        })
    }
}

/// What a target's run did so far, from the engine's events: kept outside
/// the run, so that the row of a target dropped by a signal still says
/// what committed and what was running.
#[derive(Default)]
struct Tracker(Mutex<Tracked>);

#[derive(Default)]
struct Tracked {
    applied: Vec<AppliedMigration>,
    rolled_back: Vec<AppliedMigration>,
    activity: Activity,
}

impl Reporter for Tracker {
    fn event(&self, event: Event<'_>) {
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        t.activity.follow(&event);
        match event {
            Event::Applied {
                migration, applied, ..
            } => {
                t.applied.push(AppliedMigration {
                    migration: MigrationRef::of(migration),
                    duration: applied.duration,
                });
            }
            Event::RolledBack {
                migration, done, ..
            } => {
                t.rolled_back.push(AppliedMigration {
                    migration: MigrationRef::of(migration),
                    duration: done.duration,
                });
            }
            _ => {}
        }
    }
}

impl Tracker {
    /// The row of a target a signal (`error`) dropped while it ran.
    fn interrupted(&self, mut report: TargetReport, error: &Error) -> TargetReport {
        let t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let signal = error.exit_code() - 128;
        let name = nix::sys::signal::Signal::try_from(signal).map_or("a signal", |s| s.as_str());
        let message = t.activity.interrupted_line(name);
        report.done.applied = t.applied.clone();
        report.done.rolled_back = t.rolled_back.clone();
        report.done.version_after = t
            .applied
            .iter()
            .map(|a| &a.migration.version)
            .max()
            .cloned();
        report.outcome = Outcome::Failed;
        report.error = Some(Box::new(Error::Interrupted { signal, message }));
        report
    }
}

/// What the workers share.
struct Context<'a> {
    migrations: Arc<MigrationSet>,
    operation: &'a Operation,
    details: bool,
    deadline: Option<Instant>,
    reporter: &'a dyn FleetReporter,
    slots: &'a Mutex<Vec<Option<TargetReport>>>,
    /// Set by a failure: no new target starts.
    stop: AtomicBool,
    /// The first target that failed, for the summary.
    stopped_by: Mutex<Option<String>>,
    /// The targets started and not finished, by number in the selection,
    /// each with what it did so far.
    running: Mutex<Vec<(usize, Arc<Tracker>)>>,
}

impl Context<'_> {
    fn first_failure(&self) -> Option<String> {
        self.stopped_by
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Runs `targets` (whose first is number `offset` of the selection)
    /// with `parallel` workers taking the next one in turn.
    async fn run_all(
        &self,
        targets: &[FleetTarget],
        offset: usize,
        parallel: usize,
        keep_going: bool,
    ) {
        let next = Mutex::new(0usize);
        let take = || {
            if self.stop.load(Ordering::SeqCst) {
                return None;
            }
            let mut next = next.lock().unwrap_or_else(|e| e.into_inner());
            let index = *next;
            if index >= targets.len() {
                return None;
            }
            *next += 1;
            Some(index)
        };
        let workers = (0..parallel.min(targets.len())).map(|_| async {
            let mut kept: Option<Store> = None;
            while let Some(index) = take() {
                let target = &targets[index];
                self.reporter.started(target);
                let tracker = Arc::new(Tracker::default());
                self.running
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((offset + index, Arc::clone(&tracker)));
                let report = self.run_one(target, &mut kept, &tracker).await;
                self.running
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .retain(|(i, _)| *i != offset + index);
                if report.outcome == Outcome::Failed {
                    self.stopped_by
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get_or_insert_with(|| report.name.clone());
                    if !keep_going {
                        self.stop.store(true, Ordering::SeqCst);
                    }
                }
                self.reporter.finished(&report);
                self.slots.lock().unwrap_or_else(|e| e.into_inner())[offset + index] = Some(report);
            }
            if let Some(store) = kept {
                store.close().await;
            }
        });
        futures_util::future::join_all(workers).await;
    }

    /// One target, over the worker's kept connection when it goes to the
    /// same place (reset first); a connection that saw an error is not
    /// kept.
    async fn run_one(
        &self,
        target: &FleetTarget,
        kept: &mut Option<Store>,
        tracker: &Tracker,
    ) -> TargetReport {
        let start = Instant::now();
        let migrator = Migrator::shared(Arc::clone(&self.migrations), target.database.clone());
        let mut report = TargetReport::not_started(target);
        if let Operation::Wait(_) = self.operation {
            // Waiting polls on a connection of its own, for what is left of
            // the time.
            let left = self.deadline.map_or(Duration::ZERO, |d| {
                d.saturating_duration_since(Instant::now())
            });
            let result = migrator.wait_until_applied(left, &Silent).await;
            finish(&mut report, result.map(Detail::Validated), start);
            return report;
        }
        let reusable = match kept.take() {
            Some(mut store) if store.dsn_matches(&target.database.dsn) => {
                match store.reset().await {
                    Ok(()) => Some(store),
                    Err(_) => {
                        store.close().await;
                        None
                    }
                }
            }
            Some(store) => {
                store.close().await;
                None
            }
            None => None,
        };
        let mut store = match reusable {
            Some(store) => store,
            None => match migrator.connect_for(&Silent).await {
                Ok(store) => store,
                Err(err) => {
                    finish(&mut report, Err(err), start);
                    return report;
                }
            },
        };
        let healthy = match self.operation {
            Operation::Up(options) => {
                let result = migrator.up_with(Some(&mut store), options, tracker).await;
                run_finished(&mut report, result, start, |r| {
                    (
                        match r.outcome {
                            UpOutcome::UpToDate | UpOutcome::Skipped => Outcome::UpToDate,
                            UpOutcome::Applied => Outcome::Applied,
                            UpOutcome::DryRun => Outcome::DryRun,
                            UpOutcome::SkippedLocked => Outcome::SkippedLocked,
                            UpOutcome::DoneElsewhere => Outcome::DoneElsewhere,
                        },
                        r.done.clone(),
                        Detail::Up(r),
                    )
                })
            }
            Operation::Down(options) => {
                let result = migrator.down_with(Some(&mut store), options, tracker).await;
                run_finished(&mut report, result, start, |r| {
                    (
                        match r.outcome {
                            DownOutcome::NothingToDo => Outcome::NothingToDo,
                            DownOutcome::RolledBack => Outcome::RolledBack,
                            DownOutcome::DryRun => Outcome::DryRun,
                            DownOutcome::SkippedLocked => Outcome::SkippedLocked,
                        },
                        r.done.clone(),
                        Detail::Down(r),
                    )
                })
            }
            Operation::Status => {
                let result = migrator.status_over(&store).await.map(|mut status| {
                    let newest = newest_applied(&status).cloned();
                    report.done.version_before.clone_from(&newest);
                    report.done.version_after = newest;
                    if !self.details {
                        status.rows = Vec::new();
                        status.out_of_order = Vec::new();
                        status.unrecorded = Vec::new();
                    }
                    Detail::Status(status)
                });
                finish(&mut report, result, start)
            }
            Operation::Validate => {
                let result = migrator
                    .validate_over(&store)
                    .await
                    .map(|(validated, newest)| {
                        report.done.version_before.clone_from(&newest);
                        report.done.version_after = newest;
                        Detail::Validated(validated)
                    });
                finish(&mut report, result, start)
            }
            Operation::Wait(_) => unreachable!("handled above"),
        };
        if healthy {
            *kept = Some(store);
        } else {
            store.close().await;
        }
        report
    }
}

/// Fills in a read's outcome; returns whether it succeeded.
fn finish(report: &mut TargetReport, result: Result<Detail, Error>, start: Instant) -> bool {
    report.duration = start.elapsed();
    match result {
        Ok(detail) => {
            report.outcome = Outcome::Checked;
            report.detail = detail;
            true
        }
        Err(err) => {
            report.outcome = Outcome::Failed;
            report.error = Some(Box::new(err));
            false
        }
    }
}

/// Fills in an `up`'s or `down`'s outcome; returns whether it succeeded.
fn run_finished<R>(
    report: &mut TargetReport,
    result: Result<R, RunFailed>,
    start: Instant,
    outcome: impl FnOnce(R) -> (Outcome, Progress, Detail),
) -> bool {
    report.duration = start.elapsed();
    match result {
        Ok(r) => {
            let (outcome, done, detail) = outcome(r);
            report.outcome = outcome;
            report.done = done;
            report.detail = detail;
            true
        }
        Err(failed) => {
            report.outcome = Outcome::Failed;
            report.done = failed.done;
            report.error = Some(failed.cause);
            false
        }
    }
}
