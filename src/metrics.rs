//! Prometheus metrics of a run, written for node-exporter's textfile
//! collector (`--metrics-file`): written whole to a temporary file in the
//! same folder, then renamed over the target, so the collector never reads
//! half a file.

use crate::error::Error;
use crate::report::Progress;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Buckets for migration durations: 10 ms to about 20 minutes.
const DURATION_BUCKETS: [f64; 12] = [
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0, 300.0, 1200.0,
];

/// What runs did, as far as the metrics tell it.
#[derive(Default, Debug)]
struct Recorded {
    /// (version, `applied` | `failed` | `rolled_back`, duration)
    migrations: Vec<(String, &'static str, Duration)>,
    lock_wait: Duration,
    pending: Option<usize>,
}

impl Recorded {
    /// Adds what a run did.
    fn add(&mut self, done: &Progress) {
        let outcomes = [
            (&done.applied[..], "applied"),
            (&done.rolled_back[..], "rolled_back"),
            (done.failed.as_slice(), "failed"),
        ];
        for (list, status) in outcomes {
            self.migrations.extend(
                list.iter()
                    .map(|m| (m.migration.version.to_string(), status, m.duration)),
            );
        }
        self.lock_wait = done.lock_waited;
        if done.pending.is_some() {
            self.pending = done.pending;
        }
    }
}

/// Writes the metrics of a run to `path` atomically: what it did
/// (`done`), and whether it succeeded.
pub fn write_run(path: &Path, done: &Progress, success: bool) -> Result<(), Error> {
    let mut recorded = Recorded::default();
    recorded.add(done);
    let text = render(&recorded, Some((success, unix_now())));
    write_atomically(path, &text).map_err(|err| Error::Config {
        origin: path.display().to_string(),
        message: format!("cannot write the metrics file: {err}"),
    })
}

/// Writes the metrics of a fleet's run: the migrations of every target
/// together (as one run's are), the pending ones summed and the longest
/// lock wait; then per target, labelled `target`, four gauges (its
/// outcome, migrations applied or rolled back, pending, and how long it
/// took), so a fleet of T targets adds 4×T series. The run succeeded when
/// every target did.
pub fn write_fleet(path: &Path, report: &crate::fleet::FleetReport) -> Result<(), Error> {
    let mut recorded = Recorded::default();
    let mut lock_wait = Duration::ZERO;
    let mut pending = None::<usize>;
    for target in &report.targets {
        recorded.add(&target.done);
        lock_wait = lock_wait.max(target.done.lock_waited);
        if let Some(p) = target.pending() {
            pending = Some(pending.unwrap_or(0) + p);
        }
    }
    recorded.lock_wait = lock_wait;
    recorded.pending = pending;
    let success = report.exit_code() == crate::error::exit::OK;
    let mut text = render(&recorded, Some((success, unix_now())));
    text.push_str(&render_targets(report));
    write_atomically(path, &text).map_err(|err| Error::Config {
        origin: path.display().to_string(),
        message: format!("cannot write the metrics file: {err}"),
    })
}

fn render_targets(report: &crate::fleet::FleetReport) -> String {
    let mut registry = Registry::default();
    let outcome = Family::<Labels, Gauge>::default();
    registry.register(
        "migrate_target_outcome",
        "1 for each target, labelled with how its last run ended",
        outcome.clone(),
    );
    let changed = Family::<Labels, Gauge>::default();
    registry.register(
        "migrate_target_migrations",
        "Migrations the last run applied (or rolled back) on each target",
        changed.clone(),
    );
    let pending = Family::<Labels, Gauge>::default();
    registry.register(
        "migrate_target_pending_migrations",
        "Migrations pending on each target at the end of the last run",
        pending.clone(),
    );
    let took = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    registry.register(
        "migrate_target_duration_seconds",
        "How long the last run took on each target",
        took.clone(),
    );
    for target in &report.targets {
        let name = ("target".to_owned(), target.name.clone());
        let label = serde_json::to_value(target.outcome)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        outcome
            .get_or_create(&vec![name.clone(), ("outcome".to_owned(), label)])
            .set(1);
        changed
            .get_or_create(&vec![name.clone()])
            .set((target.done.applied.len() + target.done.rolled_back.len()) as i64);
        if let Some(p) = target.pending() {
            pending.get_or_create(&vec![name.clone()]).set(p as i64);
        }
        took.get_or_create(&vec![name])
            .set(target.duration.as_secs_f64());
    }
    let mut text = String::new();
    encode(&mut text, &registry).expect("writing to a String does not fail");
    text_format(&text)
}

type Labels = Vec<(String, String)>;

/// The metrics of a long-running process (`migrate serve`): every run's
/// migrations add up, the gauges tell of the last run.
#[derive(Default)]
pub struct Live {
    state: Mutex<LiveState>,
}

#[derive(Default)]
struct LiveState {
    recorded: Recorded,
    /// Whether the last run succeeded, and when it ended (Unix time).
    last_run: Option<(bool, i64)>,
}

impl Live {
    /// Adds a finished run: what it did, and whether it succeeded.
    pub fn add_run(&self, done: &Progress, success: bool) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.recorded.add(done);
        state.last_run = Some((success, unix_now()));
    }

