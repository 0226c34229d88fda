//! The test harness: one throwaway PostgreSQL server per test run (or the
//! server named by `MIGRATE_TEST_DSN`), a fresh database and folder per
//! test, and a builder that runs the real `migrate` binary.

pub mod bouncer;
pub mod browser;
pub mod pty;
pub mod tls;

use migrate::pgserver::{ClusterOptions, TempCluster};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A password that every test DSN carries and no output may ever show. The
/// harness's server authenticates socket clients by trust, so it is never
/// needed, only carried.
pub const SECRET: &str = "pw-never-printed-7c1f";

pub enum Server {
    /// A server this test run started (and its watchdog removes).
    Temp {
        cluster: Box<TempCluster>,
        tls: Box<tls::Certificates>,
    },
    /// `MIGRATE_TEST_DSN`: a server the developer runs.
    External { admin_dsn: String },
}

static SERVER: OnceLock<Server> = OnceLock::new();

pub fn server() -> &'static Server {
    SERVER.get_or_init(|| match std::env::var("MIGRATE_TEST_DSN") {
        Ok(dsn) if !dsn.is_empty() => Server::External { admin_dsn: dsn },
        _ => {
            let tls = tls::Certificates::generate();
            let cluster = TempCluster::start(ClusterOptions {
                tcp: true,
                settings: vec![
                    ("ssl".into(), "on".into()),
                    ("ssl_cert_file".into(), "server.crt".into()),
                    ("ssl_key_file".into(), "server.key".into()),
                ],
                data_files: vec![
                    ("server.crt".into(), tls.server_cert.clone().into_bytes()),
                    ("server.key".into(), tls.server_key.clone().into_bytes()),
                ],
            })
            .unwrap_or_else(|err| panic!("cannot start the test server: {err}"));
            Server::Temp {
                cluster: Box::new(cluster),
                tls: Box::new(tls),
            }
        }
    })
}

impl Server {
    fn admin_dsn(&self) -> String {
        match self {
            Server::Temp { cluster, .. } => cluster.socket_dsn("postgres"),
            Server::External { admin_dsn } => admin_dsn.clone(),
        }
    }

    /// A DSN for `dbname` carrying `SECRET` as its password.
    pub fn dsn_for(&self, dbname: &str) -> String {
        match self {
            Server::Temp { cluster, .. } => {
                format!(
                    "{} dbname={dbname} password={SECRET}",
                    cluster.socket_dsn("postgres")
                )
            }
            Server::External { admin_dsn } => with_dbname(admin_dsn, dbname),
        }
    }
}

fn with_dbname(dsn: &str, dbname: &str) -> String {
    if dsn.starts_with("postgres://") || dsn.starts_with("postgresql://") {
        let sep = if dsn.contains('?') { '&' } else { '?' };
        format!("{dsn}{sep}dbname={dbname}")
    } else {
        format!("{dsn} dbname={dbname}")
    }
}

