//! A real PgBouncer (Debian's `pgbouncer`) in front of the harness's
//! PostgreSQL, started the way the harness starts the server: in a
//! temporary folder, on a free loopback port, as `postgres` under root.

use super::{SECRET, Server, server};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Bouncer {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

/// Where the `pgbouncer` program is, if it is installed.
fn program() -> Option<PathBuf> {
    [
        "/usr/sbin/pgbouncer",
        "/usr/bin/pgbouncer",
        "/usr/local/bin/pgbouncer",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
}

impl Bouncer {
    /// PgBouncer in `pool_mode` with `pool_size` server connections, in
    /// front of the harness's server. `None` (the test says it is skipped)
    /// without the program, or on a server the developer runs.
    pub fn start(pool_mode: &str, pool_size: u32) -> Option<Bouncer> {
        let Some(program) = program() else {
            eprintln!("skipped: pgbouncer is not installed (.ci/run installs it)");
            return None;
        };
        let Server::Temp { cluster, .. } = server() else {
            eprintln!("skipped: PgBouncer runs in front of the harness's own server only");
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("migrate-pgbouncer-")
            .tempdir()
            .unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = format!(
            "[databases]\n\
             * = host={socket} port={pg_port}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = trust\n\
             auth_file = {dir}/users.txt\n\
             pool_mode = {pool_mode}\n\
             default_pool_size = {pool_size}\n\
             max_client_conn = 500\n\
             logfile = {dir}/pgbouncer.log\n",
            socket = cluster.socket_dir().display(),
            pg_port = cluster.port(),
            dir = dir.path().display(),
        );
        std::fs::write(dir.path().join("pgbouncer.ini"), config).unwrap();
        std::fs::write(dir.path().join("users.txt"), "\"postgres\" \"\"\n").unwrap();
        let mut command = Command::new(program);
        command
            .arg(dir.path().join("pgbouncer.ini"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // PgBouncer refuses to run as root, as PostgreSQL does.
        if nix::unistd::geteuid().is_root() {
            let user = nix::unistd::User::from_name("postgres").unwrap().unwrap();
            for entry in std::fs::read_dir(dir.path()).unwrap() {
                let path = entry.unwrap().path();
                std::os::unix::fs::chown(&path, Some(user.uid.as_raw()), None).unwrap();
            }
            std::os::unix::fs::chown(dir.path(), Some(user.uid.as_raw()), None).unwrap();
            use std::os::unix::process::CommandExt;
            command.uid(user.uid.as_raw()).gid(user.gid.as_raw());
        }
        let child = command.spawn().expect("start pgbouncer");
        let bouncer = Bouncer {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "pgbouncer did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(bouncer)
    }

    /// A DSN for `dbname` through this PgBouncer.
    pub fn dsn(&self, dbname: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={dbname} password={SECRET} sslmode=disable",
            self.port
        )
    }
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
