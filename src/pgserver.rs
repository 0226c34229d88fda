//! A throwaway PostgreSQL server from the server binaries on the machine:
//! `migrate sandbox` runs migrations against one, and the test suite runs
//! against one. PostgreSQL refuses to run as root, so under root the server
//! runs as the `postgres` user.

use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// The folder holding `initdb` and `postgres`, and the version they report.
#[derive(Clone, Debug)]
pub struct ServerBinaries {
    pub bin_dir: PathBuf,
    pub version: String,
}

/// Where to look after `PATH`: Debian and Ubuntu, RHEL's PGDG packages,
/// source builds, Homebrew, Postgres.app.
const SEARCH_GLOBS: [&str; 7] = [
    "/usr/lib/postgresql/*/bin",
    "/usr/pgsql-*/bin",
    "/usr/local/pgsql/bin",
    "/opt/homebrew/opt/postgresql@*/bin",
    "/usr/local/opt/postgresql@*/bin",
    "/opt/homebrew/bin",
    "/Applications/Postgres.app/Contents/Versions/latest/bin",
];

impl ServerBinaries {
    /// `MIGRATE_PG_BIN` if set, else `PATH`, else the usual install folders
    /// (the newest version first).
    pub fn find() -> Result<ServerBinaries, String> {
        if let Some(dir) = std::env::var_os("MIGRATE_PG_BIN").filter(|d| !d.is_empty()) {
            let dir = PathBuf::from(dir);
            if has_server(&dir) {
                return ServerBinaries::at(dir);
            }
            return Err(format!(
                "MIGRATE_PG_BIN={} holds no initdb and postgres programs",
                dir.display()
            ));
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        let candidates = std::env::split_paths(&path).chain(
            SEARCH_GLOBS
                .iter()
                .flat_map(|glob| expand_version_glob(glob)),
        );
        match find_in(candidates) {
            Some(dir) => ServerBinaries::at(dir),
            None => Err(not_found_message()),
        }
    }

    fn at(dir: PathBuf) -> Result<ServerBinaries, String> {
        // PATH often holds symlinks (/usr/local/bin/initdb); the server
        // programs live together in the real folder.
        let dir = std::fs::canonicalize(dir.join("initdb"))
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .filter(|d| has_server(d))
            .unwrap_or(dir);
        let output = Command::new(dir.join("postgres"))
            .arg("--version")
            .output()
            .map_err(|err| format!("cannot run {}: {err}", dir.join("postgres").display()))?;
        let version = String::from_utf8_lossy(&output.stdout)
            .trim()
            .trim_start_matches("postgres (PostgreSQL) ")
            .to_owned();
        Ok(ServerBinaries {
            bin_dir: dir,
            version,
        })
    }
}

fn has_server(dir: &Path) -> bool {
    dir.join("initdb").is_file() && dir.join("postgres").is_file()
}

fn find_in(candidates: impl Iterator<Item = PathBuf>) -> Option<PathBuf> {
    candidates.into_iter().find(|dir| has_server(dir))
}

/// Expands the one `*` of a glob against the file system, highest version
/// first (`/usr/lib/postgresql/16/bin` before `.../9.6/bin`).
fn expand_version_glob(glob: &str) -> Vec<PathBuf> {
    let Some((prefix, suffix)) = glob.split_once('*') else {
        return vec![PathBuf::from(glob)];
    };
    let (parent, name_prefix) = match prefix.rfind('/') {
        Some(i) => (&prefix[..=i], &prefix[i + 1..]),
        None => ("./", prefix),
    };
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Vec::new();
    };
    let mut found: Vec<(Vec<u64>, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let version = name.strip_prefix(name_prefix)?;
            let key = version.split('.').map(|p| p.parse().unwrap_or(0)).collect();
            Some((key, PathBuf::from(format!("{parent}{name}{suffix}"))))
        })
        .collect();
    found.sort_by(|a, b| b.0.cmp(&a.0));
    found.into_iter().map(|(_, p)| p).collect()
}

fn not_found_message() -> String {
    format!(
        "no PostgreSQL server programs (initdb, postgres) found on PATH or in {}; install the \
         server (Debian/Ubuntu: apt-get install postgresql; Fedora/RHEL: dnf install \
         postgresql-server; macOS: brew install postgresql@16) or set MIGRATE_PG_BIN to the \
         folder holding them",
        SEARCH_GLOBS.join(", ")
    )
}

/// The user the server runs as: this process's, or `postgres` under root.
#[derive(Clone, Copy, Debug)]
struct RunAs {
    uid: u32,
    gid: u32,
}