pub fn connect(dsn: &str) -> postgres::Client {
    postgres::Client::connect(dsn, postgres::NoTls)
        .unwrap_or_else(|err| panic!("test connection failed: {err}"))
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh database and a fresh working folder (with `migrations/`), and
/// the means to run `migrate` against them.
pub struct TestEnv {
    pub db_name: String,
    pub dsn: String,
    dir: tempfile::TempDir,
    /// A server of this test's own, for tests that stop and start it.
    own: Option<std::cell::RefCell<TempCluster>>,
}

impl TestEnv {
    pub fn new() -> TestEnv {
        let server = server();
        let db_name = format!(
            "migrate_test_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let mut admin = connect(&server.admin_dsn());
        admin
            .batch_execute(&format!("CREATE DATABASE \"{db_name}\""))
            .expect("create test database");
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("migrations")).unwrap();
        TestEnv {
            dsn: server.dsn_for(&db_name),
            db_name,
            dir,
            own: None,
        }
    }

    /// A test environment on a server of its own (Unix socket only), which
    /// the test may stop and start.
    pub fn on_own_server() -> TestEnv {
        TestEnv::on_own_server_with(ClusterOptions::default())
    }

    /// A test environment on a server of its own started with `options`
    /// (TCP, TLS settings and files); `dsn` still goes through the socket.
    pub fn on_own_server_with(options: ClusterOptions) -> TestEnv {
        let cluster = TempCluster::start(options)
            .unwrap_or_else(|err| panic!("cannot start a server for the test: {err}"));
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("migrations")).unwrap();
        TestEnv {
            dsn: format!("{} password={SECRET}", cluster.socket_dsn("postgres")),
            db_name: "postgres".into(),
            dir,
            own: Some(std::cell::RefCell::new(cluster)),
        }
    }

    /// The TCP port of the test's own server.
    pub fn own_port(&self) -> u16 {
        self.own.as_ref().expect("an own server").borrow().port()
    }

    /// Stops the test's own server (fast shutdown).
    pub fn stop_server(&self) {
        self.own
            .as_ref()
            .expect("an own server")
            .borrow_mut()
            .stop();
    }

    /// Starts the test's own server again, on the same socket.
    pub fn start_server(&self) {
        self.own
            .as_ref()
            .expect("an own server")
            .borrow_mut()
            .restart()
            .unwrap_or_else(|err| panic!("cannot restart the server: {err}"));
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn migrations(&self) -> PathBuf {
        self.dir.path().join("migrations")
    }

    /// Writes `migrations/<name>`.
    pub fn migration(&self, name: &str, sql: &str) -> &TestEnv {
        std::fs::write(self.migrations().join(name), sql).unwrap();
        self
    }

    /// Writes a file relative to the working folder, creating folders.
    pub fn file(&self, path: &str, contents: &str) -> &TestEnv {
        let path = self.dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
        self
    }

    /// `migrate` with `--dsn` for this database, run in the working folder.
    pub fn migrate(&self) -> Run {
        let mut run = Run::bare(self.dir.path());
        run.arg("--dsn").arg(&self.dsn);
        run
    }

    /// `migrate` with no connection settings at all.
    pub fn migrate_bare(&self) -> Run {
        Run::bare(self.dir.path())
    }

    pub fn client(&self) -> postgres::Client {
        connect(&self.dsn)
    }

    /// Every row of `sql`, each column as text (NULL as `None`).
    pub fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        let mut client = self.client();
        client
            .simple_query(sql)
            .unwrap_or_else(|err| panic!("{sql}: {err}"))
            .into_iter()
            .filter_map(|m| match m {
                postgres::SimpleQueryMessage::Row(row) => Some(
                    (0..row.len())
                        .map(|i| row.get(i).map(str::to_owned))
                        .collect(),
                ),
                _ => None,
            })
            .collect()
    }

    /// The single value of `sql`.
    pub fn value(&self, sql: &str) -> Option<String> {
        let rows = self.rows(sql);
        assert_eq!(rows.len(), 1, "{sql} returned {} rows", rows.len());
        rows[0][0].clone()
    }

    /// Whether a table (`schema.name`) exists.
    pub fn table_exists(&self, qualified: &str) -> bool {
        self.value(&format!("SELECT to_regclass('{qualified}') IS NOT NULL")) == Some("t".into())
    }

    /// `version:status` of every state row, in version order.
    pub fn state(&self) -> Vec<String> {
        self.state_in("public.schema_migrations")
    }

    pub fn state_in(&self, table: &str) -> Vec<String> {
        self.rows(&format!(
            "SELECT version || ':' || status FROM {table} ORDER BY version::numeric"
        ))
        .into_iter()
        .map(|r| r[0].clone().unwrap())
        .collect()
    }

    /// `event:version` of every journal entry, oldest first.
    pub fn journal(&self) -> Vec<String> {
        self.rows("SELECT event || ':' || version FROM public.schema_migrations_log ORDER BY id")
            .into_iter()
            .map(|r| r[0].clone().unwrap())
            .collect()
    }

    /// Advisory locks held in this database, by anyone.
    pub fn advisory_locks(&self) -> usize {
        self.value(&format!(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted \
               AND database = (SELECT oid FROM pg_database WHERE datname = '{}')",
            self.db_name
        ))
        .unwrap()
        .parse()
        .unwrap()
    }

    /// Sessions of `migrate` (application_name) in this database.
    pub fn migrate_sessions(&self) -> usize {
        self.value(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' AND application_name = 'migrate'",
            self.db_name
        ))
        .unwrap()
        .parse()
        .unwrap()
    }

    /// Waits until a `migrate` session runs a statement containing `fragment`.
    #[track_caller]
    pub fn wait_for_migrate_running(&self, fragment: &str) {
        wait_until(Duration::from_secs(20), fragment, || {
            self.value(&format!(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' \
                   AND application_name = 'migrate' AND position('{}' IN query) > 0",
                self.db_name,
                fragment.replace('\'', "''")
            )) == Some("1".into())
        });
    }

    /// The lock key `migrate` derives for this database and the default
    /// schema and table.
    pub fn default_lock_key(&self) -> i64 {
        migrate::store::default_lock_key(&self.db_name, "public", "schema_migrations")
    }

    /// A session named `application` holding the advisory lock `key`
    /// until it is dropped.
    pub fn hold_lock(&self, application: &str, key: i64) -> postgres::Client {
        let mut holder = self.client();
        holder
            .execute(
                "SELECT set_config('application_name', $1, false)",
                &[&application],
            )
            .unwrap();
        holder
            .execute("SELECT pg_advisory_lock($1)", &[&key])
            .unwrap();
        holder
    }
}