    /// The number of pending migrations, as a status read found it.
    pub fn set_pending(&self, pending: usize) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.recorded.pending = Some(pending);
    }

    /// The Prometheus text format (0.0.4).
    pub fn render(&self) -> String {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        render(&state.recorded, state.last_run)
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `last_run`: whether the run succeeded and when it ended; the two
/// gauges are left out before any run.
fn render(recorded: &Recorded, last_run: Option<(bool, i64)>) -> String {
    let mut registry = Registry::default();
    let durations = Family::<Labels, Histogram>::new_with_constructor(|| {
        Histogram::new(DURATION_BUCKETS.iter().copied())
    });
    registry.register(
        "migrate_migration_duration_seconds",
        "How long each migration of the run took, by version and outcome",
        durations.clone(),
    );
    let totals = Family::<Labels, Counter>::default();
    registry.register(
        "migrate_migrations",
        "Migrations run, by outcome",
        totals.clone(),
    );
    // Present from the start, so that rate() and alerts see a zero.
    for status in ["applied", "failed"] {
        let _ = totals.get_or_create(&vec![("status".to_owned(), status.to_owned())]);
    }
    let lock_wait = Gauge::<f64, AtomicU64>::default();
    registry.register(
        "migrate_lock_wait_seconds",
        "How long the run waited for the migration lock",
        lock_wait.clone(),
    );
    if let Some((success, finished)) = last_run {
        let gauge = Gauge::<i64>::default();
        gauge.set(finished);
        registry.register(
            "migrate_last_run_timestamp_seconds",
            "When the run ended (Unix time)",
            gauge,
        );
        let gauge = Gauge::<i64>::default();
        gauge.set(i64::from(success));
        registry.register(
            "migrate_last_run_success",
            "1 if the run succeeded, 0 if it failed",
            gauge,
        );
    }
    for (version, status, duration) in &recorded.migrations {
        durations
            .get_or_create(&vec![
                ("version".to_owned(), version.clone()),
                ("status".to_owned(), (*status).to_owned()),
            ])
            .observe(duration.as_secs_f64());
        totals
            .get_or_create(&vec![("status".to_owned(), (*status).to_owned())])
            .inc();
    }
    if let Some(pending) = recorded.pending {
        let gauge = Gauge::<i64>::default();
        gauge.set(pending as i64);
        registry.register(
            "migrate_pending_migrations",
            "Migrations pending when last seen: at the end of a run (or, for migrate serve, a status read)",
            gauge,
        );
    }
    lock_wait.set(recorded.lock_wait.as_secs_f64());
    let mut text = String::new();
    encode(&mut text, &registry).expect("writing to a String does not fail");
    text_format(&text)
}

/// The Prometheus text format (0.0.4) that node-exporter's textfile
/// collector reads, from the crate's OpenMetrics text: there a counter's
/// HELP and TYPE name the family (`x`) and its sample is `x_total`; the
/// text format wants the sample's name in all three, or the collector
/// reads the counter as untyped. Its closing `# EOF` is not part of it.
fn text_format(openmetrics: &str) -> String {
    let counters: Vec<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut text = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(&name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        text.push_str(renamed.as_deref().unwrap_or(line));
        text.push('\n');
    }
    text
}

fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "metrics".into());
    // A unique name (containers sharing the folder may have the same
    // pid), not ending in .prom, so the collector skips it; readable by
    // the collector's user, as a plainly written file would be.
    let mut temporary = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .tempfile_in(dir)?;
    std::io::Write::write_all(&mut temporary, text.as_bytes())?;
    // Again, as fchmod: the mode given at creation is subject to umask.
    temporary
        .as_file()
        .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    temporary.as_file().sync_all()?;
    temporary.persist(path).map_err(|err| err.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_documented_metrics() {
        let recorded = Recorded {
            migrations: vec![
                ("001".into(), "applied", Duration::from_millis(20)),
                ("002".into(), "failed", Duration::from_millis(3)),
            ],
            lock_wait: Duration::from_millis(1500),
            pending: Some(2),
        };
        let text = render(&recorded, Some((false, 1_800_000_000)));
        for expected in [
            "# TYPE migrate_migration_duration_seconds histogram",
            "migrate_migration_duration_seconds_count{version=\"001\",status=\"applied\"} 1",
            "migrate_migration_duration_seconds_bucket{le=\"0.05\",version=\"001\",status=\"applied\"} 1",
            "# TYPE migrate_migrations_total counter",
            "# HELP migrate_migrations_total Migrations run, by outcome.",
            "migrate_migrations_total{status=\"failed\"} 1",
            "migrate_lock_wait_seconds 1.5",
            "migrate_pending_migrations 2",
            "migrate_last_run_success 0",
        ] {
            assert!(text.contains(expected), "{expected} missing in:\n{text}");
        }
        assert!(!text.contains("# EOF"), "{text}");
        assert!(
            !text.contains("# TYPE migrate_migrations counter"),
            "{text}"
        );
    }

    #[test]
    fn writes_through_a_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("migrate.prom");
        write_atomically(&path, "a 1\n").unwrap();
        write_atomically(&path, "a 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a 2\n");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o644, "readable by the collector");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1);
    }
}