fn run_as() -> Result<Option<RunAs>, String> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    match nix::unistd::User::from_name("postgres") {
        Ok(Some(user)) => Ok(Some(RunAs {
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        })),
        _ => Err(
            "PostgreSQL refuses to run as root and there is no `postgres` user to run it as; \
             create one (useradd --system postgres) or run as an ordinary user"
                .into(),
        ),
    }
}

/// Options for a throwaway server.
#[derive(Clone, Debug, Default)]
pub struct ClusterOptions {
    /// Also listen on 127.0.0.1 at a free port, with password
    /// (SCRAM) authentication for TCP clients.
    pub tcp: bool,
    /// Extra `-c name=value` server settings.
    pub settings: Vec<(String, String)>,
    /// Files written into the data directory before the server starts,
    /// readable by the server only (TLS keys and certificates: server
    /// settings may name them relative to the data directory).
    pub data_files: Vec<(String, Vec<u8>)>,
}

/// A running throwaway server. Dropping it stops the server and removes
/// its folder; if this process dies first, a watchdog does both.
pub struct TempCluster {
    root: PathBuf,
    binaries: ServerBinaries,
    run_as: Option<RunAs>,
    options: ClusterOptions,
    port: u16,
    postmaster: Option<Child>,
    /// Closing it (when this process ends, however it ends) wakes the watchdog.
    _watchdog: ChildStdin,
}

impl TempCluster {
    /// Creates a cluster in a new temporary folder and starts it.
    pub fn start(options: ClusterOptions) -> Result<TempCluster, String> {
        let binaries = ServerBinaries::find()?;
        let run_as = run_as()?;
        let root = tempfile::Builder::new()
            .prefix("migrate-pg-")
            .tempdir()
            .map_err(|err| format!("cannot create a temporary folder: {err}"))?
            .keep();
        let watchdog = spawn_watchdog(&root)?;
        let mut cluster = TempCluster {
            root,
            binaries,
            run_as,
            options,
            port: 5432,
            postmaster: None,
            _watchdog: watchdog,
        };
        cluster.init()?;
        cluster.port = if cluster.options.tcp {
            free_port()?
        } else {
            5432
        };
        cluster.start_postmaster()?;
        Ok(cluster)
    }

    pub fn version(&self) -> &str {
        &self.binaries.version
    }

    /// A program of the server's installation (`pg_dump`), if it is there.
    pub fn program(&self, name: &str) -> Option<PathBuf> {
        let path = self.binaries.bin_dir.join(name);
        path.is_file().then_some(path)
    }