impl Drop for TestEnv {
    /// On a server the developer runs, the test's database goes away with
    /// the test; the harness's own server is removed whole at the end.
    fn drop(&mut self) {
        if self.own.is_some() {
            return;
        }
        if let Server::External { admin_dsn } = server()
            && let Ok(mut admin) = postgres::Client::connect(admin_dsn, postgres::NoTls)
        {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.db_name
            ));
        }
    }
}

/// The `migrate` binary with a clean environment.
pub struct Run {
    command: Command,
}

impl Run {
    fn bare(dir: &Path) -> Run {
        let mut command = Command::new(env!("CARGO_BIN_EXE_migrate"));
        command
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", dir)
            .env("USER", "tester")
            .env("LANG", "C.UTF-8");
        Run { command }
    }

    pub fn arg(&mut self, arg: impl AsRef<std::ffi::OsStr>) -> &mut Run {
        self.command.arg(arg);
        self
    }

    pub fn args<I, S>(&mut self, args: I) -> &mut Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.command.args(args);
        self
    }

    pub fn env(&mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> &mut Run {
        self.command.env(key, value);
        self
    }

    /// Runs to completion; checks that no output shows the DSN password.
    /// A run that has not ended after [`RUN_LIMIT`] is killed and the test
    /// fails (a command that should have refused to start, say).
    pub fn run(&mut self) -> Outcome {
        let started = Instant::now();
        let mut child = self
            .command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn migrate");
        let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                let _ = pipe.read_to_end(&mut bytes);
                String::from_utf8_lossy(&bytes).into_owned()
            })
        };
        let stdout = drain(Box::new(child.stdout.take().unwrap()));
        let stderr = drain(Box::new(child.stderr.take().unwrap()));
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for migrate") {
                break Some(status);
            }
            if started.elapsed() > RUN_LIMIT {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let outcome = Outcome {
            code: status.and_then(|s| s.code()).unwrap_or(-1),
            stdout: stdout.join().unwrap(),
            stderr: stderr.join().unwrap(),
            elapsed: started.elapsed(),
        };
        assert!(
            status.is_some(),
            "still running after {RUN_LIMIT:?}, killed: {outcome:?}"
        );
        outcome.assert_no_secret();
        outcome
    }

    /// Starts without waiting; stdout and stderr are piped.
    pub fn spawn(&mut self) -> Child {
        self.command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn migrate")
    }

    /// The command itself, to run some other way (on a terminal).
    pub fn into_command(self) -> Command {
        self.command
    }
}

#[derive(Debug)]
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Outcome {
    pub fn from_output(output: std::process::Output) -> Outcome {
        let outcome = Outcome {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            elapsed: Duration::ZERO,
        };
        outcome.assert_no_secret();
        outcome
    }

    /// Asserts the exit code, showing both streams when it differs.
    #[track_caller]
    pub fn code(&self, expected: i32) -> &Outcome {
        assert_eq!(
            self.code, expected,
            "exit code {} (expected {expected})\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn stdout_has(&self, text: &str) -> &Outcome {
        assert!(
            self.stdout.contains(text),
            "stdout lacks {text:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    #[track_caller]
    pub fn stdout_lacks(&self, text: &str) -> &Outcome {
        assert!(
            !self.stdout.contains(text),
            "stdout has {text:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    #[track_caller]
    pub fn stderr_has(&self, text: &str) -> &Outcome {
        assert!(
            self.stderr.contains(text),
            "stderr lacks {text:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    #[track_caller]
    fn assert_no_secret(&self) {
        assert!(
            !self.stdout.contains(SECRET) && !self.stderr.contains(SECRET),
            "the DSN password appeared in the output\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
    }
}

/// How long [`Run::run`] lets a command take.
pub const RUN_LIMIT: Duration = Duration::from_secs(120);

/// Polls `check` until it holds or `timeout` passes.
#[track_caller]
pub fn wait_until(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Filters for snapshots: timings, timestamps and the host name vary.
pub fn snapshot_filters() -> Vec<(&'static str, &'static str)> {
    vec![
        (r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", "[timestamp]"),
        (r"\d+(\.\d+)?(µs|ms|s)\b", "[took]"),
        (r"tester@[^ )]+", "tester@[host]"),
    ]
}

/// Counts in a map, for comparing sets of outcomes.
pub fn tally<I: IntoIterator<Item = String>>(items: I) -> BTreeMap<String, usize> {
    let mut map = BTreeMap::new();
    for item in items {
        *map.entry(item).or_insert(0) += 1;
    }
    map
}