    /// The folder holding the data directory, the socket and the log.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    pub fn socket_dir(&self) -> PathBuf {
        self.root.clone()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A key=value DSN for `dbname` over the Unix socket, as superuser
    /// `postgres`.
    pub fn socket_dsn(&self, dbname: &str) -> String {
        format!(
            "host={} port={} user=postgres dbname={dbname} sslmode=disable",
            self.socket_dir().display(),
            self.port
        )
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.binaries.bin_dir.join(program));
        command.current_dir(&self.root).env("LC_ALL", "C");
        if let Some(run_as) = self.run_as {
            use std::os::unix::process::CommandExt;
            command.uid(run_as.uid).gid(run_as.gid);
        }
        command
    }

    fn init(&mut self) -> Result<(), String> {
        std::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(0o700))
            .map_err(|err| format!("cannot set permissions on {}: {err}", self.root.display()))?;
        if let Some(run_as) = self.run_as {
            std::os::unix::fs::chown(&self.root, Some(run_as.uid), Some(run_as.gid))
                .map_err(|err| format!("cannot hand {} to postgres: {err}", self.root.display()))?;
        }
        let pwfile = self.root.join("pwfile");
        std::fs::write(&pwfile, "postgres\n")
            .map_err(|err| format!("cannot write {}: {err}", pwfile.display()))?;
        if let Some(run_as) = self.run_as {
            let _ = std::os::unix::fs::chown(&pwfile, Some(run_as.uid), Some(run_as.gid));
        }
        let output = self
            .command("initdb")
            .arg("--pgdata")
            .arg(self.data_dir())
            .args([
                "--username=postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .args(["--encoding=UTF8", "--locale=C", "--no-sync"])
            .output()
            .map_err(|err| format!("cannot run initdb: {err}"))?;
        if !output.status.success() {
            return Err(format!(
                "initdb failed: {}{}",
                String::from_utf8_lossy(&output.stderr),
                String::from_utf8_lossy(&output.stdout)
            ));
        }
        for (name, contents) in &self.options.data_files {
            let path = self.data_dir().join(name);
            std::fs::write(&path, contents)
                .and_then(|()| {
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                })
                .map_err(|err| format!("cannot write {}: {err}", path.display()))?;
            if let Some(run_as) = self.run_as {
                std::os::unix::fs::chown(&path, Some(run_as.uid), Some(run_as.gid))
                    .map_err(|err| format!("cannot hand {} to postgres: {err}", path.display()))?;
            }
        }
        Ok(())
    }

    fn start_postmaster(&mut self) -> Result<(), String> {
        let log_path = self.root.join("server.log");
        let log = std::fs::File::create(&log_path)
            .map_err(|err| format!("cannot create {}: {err}", log_path.display()))?;
        if let Some(run_as) = self.run_as {
            let _ = std::os::unix::fs::chown(&log_path, Some(run_as.uid), Some(run_as.gid));
        }
        let listen = if self.options.tcp { "127.0.0.1" } else { "" };
        let mut command = self.command("postgres");
        command
            .arg("-D")
            .arg(self.data_dir())
            .arg("-k")
            .arg(self.socket_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-c")
            .arg(format!("listen_addresses={listen}"));
        // A throwaway server: durability buys nothing here.
        for (name, value) in [
            ("fsync", "off"),
            ("synchronous_commit", "off"),
            ("full_page_writes", "off"),
            ("max_connections", "200"),
        ]
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .chain(self.options.settings.iter().cloned())
        {
            command.arg("-c").arg(format!("{name}={value}"));
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|err| format!("cannot start postgres: {err}"))?;
        self.postmaster = Some(child);
        self.wait_ready()
    }

    /// Waits until postmaster.pid says `ready`, as pg_ctl does.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let pid_file = self.data_dir().join("postmaster.pid");
        loop {
            if let Some(child) = self.postmaster.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.postmaster = None;
                return Err(format!(
                    "postgres exited during start-up ({status}):\n{}",
                    self.log_tail()
                ));
            }
            if let Ok(text) = std::fs::read_to_string(&pid_file)
                && text.lines().nth(7).is_some_and(|s| s.trim() == "ready")
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "postgres did not start within 60 s:\n{}",
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last lines of the server log, for error messages.
    pub fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(self.root.join("server.log")) {
            let _ = file.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Stops the server (fast shutdown: open transactions roll back).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.postmaster.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again after `stop`, on the same port.
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        self.start_postmaster()
    }
}

impl Drop for TempCluster {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// A shell that waits for this process to go away (its stdin closes), then
/// stops the server and removes the folder: a test binary's shared server,
/// or a sandbox whose `migrate` was killed, leaves nothing behind.
fn spawn_watchdog(root: &Path) -> Result<ChildStdin, String> {
    let script = r#"
        read _ignored
        pidfile="$1/data/postmaster.pid"
        if [ -f "$pidfile" ]; then
            pid=$(head -n 1 "$pidfile")
            kill -INT "$pid" 2>/dev/null
            i=0
            while kill -0 "$pid" 2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
            kill -KILL "$pid" 2>/dev/null
        fi
        rm -rf "$1"
    "#;
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("migrate-pg-watchdog")
        .arg(root)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|err| format!("cannot start the clean-up watchdog: {err}"))?;
    Ok(child.stdin.take().expect("piped stdin"))
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|err| format!("cannot find a free port: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_globs_list_the_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        for v in ["9.6", "15", "16", "10"] {
            std::fs::create_dir_all(dir.path().join(v).join("bin")).unwrap();
        }
        let glob = format!("{}/*/bin", dir.path().display());
        let found: Vec<String> = expand_version_glob(&glob)
            .iter()
            .map(|p| p.strip_prefix(dir.path()).unwrap().display().to_string())
            .collect();
        assert_eq!(found, ["16/bin", "15/bin", "10/bin", "9.6/bin"]);
    }

    #[test]
    fn finds_the_first_folder_with_both_programs() {
        let dir = tempfile::tempdir().unwrap();
        let only_initdb = dir.path().join("a");
        let both = dir.path().join("b");
        for d in [&only_initdb, &both] {
            std::fs::create_dir_all(d).unwrap();
            std::fs::write(d.join("initdb"), "").unwrap();
        }
        std::fs::write(both.join("postgres"), "").unwrap();
        assert_eq!(
            find_in(vec![only_initdb.clone(), both.clone()].into_iter()),
            Some(both)
        );
        assert_eq!(find_in(vec![only_initdb].into_iter()), None);
    }

    #[test]
    fn not_found_says_what_to_install() {
        let message = not_found_message();
        assert!(message.contains("apt-get install postgresql"));
        assert!(message.contains("MIGRATE_PG_BIN"));
    }
}
