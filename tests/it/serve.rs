//! `migrate serve`: the admin HTTP API, driven over real HTTP against a
//! real server and a real PostgreSQL.

use crate::common::{SECRET, TestEnv, wait_until};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

pub(crate) const TOKEN: &str = "admin-token-for-tests-4b1d9e";
pub(crate) const CI_TOKEN: &str = "ci-token-for-tests-90ac3f";
/// A `read` token: status, history and metrics only.
pub(crate) const VIEWER_TOKEN: &str = "viewer-token-for-tests-77e2b1";

/// A running `migrate serve`, its output going to files.
pub(crate) struct Server {
    child: Child,
    pub(crate) addr: SocketAddr,
    stdout: PathBuf,
    stderr: PathBuf,
    /// Every response body this test saw.
    seen: std::cell::RefCell<Vec<String>>,
}

pub(crate) struct Response {
    pub(crate) status: u16,
    headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Response {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|err| panic!("not JSON ({err}): {}", self.body))
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Server {
    /// Starts `migrate serve` on a free loopback port with `TOKEN` (as
    /// MIGRATE_ADMIN_TOKEN) and `CI_TOKEN` (named `ci` in a token file).
    pub(crate) fn start(t: &TestEnv, extra: &[&str]) -> Server {
        Server::start_with(t, extra, &[])
    }

    pub(crate) fn start_with(t: &TestEnv, extra: &[&str], env: &[(&str, &str)]) -> Server {
        Server::start_on(t, t.migrate(), extra, env)
    }

    /// As `start_with`, with `run` (its connection settings) as the command.
    fn start_on(
        t: &TestEnv,
        mut run: crate::common::Run,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        t.file(
            "tokens",
            &format!(
                "# test tokens\nci:{}\nviewer:{}:read\n",
                sha256_hex(CI_TOKEN),
                sha256_hex(VIEWER_TOKEN)
            ),
        );
        let stdout = t.dir().join("serve.out");
        let stderr = t.dir().join("serve.err");
        run.args(["serve", "--token-file", "tokens"])
            .args(extra)
            .env("MIGRATE_ADMIN_TOKEN", TOKEN);
        if !extra.contains(&"--listen") {
            run.args(["--listen", "127.0.0.1:0"]);
        }
        for (name, value) in env {
            run.env(name, value);
        }
        let child = run
            .into_command()
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let mut addr = None;
        wait_until(Duration::from_secs(20), "the server to listen", || {
            let text = std::fs::read_to_string(&stdout).unwrap_or_default();
            addr = text
                .lines()
                .find_map(|l| l.strip_prefix("listening on http://"))
                .and_then(|rest| rest.split_whitespace().next())
                .map(|a| a.parse().unwrap());
            addr.is_some()
        });
        Server {
            child,
            addr: addr.unwrap(),
            stdout,
            stderr,
            seen: Default::default(),
        }
    }

    /// One request on a connection of its own. `body` is sent as is; a
    /// server that stops reading it early still gets its answer read.
    pub(crate) fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&[u8]>,
    ) -> Response {
        let mut stream = TcpStream::connect(self.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
        if let Some(token) = token {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        let body = body.unwrap_or_default();
        if method == "POST" {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        let _ = stream.write_all(head.as_bytes());
        let _ = stream.write_all(body);
        let mut raw = Vec::new();
        let mut buffer = [0u8; 8192];
        loop {
            match stream.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => raw.extend_from_slice(&buffer[..n]),
                // A reset after the answer (the server closed with our
                // body unread): what came before it is the answer.
                Err(_) if !raw.is_empty() => break,
                Err(err) => panic!("{method} {path}: {err}"),
            }
        }
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").expect("a whole response");
        let mut lines = head.lines();
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(": "))
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect();
        let chunked = headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v == "chunked");
        let body = if chunked {
            unchunk(body)
        } else {
            body.to_owned()
        };
        self.seen.borrow_mut().push(body.clone());
        Response {
            status,
            headers,
            body,
        }
    }

    pub(crate) fn get(&self, path: &str, token: Option<&str>) -> Response {
        self.request("GET", path, token, None)
    }

    pub(crate) fn run(&self, token: Option<&str>, body: &str) -> Response {
        self.request(
            "POST",
            "/admin/migrations/run",
            token,
            Some(body.as_bytes()),
        )
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap()
    }

    pub(crate) fn audit_lines(&self) -> Vec<Value> {
        self.stderr()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["audit"] == "request")
            .collect()
    }

    /// `GET /admin/migrations/status` with these header lines (each ending
    /// in CRLF) and no others: the raw answer.
    fn status_with_headers(&self, headers: &str) -> String {
        let mut stream = TcpStream::connect(self.addr).unwrap();
        write!(
            stream,
            "GET /admin/migrations/status HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{headers}\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    }

    /// Sends a run request's head, announcing `length` bytes of body, and
    /// `body` (all of it, part of it or none); the answer is the caller's
    /// to read.
    fn send_run_head(&self, length: usize, body: &str) -> TcpStream {
        let mut stream = TcpStream::connect(self.addr).unwrap();
        write!(
            stream,
            "POST /admin/migrations/run HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
             Authorization: Bearer {TOKEN}\r\nContent-Length: {length}\r\n\r\n{body}"
        )
        .unwrap();
        stream
    }

    /// Sends a confirmed run request; the answer is the caller's to read.
    fn send_run(&self) -> TcpStream {
        let body = r#"{"confirm": true}"#;
        self.send_run_head(body.len(), body)
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    /// SIGTERM, then the exit status and stdout.
    fn terminate(mut self) -> (Option<i32>, String, Server) {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM).unwrap();
        let status = self.child.wait().unwrap();
        let stdout = std::fs::read_to_string(&self.stdout).unwrap();
        (status.code(), stdout, self)
    }

    /// Neither the DSN's password nor a token in any response or log line.
    fn assert_no_secrets(&self) {
        let logs = format!(
            "{}{}",
            std::fs::read_to_string(&self.stdout).unwrap(),
            self.stderr()
        );
        for secret in [SECRET, TOKEN, CI_TOKEN] {
            assert!(
                !logs.contains(secret),
                "{secret} in the server's output:\n{logs}"
            );
            for body in self.seen.borrow().iter() {
                assert!(!body.contains(secret), "{secret} in a response: {body}");
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unchunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
    out
}

fn rfc3339(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|s| s.len() >= 20 && s.ends_with('Z') && s.as_bytes()[10] == b'T')
}

fn two_migrations(t: &TestEnv) {
    t.migration("001_users.sql", "CREATE TABLE users (id int);")
        .migration("002_orders.sql", "CREATE TABLE orders (id int);");
}

#[test]
fn status_run_history_health_and_metrics_over_http() {
    let t = TestEnv::new();
    two_migrations(&t);
    let server = Server::start(&t, &[]);

    let health = server.get("/healthz", None);
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["database"], "reachable");

    let status = server.get("/admin/migrations/status", Some(TOKEN));
    assert_eq!(status.status, 200, "{}", status.body);
    let doc = status.json();
    assert_eq!(doc["total"], 2);
    assert_eq!(doc["pending_count"], 2);
    assert_eq!(doc["applied_count"], 0);
    assert_eq!(doc["all_migrations"][0]["version"], "001");
    assert_eq!(doc["all_migrations"][0]["name"], "users");
    assert_eq!(doc["all_migrations"][0]["status"], "pending");
    assert_eq!(doc["all_migrations"][0]["applied_at"], Value::Null);
    assert_eq!(doc["pending_migrations"].as_array().unwrap().len(), 2);
    assert_eq!(doc["applied_migrations"], serde_json::json!([]));

    let run = server.run(Some(TOKEN), r#"{"confirm": true}"#);
    assert_eq!(run.status, 200, "{}", run.body);
    let doc = run.json();
    assert_eq!(doc["status"], "success");
    assert_eq!(doc["applied_count"], 2);
    assert_eq!(doc["message"], "applied 2 migrations");
    assert_eq!(doc["applied_migrations"][1]["version"], "002");
    assert!(doc["applied_migrations"][1]["duration"].as_u64().unwrap() > 0);
    assert_eq!(t.state(), ["001:applied", "002:applied"]);

    let status = server
        .get("/admin/migrations/status", Some(CI_TOKEN))
        .json();
    assert_eq!(status["applied_count"], 2);
    assert_eq!(status["pending_count"], 0);
    let first = &status["applied_migrations"][0];
    assert_eq!(first["status"], "completed");
    assert!(rfc3339(&first["applied_at"]), "{first}");
    assert!(first["duration"].as_u64().unwrap() > 0, "nanoseconds");

    let again = server.run(Some(CI_TOKEN), r#"{"confirm":true}"#);
    assert_eq!(again.status, 200);
    assert_eq!(
        again.json(),
        serde_json::json!({"status": "up_to_date", "message": "no pending migrations"})
    );

    let history = server.get("/admin/migrations/history", Some(TOKEN)).json();
    assert_eq!(history["total"], 2);
    let entry = &history["migrations"][0];
    assert_eq!(entry["version"], "001");
    assert_eq!(entry["event"], "applied");
    assert!(rfc3339(&entry["applied_at"]));
    assert_eq!(
        entry["applied_by"], "MIGRATE_ADMIN_TOKEN (API, from 127.0.0.1)",
        "the journal names the token and the address"
    );

    let metrics = server.get("/metrics", Some(TOKEN));
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    for expected in [
        "migrate_migrations_total{status=\"applied\"} 2",
        "migrate_migration_duration_seconds_count{version=\"001\",status=\"applied\"} 1",
        "migrate_last_run_success 1",
        "migrate_pending_migrations 0",
    ] {
        assert!(
            metrics.body.contains(expected),
            "{expected}:\n{}",
            metrics.body
        );
    }

    // One audit line per request, naming the token, never showing it.
    let audit = server.audit_lines();
    assert_eq!(audit.len(), server.seen.borrow().len(), "{audit:?}");
    let run_line = audit
        .iter()
        .find(|l| l["route"] == "/admin/migrations/run" && l["outcome"] == "applied")
        .expect("the run's audit line");
    assert_eq!(run_line["token"], "MIGRATE_ADMIN_TOKEN");
    assert_eq!(run_line["method"], "POST");
    assert_eq!(run_line["status"], 200);
    assert!(
        run_line["client"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert!(rfc3339(&run_line["time"]));
    assert!(run_line["duration_ms"].is_number());
    assert!(
        audit
            .iter()
            .any(|l| l["token"] == "ci" && l["outcome"] == "up_to_date")
    );
    server.assert_no_secrets();
}

#[test]
fn every_way_of_not_being_let_in() {
    let t = TestEnv::new();
    two_migrations(&t);
    let server = Server::start(&t, &[]);
    for path in [
        "/admin/migrations/status",
        "/admin/migrations/history",
        "/metrics",
    ] {
        let none = server.get(path, None);
        assert_eq!(none.status, 401, "{path}");
        assert_eq!(
            none.header("www-authenticate"),
            Some("Bearer realm=\"migrate\"")
        );
        let wrong = server.get(path, Some("not-a-known-token-at-all"));
        assert_eq!(wrong.status, 403, "{path}");
        assert_eq!(wrong.json()["error"], "forbidden");
    }
    let malformed = server.get("/admin/migrations/status", Some(""));
    assert_eq!(malformed.status, 401);
    let run = server.run(None, r#"{"confirm": true}"#);
    assert_eq!(run.status, 401);
    let run = server.run(Some("not-a-known-token-at-all"), r#"{"confirm": true}"#);
    assert_eq!(run.status, 403);
    assert!(!t.table_exists("public.schema_migrations"), "nothing ran");
    // Basic authentication is not a bearer token.
    let answer = server.status_with_headers("Authorization: Basic YTpi\r\n");
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    // Two Authorization headers are refused, whichever comes first.
    for (first, second) in [(TOKEN, "not-a-known-token-at-all"), ("x", TOKEN)] {
        let answer = server.status_with_headers(&format!(
            "Authorization: Bearer {first}\r\nAuthorization: Bearer {second}\r\n"
        ));
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    }

    let refused: Vec<Value> = server
        .audit_lines()
        .into_iter()
        .filter(|l| l["status"] == 401 || l["status"] == 403)
        .collect();
    // The first five refusals one line each; the rest counted, and said in
    // one line at the end of the window (here: at shutdown).
    assert_eq!(refused.len(), 5, "{refused:?}");
    assert!(refused.iter().all(|l| l["token"].is_null()));
    server.assert_no_secrets();
    let (_, _, server) = server.terminate();
    let summary: Vec<Value> = server
        .stderr()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["audit"] == "refused")
        .collect();
    assert_eq!(summary.len(), 1, "{summary:?}");
    assert_eq!(summary[0]["requests"], 7);
}

#[test]
fn run_wants_confirmation_and_a_small_body() {
    let t = TestEnv::new();
    two_migrations(&t);
    let server = Server::start(&t, &[]);
    for body in [
        "",
        "{}",
        r#"{"confirm": false}"#,
        r#"{"confirm": "true"}"#,
        "confirm=true",
        "[true]",
    ] {
        let out = server.run(Some(TOKEN), body);
        assert_eq!(out.status, 400, "{body:?}: {}", out.body);
        assert_eq!(out.json()["error"], "confirmation required");
        assert!(
            out.json()["details"]
                .as_str()
                .unwrap()
                .contains(r#"{"confirm": true}"#)
        );
    }
    // The last of two keys would win; a field the server does not know
    // would be ignored while the run went ahead.
    for (body, says) in [
        (
            r#"{"confirm": false, "confirm": true}"#,
            "duplicate field `confirm`",
        ),
        (
            r#"{"confirm": true, "dry_run": true}"#,
            "unknown field `dry_run`",
        ),
    ] {
        let out = server.run(Some(TOKEN), body);
        assert_eq!(out.status, 400, "{body:?}: {}", out.body);
        assert_eq!(out.json()["error"], "bad request body");
        let details = out.json()["details"].as_str().unwrap().to_owned();
        assert!(details.contains(says), "{details}");
    }
    assert!(
        server
            .audit_lines()
            .iter()
            .any(|l| l["outcome"] == "bad_body" && l["status"] == 400)
    );
    let big = vec![b' '; 10 * 1024 * 1024];
    let out = server.request("POST", "/admin/migrations/run", Some(TOKEN), Some(&big));
    assert_eq!(out.status, 413, "{}", out.body);
    // Announced too large: refused without waiting for the bytes.
    let mut stream = server.send_run_head(20000, "");
    let started = std::time::Instant::now();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!t.table_exists("public.schema_migrations"), "nothing ran");
    // The server is still there.
    assert_eq!(server.get("/healthz", None).status, 200);
    server.assert_no_secrets();
}

#[test]
fn a_run_while_the_cli_holds_the_lock_is_409() {
    let t = TestEnv::new();
    t.migration(
        "001_slow.sql",
        "SELECT pg_sleep(3);\nCREATE TABLE slow (id int);",
    );
    // One run a minute: the refused ones must not use it up.
    let server = Server::start(&t, &["--run-limit", "1"]);
    let cli = t.migrate().args(["up", "--yes"]).spawn();
    t.wait_for_migrate_running("pg_sleep(3)");
    for _ in 0..2 {
        let out = server.run(Some(TOKEN), r#"{"confirm": true}"#);
        assert_eq!(out.status, 409, "{}", out.body);
        let doc = out.json();
        assert_eq!(doc["error"], "another run holds the migration lock");
        assert!(
            doc["details"].as_str().unwrap().contains("held by pid "),
            "{doc}"
        );
    }
    assert!(cli.wait_with_output().unwrap().status.success());
    // Runs with nothing to apply cost nothing either.
    for _ in 0..3 {
        let out = server.run(Some(TOKEN), r#"{"confirm": true}"#);
        assert_eq!(out.status, 200, "{}", out.body);
        assert_eq!(out.json()["status"], "up_to_date");
    }
    assert!(
        server
            .audit_lines()
            .iter()
            .any(|l| l["outcome"] == "locked" && l["status"] == 409)
    );
}

/// Runs that do something (here: fail, every time) use their token's
/// budget; another token has its own.
#[test]
fn runs_are_rate_limited_per_token() {
    let t = TestEnv::new();
    t.migration("001_fails.sql", "SELECT 1/0;");
    let server = Server::start(&t, &["--run-limit", "2"]);
    assert_eq!(server.run(Some(TOKEN), r#"{"confirm": true}"#).status, 500);
    assert_eq!(server.run(Some(TOKEN), r#"{"confirm": true}"#).status, 500);
    let limited = server.run(Some(TOKEN), r#"{"confirm": true}"#);
    assert_eq!(limited.status, 429, "{}", limited.body);
    let retry: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry), "{retry}");
    // The CI token is not locked out by the admin's loop.
    assert_eq!(
        server.run(Some(CI_TOKEN), r#"{"confirm": true}"#).status,
        500
    );
    // Reads are not limited.
    assert_eq!(
        server.get("/admin/migrations/status", Some(TOKEN)).status,
        200
    );
}

#[test]
fn clients_outside_the_allowed_networks_are_refused() {
    let t = TestEnv::new();
    two_migrations(&t);
    let server = Server::start(&t, &["--allow-from", "10.0.0.0/8,192.168.0.0/16"]);
    // The kubelet's probes come from the node: /healthz is open to all.
    assert_eq!(server.get("/healthz", None).status, 200);
    for path in [
        "/admin/migrations/status",
        "/admin/migrations/history",
        "/metrics",
    ] {
        let out = server.get(path, Some(TOKEN));
        assert_eq!(out.status, 403, "{path}");
        assert!(
            out.json()["details"]
                .as_str()
                .unwrap()
                .contains("not in the allowed networks")
        );
    }
    let out = server.run(Some(TOKEN), r#"{"confirm": true}"#);
    assert_eq!(out.status, 403);
    assert!(!t.table_exists("public.schema_migrations"));
    drop(server);
    // On a dual-stack socket an IPv4 client arrives as ::ffff:127.0.0.1:
    // it is let in by its IPv4 network and written as 127.0.0.1. (Not
    // checkable where IPv6 is off or sockets are IPv6-only.)
    let dual_stack = std::net::TcpListener::bind("[::]:0")
        .and_then(|l| TcpStream::connect(("127.0.0.1", l.local_addr()?.port())))
        .is_ok();
    if !dual_stack {
        eprintln!("no dual-stack sockets here: the [::] listener case is not checked");
        return;
    }
    let mut server = Server::start(&t, &["--listen", "[::]:0", "--allow-from", "127.0.0.0/8"]);
    server.addr = SocketAddr::from(([127, 0, 0, 1], server.addr.port()));
    assert_eq!(
        server.get("/admin/migrations/status", Some(TOKEN)).status,
        200
    );
    assert_eq!(server.run(Some(TOKEN), r#"{"confirm": true}"#).status, 200);
    let clients: Vec<String> = server
        .audit_lines()
        .iter()
        .map(|l| l["client"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        clients.iter().all(|c| c.starts_with("127.0.0.1:")),
        "{clients:?}"
    );
    assert_eq!(
        t.rows("SELECT DISTINCT actor FROM schema_migrations_log"),
        vec![vec![Some(
            "MIGRATE_ADMIN_TOKEN (API, from 127.0.0.1)".to_owned()
        )]]
    );
}

#[test]
fn public_metrics_and_a_server_that_will_not_start() {
    let t = TestEnv::new();
    two_migrations(&t);
    let server = Server::start(&t, &["--public-metrics"]);
    assert_eq!(server.get("/metrics", None).status, 200);
    assert_eq!(server.get("/admin/migrations/status", None).status, 401);
    drop(server);

    // No token, a short one, a bad token file, a bad address: exit 2.
    let refused = |args: &[&str], token: Option<&str>, message: &str| {
        let mut run = t.migrate();
        run.arg("serve").args(args);
        if let Some(token) = token {
            run.env("MIGRATE_ADMIN_TOKEN", token);
        }
        run.run().code(2).stderr_has(message);
    };
    refused(
        &[],
        None,
        "no token: set MIGRATE_ADMIN_TOKEN, or give --token-file",
    );
    refused(
        &[],
        Some("short"),
        "MIGRATE_ADMIN_TOKEN: the token must be at least 16 characters",
    );
    t.file("bad-tokens", "ci:not-a-hash\n");
    refused(
        &["--token-file", "bad-tokens"],
        None,
        "bad-tokens:1: expected the token's SHA-256",
    );
    refused(
        &["--listen", "localhost"],
        Some(TOKEN),
        "--listen: `localhost` is not an address and port",
    );
    refused(
        &["--allow-from", "10.0.0.0/40"],
        Some(TOKEN),
        "--allow-from: `10.0.0.0/40` is not a network",
    );
    // Set but empty is not "everyone".
    t.migrate()
        .arg("serve")
        .env("MIGRATE_ADMIN_TOKEN", TOKEN)
        .env("MIGRATE_ALLOW_FROM", "")
        .run()
        .code(2)
        .stderr_has("MIGRATE_ALLOW_FROM: no network given");
}

#[test]
fn a_client_that_goes_away_does_not_stop_its_run_nor_does_shutdown() {
    let t = TestEnv::new();
    t.migration(
        "001_slow.sql",
        "SELECT pg_sleep(2);\nCREATE TABLE slow (id int);",
    )
    .migration("002_after.sql", "CREATE TABLE after (id int);");
    let server = Server::start(&t, &[]);
    {
        // Send the request, and hang up once the migration runs.
        let mut stream = TcpStream::connect(server.addr).unwrap();
        let body = r#"{"confirm": true}"#;
        write!(
            stream,
            "POST /admin/migrations/run HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        t.wait_for_migrate_running("pg_sleep(2)");
    }
    // And the server is told to stop while the migration runs.
    let (code, stdout, server) = server.terminate();
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.contains("shutting down: waiting for the running migration to finish"),
        "{stdout}"
    );
    assert_eq!(
        t.state(),
        ["001:applied", "002:applied"],
        "the run finished"
    );
    // The request's audit line says the client went away; the run's end
    // is logged all the same.
    let gone = server
        .audit_lines()
        .into_iter()
        .find(|l| l["route"] == "/admin/migrations/run")
        .expect("the run request's audit line");
    assert_eq!(gone["outcome"], "client_gone");
    assert_eq!(gone["status"], Value::Null);
    assert_eq!(gone["token"], "MIGRATE_ADMIN_TOKEN");
    assert!(
        server
            .stderr()
            .contains(r#""event":"run finished","outcome":"applied""#),
        "{}",
        server.stderr()
    );
    let actors = t.rows("SELECT DISTINCT actor FROM schema_migrations_log");
    assert_eq!(
        actors,
        vec![vec![Some(
            "MIGRATE_ADMIN_TOKEN (API, from 127.0.0.1)".to_owned()
        )]]
    );
    server.assert_no_secrets();
}

#[test]
fn healthz_says_when_the_database_is_gone() {
    let t = TestEnv::on_own_server();
    two_migrations(&t);
    // --wait-for-db is the CLI's: a run through the API does not wait.
    let server = Server::start(&t, &["--wait-for-db", "60s"]);
    assert_eq!(server.get("/healthz", None).status, 200);
    t.stop_server();
    // The answer is kept for a second.
    wait_until(Duration::from_secs(10), "healthz to see it", || {
        server.get("/healthz", None).status == 503
    });
    let down = server.get("/healthz", None);
    assert_eq!(down.json()["database"], "unreachable");
    let status = server.get("/admin/migrations/status", Some(TOKEN));
    assert_eq!(status.status, 503, "{}", status.body);
    assert_eq!(status.json()["error"], "database unavailable");
    // Why, in the driver's words (not the pool's "creating a new object").
    let details = status.json()["details"].as_str().unwrap().to_owned();
    assert!(!details.contains("new object"), "{details}");
    assert!(details.contains("error connecting to server"), "{details}");
    let started = std::time::Instant::now();
    let run = server.run(Some(TOKEN), r#"{"confirm": true}"#);
    assert_eq!(run.status, 503, "{}", run.body);
    assert!(started.elapsed() < Duration::from_secs(10));
    t.start_server();
    wait_until(Duration::from_secs(20), "healthz to recover", || {
        server.get("/healthz", None).status == 200
    });
    server.assert_no_secrets();
}

#[test]
fn a_run_in_progress_is_409_without_spending_the_rate_limit() {
    let t = TestEnv::new();
    t.migration(
        "001_slow.sql",
        "SELECT pg_sleep(2);\nCREATE TABLE slow (id int);",
    );
    // SKIP_MIGRATIONS means nothing to the API, whatever its value.
    let server = Server::start_with(&t, &["--run-limit", "2"], &[("SKIP_MIGRATIONS", "maybe")]);
    let mut first = server.send_run();
    let body = r#"{"confirm": true}"#;
    t.wait_for_migrate_running("pg_sleep(2)");
    for _ in 0..3 {
        let busy = server.run(Some(CI_TOKEN), body);
        assert_eq!(busy.status, 409, "{}", busy.body);
        assert_eq!(busy.json()["error"], "a run is in progress");
    }
    let mut answer = String::new();
    first.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""status":"success""#), "{answer}");
    // Two runs a minute, one spent: had the 409s cost anything, these
    // would be 429. (A run with nothing to do costs nothing either.)
    for _ in 0..2 {
        let out = server.run(Some(CI_TOKEN), body);
        assert_eq!(out.status, 200, "{}", out.body);
        assert_eq!(out.json()["status"], "up_to_date");
    }
}

#[test]
fn wrong_methods_and_routes_answer_json() {
    let t = TestEnv::new();
    two_migrations(&t);
    let server = Server::start(&t, &[]);
    let out = server.get("/admin/migrations/run", Some(TOKEN));
    assert_eq!(out.status, 405);
    assert_eq!(out.json()["error"], "method not allowed");
    let out = server.request("DELETE", "/admin/migrations/status", Some(TOKEN), None);
    assert_eq!(out.status, 405);
    for path in [
        "/admin/migrations/status/",
        "//admin/migrations/status",
        "/admin/%73tatus",
        "/nope",
    ] {
        let out = server.get(path, Some(TOKEN));
        assert_eq!(out.status, 404, "{path}");
        assert_eq!(out.json()["error"], "not found");
        assert_eq!(server.get(path, None).status, 401, "{path} without a token");
    }
    // The API applies everything: --target and --dry-run are refused.
    t.migrate()
        .args(["serve", "--target", "001"])
        .env("MIGRATE_ADMIN_TOKEN", TOKEN)
        .run()
        .code(2)
        .stderr_has("--target and --dry-run are for `migrate up`");
}

/// A client that sends half a request and waits holds neither a
/// connection for long nor the server's shutdown.
#[test]
fn slow_clients_do_not_hold_the_server() {
    let t = TestEnv::new();
    two_migrations(&t);
    let server = Server::start(&t, &[]);
    let mut slow = TcpStream::connect(server.addr).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let started = std::time::Instant::now();
    let (code, _, _server) = server.terminate();
    assert_eq!(code, Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "shutdown took {:?}",
        started.elapsed()
    );
}

/// A read the database cannot answer in time is a 504, its query is ended
/// by the server, and the health check still tells the truth.
#[test]
fn a_read_that_takes_too_long_is_504_and_frees_its_connection() {
    let t = TestEnv::new();
    two_migrations(&t);
    let server = Server::start(&t, &[]);
    assert_eq!(server.run(Some(TOKEN), r#"{"confirm": true}"#).status, 200);
    let mut blocker = t.client();
    let mut transaction = blocker.transaction().unwrap();
    transaction
        .batch_execute("LOCK TABLE schema_migrations IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let out = server.get("/admin/migrations/status", Some(TOKEN));
    assert_eq!(out.status, 504, "{}", out.body);
    assert_eq!(out.json()["error"], "timed out");
    assert_eq!(
        server.get("/healthz", None).status,
        200,
        "the database is reachable"
    );
    // The pooled connection's query was cancelled, and the connection
    // closed.
    wait_until(Duration::from_secs(10), "the read to end", || {
        t.value(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' \
               AND application_name = 'migrate (serve)' AND state = 'active'",
            t.db_name
        )) == Some("0".into())
    });
    transaction.rollback().unwrap();
    assert_eq!(
        server.get("/admin/migrations/status", Some(TOKEN)).status,
        200
    );
}

/// A run longer than the shutdown's grace for requests still finishes,
/// and its client still gets the answer.
#[test]
fn shutdown_answers_a_run_that_outlasts_the_drain() {
    let t = TestEnv::new();
    t.migration(
        "001_slow.sql",
        "SELECT pg_sleep(7);\nCREATE TABLE slow (id int);",
    );
    let mut server = Server::start(&t, &[]);
    let mut client = server.send_run();
    t.wait_for_migrate_running("pg_sleep(7)");
    server.signal(nix::sys::signal::Signal::SIGTERM);
    let mut answer = String::new();
    client.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""status":"success""#), "{answer}");
    assert_eq!(server.child.wait().unwrap().code(), Some(0));
    assert_eq!(t.state(), ["001:applied"]);
    let line = server
        .audit_lines()
        .into_iter()
        .find(|l| l["route"] == "/admin/migrations/run")
        .expect("the run's audit line");
    assert_eq!(line["outcome"], "applied");
    assert_eq!(line["status"], 200);
}

/// A second signal stops the server without waiting: the migration's
/// transaction ends with its connection and nothing is recorded.
#[test]
fn a_second_signal_stops_without_waiting() {
    let t = TestEnv::new();
    t.migration(
        "001_slow.sql",
        "CREATE TABLE slow (id int);\nSELECT pg_sleep(60);",
    );
    let mut server = Server::start(&t, &[]);
    let _client = server.send_run();
    t.wait_for_migrate_running("pg_sleep(60)");
    // Back to back: the second must not be lost while the first is
    // being handled.
    let started = std::time::Instant::now();
    server.signal(nix::sys::signal::Signal::SIGTERM);
    server.signal(nix::sys::signal::Signal::SIGINT);
    let code = server.child.wait().unwrap().code();
    assert_eq!(code, Some(1));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        std::fs::read_to_string(&server.stdout)
            .unwrap()
            .contains("shutting down: waiting for the running migration"),
    );
    assert!(
        server
            .stderr()
            .contains("stopped without waiting for the running migration"),
        "{}",
        server.stderr()
    );
    // The server notices the closed connection and rolls back.
    wait_until(Duration::from_secs(10), "the migration to end", || {
        t.value(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' \
               AND query LIKE '%pg_sleep(60)%' AND pid <> pg_backend_pid()",
            t.db_name
        )) == Some("0".into())
    });
    assert!(!t.table_exists("public.slow"));
    assert!(t.state().is_empty(), "{:?}", t.state());
}

/// What the server shows and runs is what it read when it started.
#[test]
fn the_files_are_read_once_when_the_server_starts() {
    let t = TestEnv::new();
    two_migrations(&t);
    let server = Server::start(&t, &[]);
    t.migration("002_orders.sql", "CREATE TABLE orders_changed (id int);");
    std::fs::remove_file(t.migrations().join("001_users.sql")).unwrap();
    let status = server.get("/admin/migrations/status", Some(TOKEN));
    assert_eq!(status.status, 200, "{}", status.body);
    assert_eq!(status.json()["pending_count"], 2);
    let out = server.run(Some(TOKEN), r#"{"confirm": true}"#);
    assert_eq!(out.status, 200, "{}", out.body);
    assert!(t.table_exists("public.users"));
    assert!(t.table_exists("public.orders"));
    assert!(!t.table_exists("public.orders_changed"));
}

/// A body announced and never sent holds its connection for a bounded
/// time only.
#[test]
fn a_body_that_never_comes_is_408() {
    let t = TestEnv::new();
    two_migrations(&t);
    let server = Server::start(&t, &[]);
    let mut stream = server.send_run_head(100, "{");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let started = std::time::Instant::now();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(!t.table_exists("public.schema_migrations"), "nothing ran");
    assert!(
        server
            .audit_lines()
            .iter()
            .any(|l| l["status"] == 408 && l["outcome"] == "timeout")
    );
}

/// A request still open when shutdown stops waiting is logged as the
/// server's doing, not the client's.
#[test]
fn requests_cut_off_by_shutdown_say_so() {
    let t = TestEnv::new();
    two_migrations(&t);
    let server = Server::start(&t, &[]);
    assert_eq!(server.run(Some(TOKEN), r#"{"confirm": true}"#).status, 200);
    let (mut blocker, _reader) = a_status_read_waiting_on_a_lock(&t, &server);
    let started = std::time::Instant::now();
    let (code, _, server) = server.terminate();
    assert_eq!(code, Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    blocker.batch_execute("ROLLBACK").unwrap();
    let line = server
        .audit_lines()
        .into_iter()
        .find(|l| l["route"] == "/admin/migrations/status")
        .expect("the read's audit line");
    assert_eq!(line["outcome"], "shutdown");
    assert_eq!(line["status"], Value::Null);
}

/// Without a run, a second signal ends the drain at once; requests cut
/// off are audited as the server's doing; the exit is clean.
#[test]
fn a_second_signal_without_a_run_ends_the_drain() {
    let t = TestEnv::new();
    two_migrations(&t);
    let mut server = Server::start(&t, &[]);
    assert_eq!(server.run(Some(TOKEN), r#"{"confirm": true}"#).status, 200);
    let (mut blocker, _reader) = a_status_read_waiting_on_a_lock(&t, &server);
    server.signal(nix::sys::signal::Signal::SIGTERM);
    std::thread::sleep(Duration::from_millis(500));
    let started = std::time::Instant::now();
    server.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(server.child.wait().unwrap().code(), Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    blocker.batch_execute("ROLLBACK").unwrap();
    assert!(!server.stderr().contains("stopped without waiting"));
    let line = server
        .audit_lines()
        .into_iter()
        .find(|l| l["route"] == "/admin/migrations/status")
        .expect("the read's audit line");
    assert_eq!(line["outcome"], "shutdown");
}

/// A run asked for after SIGTERM (its body arriving late) does not start.
#[test]
fn no_run_starts_after_the_signal() {
    let t = TestEnv::new();
    two_migrations(&t);
    let mut server = Server::start(&t, &[]);
    let body = r#"{"confirm": true}"#;
    let mut late = server.send_run_head(body.len(), "");
    // The head is read (the request reaches its handler) before the signal.
    std::thread::sleep(Duration::from_millis(300));
    server.signal(nix::sys::signal::Signal::SIGTERM);
    wait_until(Duration::from_secs(10), "the listener to close", || {
        TcpStream::connect(server.addr).is_err()
    });
    late.write_all(body.as_bytes()).unwrap();
    let mut answer = String::new();
    late.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("shutting down"), "{answer}");
    assert_eq!(server.child.wait().unwrap().code(), Some(0));
    assert!(!t.table_exists("public.users"), "nothing ran");
}

/// Takes an exclusive lock on the state table in a session of its own and
/// sends a status read that waits on it; returns the session (ROLLBACK
/// lets the read go on) and the read's connection.
fn a_status_read_waiting_on_a_lock(t: &TestEnv, server: &Server) -> (postgres::Client, TcpStream) {
    let mut blocker = t.client();
    blocker
        .batch_execute("BEGIN; LOCK TABLE schema_migrations IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let mut reader = TcpStream::connect(server.addr).unwrap();
    write!(
        reader,
        "GET /admin/migrations/status HTTP/1.1\r\nHost: t\r\n\
         Authorization: Bearer {TOKEN}\r\n\r\n"
    )
    .unwrap();
    wait_until(Duration::from_secs(10), "the read to wait", || {
        t.value(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' \
               AND application_name = 'migrate (serve)' AND wait_event_type = 'Lock'",
            t.db_name
        )) == Some("1".into())
    });
    (blocker, reader)
}

/// `serve`'s run through PgBouncer in transaction mode, racing CLI runs
/// through the same pool: each migration once, no lock left behind.
#[test]
fn a_run_through_a_transaction_pool_races_cli_runs_and_applies_each_once() {
    let t = TestEnv::new();
    let Some(bouncer) = crate::common::bouncer::Bouncer::start("transaction", 2) else {
        return;
    };
    for v in 1..=5 {
        t.migration(
            &format!("00{v}_t.sql"),
            &format!("CREATE TABLE t{v} (id int); SELECT pg_sleep(0.05);"),
        );
    }
    let dsn = bouncer.dsn(&t.db_name);
    let mut bare = t.migrate_bare();
    bare.args(["--dsn", &dsn]);
    let server = Server::start_on(&t, bare, &[], &[]);
    let racers: Vec<_> = (0..5)
        .map(|_| {
            t.migrate_bare()
                .args(["up", "--yes", "--dsn", &dsn])
                .spawn()
        })
        .collect();
    let answer = server.run(Some(TOKEN), r#"{"confirm": true}"#);
    // Applied here, or a 409 while a CLI run held the lock.
    assert!(matches!(answer.status, 200 | 409), "{}", answer.body);
    for racer in racers {
        crate::common::Outcome::from_output(racer.wait_with_output().unwrap()).code(0);
    }
    let again = server.run(Some(TOKEN), r#"{"confirm": true}"#);
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(
        t.journal(),
        [
            "applied:001",
            "applied:002",
            "applied:003",
            "applied:004",
            "applied:005"
        ]
    );
    let status = server.get("/admin/migrations/status", Some(TOKEN));
    assert_eq!(status.status, 200, "{}", status.body);
    // The lock route reads through the pool too (the lease table exists).
    let lock = server.get("/admin/migrations/lock", Some(TOKEN));
    assert_eq!(lock.status, 200, "{}", lock.body);
    assert_eq!(lock.json()["held"], false);
    assert_eq!(t.advisory_locks(), 0);
    assert_eq!(
        t.value("SELECT count(*) FROM schema_migrations_lock"),
        Some("0".into())
    );
}

/// Guessing tokens is slowed per client: after 10 failures in a minute a
/// client gets 429 with Retry-After, others are not affected, and its
/// refused requests are written one by one only the first few times, the
/// rest in one line with a count.
#[test]
fn failed_authentication_is_throttled_per_client_and_audited_in_aggregate() {
    let t = TestEnv::new();
    two_migrations(&t);
    if !dual_stack_loopback() {
        return;
    }
    let mut server = Server::start(&t, &["--listen", "[::]:0"]);
    let port = server.addr.port();
    let guesser = SocketAddr::from(([127, 0, 0, 1], port));
    let other = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
    server.addr = guesser;
    let mut statuses = Vec::new();
    for i in 0..40 {
        let out = server.get("/admin/migrations/status", Some(&format!("guess-{i}")));
        statuses.push(out.status);
        if out.status == 429 {
            let retry: u64 = out.header("retry-after").unwrap().parse().unwrap();
            assert!((1..=60).contains(&retry), "{retry}");
            assert_eq!(out.json()["error"], "too many failed attempts");
        }
    }
    assert_eq!(statuses[..10], [403; 10]);
    assert!(statuses[10..].iter().all(|s| *s == 429), "{statuses:?}");
    // A valid token from the same client waits too; the kubelet's probe
    // does not.
    assert_eq!(
        server.get("/admin/migrations/status", Some(TOKEN)).status,
        429
    );
    assert_eq!(server.get("/healthz", None).status, 200);
    // Another client is not slowed.
    server.addr = other;
    assert_eq!(
        server.get("/admin/migrations/status", Some(TOKEN)).status,
        200
    );
    assert_eq!(
        server.get("/admin/migrations/status", Some("nope")).status,
        403
    );
    let written = server
        .audit_lines()
        .iter()
        .filter(|l| l["client"].as_str().unwrap().starts_with("127.0.0.1:"))
        .filter(|l| l["route"] == "/admin/migrations/status")
        .count();
    assert_eq!(written, 5, "the first five refusals, one line each");
    let (code, _, server) = server.terminate();
    assert_eq!(code, Some(0));
    let summary: Vec<Value> = server
        .stderr()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["audit"] == "refused")
        .collect();
    assert_eq!(summary.len(), 1, "{summary:?}");
    assert_eq!(summary[0]["client"], "127.0.0.1");
    // 40 guesses and the valid token's 429, less the five written.
    assert_eq!(summary[0]["requests"], 36);
}

/// 300 idle connections from one address: it keeps at most its share (or,
/// outside `--allow-from`, a few places of their own), and another client's
/// requests and `/healthz` are still answered.
#[test]
fn one_address_cannot_fill_the_connection_cap() {
    let t = TestEnv::new();
    two_migrations(&t);
    if !dual_stack_loopback() {
        return;
    }
    for (args, kept_at_most) in [
        (vec!["--listen", "[::]:0"], 32),
        (vec!["--listen", "[::]:0", "--allow-from", "::1/128"], 16),
    ] {
        let mut server = Server::start(&t, &args);
        let port = server.addr.port();
        let hogs: Vec<TcpStream> = (0..300)
            .filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok())
            .collect();
        // Those over the share are closed at once; the others stay open.
        let mut open = 0;
        for mut hog in &hogs {
            hog.set_read_timeout(Some(Duration::from_millis(20)))
                .unwrap();
            let mut byte = [0u8; 1];
            if let Err(err) = hog.read(&mut byte) {
                assert!(
                    matches!(
                        err.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ),
                    "{err}"
                );
                open += 1;
            }
        }
        assert!(open <= kept_at_most, "{open} kept open ({args:?})");
        server.addr = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
        let started = std::time::Instant::now();
        assert_eq!(
            server.get("/admin/migrations/status", Some(TOKEN)).status,
            200
        );
        assert_eq!(server.get("/healthz", None).status, 200);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        drop(hogs);
        // The connections closed at accept are audited (aggregated).
        assert!(
            server
                .audit_lines()
                .iter()
                .any(|l| l["outcome"] == "too_many_connections"
                    && l["client"].as_str().unwrap().starts_with("127.0.0.1:"))
        );
    }
}

/// Sends `head` in one write and reads the answer (empty if the server
/// closed without one).
fn raw(server: &Server, head: &[u8]) -> String {
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    stream.write_all(head).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// The head limit is 64 KiB however the head arrives, and what is refused
/// before any route sees it is audited too.
#[test]
fn heads_refused_below_the_router_are_limited_exactly_and_audited() {
    let t = TestEnv::new();
    two_migrations(&t);
    let server = Server::start(&t, &[]);
    // A head of exactly `total` bytes, in one write.
    let head = |total: usize| {
        let start = "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\nX-Pad: ";
        let pad = total - start.len() - "\r\n\r\n".len();
        format!("{start}{}\r\n\r\n", "a".repeat(pad)).into_bytes()
    };
    assert_eq!(head(65536).len(), 65536);
    let at_limit = raw(&server, &head(65536));
    assert!(
        at_limit.starts_with("HTTP/1.1 200"),
        "{}",
        &at_limit[..at_limit.len().min(200)]
    );
    for total in [65537, 112 * 1024] {
        let over = raw(&server, &head(total));
        assert!(
            over.starts_with("HTTP/1.1 431"),
            "{total}: {}",
            &over[..over.len().min(200)]
        );
    }
    let bad = raw(&server, b"GARBAGE\r\n\r\n");
    assert!(bad.is_empty() || bad.starts_with("HTTP/1.1 400"), "{bad}");
    let two_lengths = raw(
        &server,
        b"POST /admin/migrations/run HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\
          Content-Length: 17\r\n\r\n{}",
    );
    assert!(
        two_lengths.is_empty() || two_lengths.starts_with("HTTP/1.1 400"),
        "{two_lengths}"
    );
    assert!(!t.table_exists("public.schema_migrations"), "nothing ran");
    wait_until(Duration::from_secs(5), "the audit lines", || {
        let outcomes: Vec<String> = server
            .audit_lines()
            .iter()
            .map(|l| l["outcome"].as_str().unwrap_or_default().to_owned())
            .collect();
        outcomes.iter().filter(|o| *o == "head_too_large").count() == 2
            && outcomes.iter().filter(|o| *o == "bad_request").count() == 2
    });
}

fn approve(server: &Server, token: &str, id: &str) -> Response {
    server.request(
        "POST",
        "/admin/migrations/approve",
        Some(token),
        Some(format!(r#"{{"approval": "{id}"}}"#).as_bytes()),
    )
}

/// A `read` token sees everything and runs nothing.
#[test]
fn a_read_token_reads_and_cannot_run() {
    let t = TestEnv::new();
    two_migrations(&t);
    let server = Server::start(&t, &[]);
    for path in [
        "/admin/migrations/status",
        "/admin/migrations/history",
        "/metrics",
    ] {
        assert_eq!(server.get(path, Some(VIEWER_TOKEN)).status, 200, "{path}");
    }
    let run = server.run(Some(VIEWER_TOKEN), r#"{"confirm": true}"#);
    assert_eq!(run.status, 403, "{}", run.body);
    assert!(run.json()["details"].as_str().unwrap().contains("not run"));
    assert_eq!(approve(&server, VIEWER_TOKEN, "x").status, 403);
    assert!(!t.table_exists("public.schema_migrations"), "nothing ran");
    assert!(
        server
            .audit_lines()
            .iter()
            .any(|l| l["token"] == "viewer" && l["outcome"] == "read_only")
    );
}

/// With --require-approval a run asked for by one token starts only once
/// another approves it; the journal names both.
#[test]
fn a_run_needs_a_second_tokens_approval_when_required() {
    let t = TestEnv::new();
    two_migrations(&t);
    let server = Server::start(&t, &["--require-approval"]);
    let asked = server.run(Some(TOKEN), r#"{"confirm": true}"#);
    assert_eq!(asked.status, 202, "{}", asked.body);
    let doc = asked.json();
    assert_eq!(doc["status"], "awaiting_approval");
    assert_eq!(doc["requested_by"], "MIGRATE_ADMIN_TOKEN");
    assert_eq!(doc["expires_in_seconds"], 900);
    let id = doc["approval"].as_str().unwrap().to_owned();
    assert!(
        !t.table_exists("public.schema_migrations"),
        "not before approval"
    );
    // One request at a time.
    assert_eq!(
        server.run(Some(CI_TOKEN), r#"{"confirm": true}"#).status,
        409
    );
    // Not by the token that asked, nor by a read token, nor a wrong id.
    let own = approve(&server, TOKEN, &id);
    assert_eq!(own.status, 403, "{}", own.body);
    assert_eq!(own.json()["error"], "forbidden");
    assert_eq!(approve(&server, VIEWER_TOKEN, &id).status, 403);
    assert_eq!(approve(&server, CI_TOKEN, "0123456789ab").status, 409);
    let approved = approve(&server, CI_TOKEN, &id);
    assert_eq!(approved.status, 200, "{}", approved.body);
    assert_eq!(approved.json()["status"], "success");
    assert_eq!(
        t.rows("SELECT DISTINCT actor FROM schema_migrations_log"),
        vec![vec![Some(
            "MIGRATE_ADMIN_TOKEN (API, from 127.0.0.1), approved by ci (API, from 127.0.0.1)"
                .to_owned()
        )]]
    );
    // Used once.
    assert_eq!(approve(&server, CI_TOKEN, &id).status, 409);
    let outcomes: Vec<String> = server
        .audit_lines()
        .iter()
        .map(|l| {
            format!(
                "{}:{}",
                l["token"].as_str().unwrap_or("-"),
                l["outcome"].as_str().unwrap()
            )
        })
        .collect();
    for expected in [
        "MIGRATE_ADMIN_TOKEN:awaiting_approval",
        "MIGRATE_ADMIN_TOKEN:self_approval",
        "ci:applied",
    ] {
        assert!(
            outcomes.iter().any(|o| o == expected),
            "{expected}: {outcomes:?}"
        );
    }
}

/// An approved run that finds the lock held by the CLI is 409, and the
/// approval can be used again once the lock is free.
#[test]
fn an_approval_refused_for_the_lock_can_be_used_again() {
    let t = TestEnv::new();
    t.migration(
        "001_slow.sql",
        "SELECT pg_sleep(3);\nCREATE TABLE slow (id int);",
    )
    .migration("002_b.sql", "CREATE TABLE b (id int);");
    let server = Server::start(&t, &["--require-approval"]);
    let asked = server.run(Some(TOKEN), r#"{"confirm": true}"#);
    assert_eq!(asked.status, 202, "{}", asked.body);
    let id = asked.json()["approval"].as_str().unwrap().to_owned();
    let cli = t.migrate().args(["up", "--yes", "--target", "1"]).spawn();
    t.wait_for_migrate_running("pg_sleep(3)");
    let locked = approve(&server, CI_TOKEN, &id);
    assert_eq!(locked.status, 409, "{}", locked.body);
    assert_eq!(
        locked.json()["error"],
        "another run holds the migration lock"
    );
    assert!(cli.wait_with_output().unwrap().status.success());
    let approved = approve(&server, CI_TOKEN, &id);
    assert_eq!(approved.status, 200, "{}", approved.body);
    assert_eq!(approved.json()["applied_count"], 1);
    assert_eq!(approve(&server, CI_TOKEN, &id).status, 409);
}

/// Whether a `[::]` listener takes both 127.0.0.1 and ::1 here: two client
/// addresses for the tests that need them (they are skipped otherwise).
fn dual_stack_loopback() -> bool {
    let both = std::net::TcpListener::bind("[::]:0")
        .and_then(|l| {
            let port = l.local_addr()?.port();
            TcpStream::connect(("127.0.0.1", port))?;
            TcpStream::connect(("::1", port))
        })
        .is_ok();
    if !both {
        eprintln!("skipped: needs a dual-stack loopback for two client addresses");
    }
    both
}

/// The page, its files and every answer carry a strict policy; the page
/// sets no cookie and is refused outside the allowed networks.
#[test]
fn the_page_and_its_files_are_served_under_a_strict_policy() {
    let t = TestEnv::new();
    two_migrations(&t);
    let server = Server::start(&t, &[]);
    let policy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                  connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
    let page = server.get("/", None);
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(
        page.body
            .contains(r#"<script src="/assets/app.js" defer></script>"#)
    );
    for (path, content_type) in [
        ("/assets/app.js", "text/javascript; charset=utf-8"),
        ("/assets/app.css", "text/css; charset=utf-8"),
        ("/assets/icon.svg", "image/svg+xml"),
    ] {
        let file = server.get(path, None);
        assert_eq!(file.status, 200, "{path}");
        assert_eq!(file.header("content-type"), Some(content_type), "{path}");
        assert!(!file.body.is_empty());
    }
    let missing = server.get("/assets/nope.js", None);
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"], "not found");
    // The API's answers as well as the page's.
    for answer in [
        &page,
        &missing,
        &server.get("/admin/migrations/status", Some(TOKEN)),
    ] {
        assert_eq!(answer.header("content-security-policy"), Some(policy));
        assert_eq!(answer.header("x-frame-options"), Some("DENY"));
        assert_eq!(answer.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(answer.header("referrer-policy"), Some("no-referrer"));
        assert!(answer.header("set-cookie").is_none());
    }
    assert_eq!(
        server
            .get("/admin/migrations/status", Some(TOKEN))
            .header("cache-control"),
        Some("no-store")
    );
    // Who the token is: the page asks at sign-in.
    let me = server.get("/admin/session", Some(TOKEN)).json();
    assert_eq!(me["token"], "MIGRATE_ADMIN_TOKEN");
    assert_eq!(me["role"], "run");
    assert_eq!(me["require_approval"], false);
    assert_eq!(
        server.get("/admin/session", Some(VIEWER_TOKEN)).json()["role"],
        "read"
    );
    assert_eq!(server.get("/admin/session", None).status, 401);
    assert_eq!(
        server
            .get("/admin/session", Some("wrong-token-000000000000"))
            .status,
        403
    );

    let outside = Server::start(&t, &["--allow-from", "10.0.0.0/8"]);
    assert_eq!(outside.get("/", None).status, 403);
    assert_eq!(outside.get("/assets/app.js", None).status, 403);
}

/// What the page shows beside the table: the totals line, the database,
/// the bootstrap scripts, and from its own route the lock's holder.
#[test]
fn status_says_who_holds_the_lock_and_which_database() {
    let t = TestEnv::new();
    two_migrations(&t);
    t.migrate()
        .arg("up")
        .args(["--target", "001"])
        .run()
        .code(0);
    let server = Server::start(&t, &[]);
    let doc = server.get("/admin/migrations/status", Some(TOKEN)).json();
    assert_eq!(doc["summary"], "2 migrations: 1 applied, 1 pending");
    assert_eq!(doc["totals"]["applied"], 1);
    assert_eq!(doc["totals"]["pending"], 1);
    let lock = server
        .get("/admin/migrations/lock", Some(VIEWER_TOKEN))
        .json();
    assert_eq!(lock["held"], false);
    assert_eq!(lock["holder"], Value::Null);
    assert_eq!(lock["key"], t.default_lock_key().to_string());
    assert_eq!(doc["database"]["schema"], "public");
    assert_eq!(doc["database"]["table"], "schema_migrations");
    let target = doc["database"]["target"].as_str().unwrap();
    assert!(
        target.contains(&t.db_name) && !target.contains(SECRET),
        "{target}"
    );
    assert_eq!(doc["bootstrap_scripts"], serde_json::json!([]));
    assert_eq!(doc["approval"], Value::Null);

    let _holder = t.hold_lock("deploy-job", t.default_lock_key());
    let doc = server.get("/admin/migrations/lock", Some(TOKEN)).json();
    assert_eq!(doc["held"], true);
    assert_eq!(doc["holder"]["application"], "deploy-job");
    let said = doc["description"].as_str().unwrap();
    assert!(
        said.starts_with("pid ") && said.contains("deploy-job"),
        "{said}"
    );
    // A run refused for the lock names the holder, as JSON too.
    let refused = server.run(Some(TOKEN), r#"{"confirm": true}"#);
    assert_eq!(refused.status, 409);
    assert_eq!(refused.json()["holder"]["application"], "deploy-job");
}

/// A run told what was confirmed refuses to apply anything else.
#[test]
fn a_run_that_would_apply_what_was_not_confirmed_is_refused() {
    let t = TestEnv::new();
    two_migrations(&t);
    let server = Server::start(&t, &["--run-limit", "1"]);
    let refused = server.run(Some(TOKEN), r#"{"confirm": true, "expect": ["001"]}"#);
    assert_eq!(refused.status, 409, "{}", refused.body);
    let doc = refused.json();
    assert_eq!(doc["error"], "conflict");
    let details = doc["details"].as_str().unwrap();
    assert!(
        details.contains("002_orders is not among them") && details.contains("nothing was run"),
        "{details}"
    );
    assert!(!t.table_exists("public.orders") && !t.table_exists("public.users"));
    let wrong = server.run(Some(TOKEN), r#"{"confirm": true, "expect": "001"}"#);
    assert_eq!(wrong.status, 400, "{}", wrong.body);
    // Nothing ran, so the one run a minute is still there, and the metrics
    // count no failed run.
    let applied = server.run(
        Some(TOKEN),
        r#"{"confirm": true, "expect": ["001", "002"]}"#,
    );
    assert_eq!(applied.status, 200, "{}", applied.body);
    assert_eq!(applied.json()["applied_count"], 2);
    assert!(
        applied
            .header("migrate-run")
            .is_some_and(|r| r.parse::<u64>().is_ok())
    );
    assert_eq!(t.state().len(), 2);
    let metrics = server.get("/metrics", Some(TOKEN)).body;
    assert!(metrics.contains("migrate_last_run_success 1"), "{metrics}");
}

/// With approval required: asking again replaces one's own request, and an
/// approval refused because the pending migrations changed is used up, so
/// a stale request blocks nobody.
#[test]
fn a_stale_approval_request_is_replaced_or_used_up() {
    let t = TestEnv::new();
    two_migrations(&t);
    let server = Server::start(&t, &["--require-approval"]);
    let first = server.run(Some(TOKEN), r#"{"confirm": true, "expect": []}"#);
    assert_eq!(first.status, 202, "{}", first.body);
    let first_id = first.json()["approval"].as_str().unwrap().to_owned();
    let second = server.run(Some(TOKEN), r#"{"confirm": true, "expect": ["001"]}"#);
    assert_eq!(second.status, 202, "{}", second.body);
    let id = second.json()["approval"].as_str().unwrap().to_owned();
    assert_ne!(first_id, id);
    assert_eq!(approve(&server, CI_TOKEN, &first_id).status, 409);
    // Another token cannot replace it.
    assert_eq!(
        server.run(Some(CI_TOKEN), r#"{"confirm": true}"#).status,
        409
    );
    let status = server
        .get("/admin/migrations/status", Some(VIEWER_TOKEN))
        .json();
    assert_eq!(status["approval"]["approval"], id.as_str());
    assert_eq!(status["approval"]["requested_by"], "MIGRATE_ADMIN_TOKEN");
    assert_eq!(status["approval"]["migrations"], serde_json::json!(["001"]));
    // 002 is pending too: the run asked for only 001 is refused, and used up.
    let refused = approve(&server, CI_TOKEN, &id);
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert_eq!(refused.json()["error"], "conflict");
    assert_eq!(approve(&server, CI_TOKEN, &id).status, 409);
    assert_eq!(
        server.get("/admin/migrations/status", Some(TOKEN)).json()["approval"],
        Value::Null
    );
    assert_eq!(
        server.run(Some(CI_TOKEN), r#"{"confirm": true}"#).status,
        202
    );
}

/// Event streams have places of their own, a few per token, and say when
/// they end.
#[test]
fn event_streams_are_capped_per_token_and_audited_when_they_end() {
    let t = TestEnv::new();
    two_migrations(&t);
    let server = Server::start(&t, &[]);
    let mut open: Vec<TcpStream> = (0..8)
        .map(|_| {
            let (stream, head) = open_events(&server, VIEWER_TOKEN);
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            stream
        })
        .collect();
    let refused = server.get("/admin/migrations/events", Some(VIEWER_TOKEN));
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.header("retry-after"), Some("30"));
    assert_eq!(refused.json()["error"], "too many event streams");
    // Another token still gets one.
    let (mut other, head) = open_events(&server, CI_TOKEN);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    read_events(&mut other, "hello");
    // One closed gives its place back, and is audited.
    drop(open.pop());
    wait_until(Duration::from_secs(10), "a stream_ended line", || {
        server.stderr().lines().any(|l| {
            serde_json::from_str::<Value>(l).is_ok_and(|v| {
                v["audit"] == "stream_ended"
                    && v["reason"] == "client_gone"
                    && v["token"] == "viewer"
            })
        })
    });
    let (_again, head) = open_events(&server, VIEWER_TOKEN);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (_, _, server) = server.terminate();
    let ended = server
        .stderr()
        .lines()
        .filter(|l| l.contains("\"reason\":\"shutdown\""))
        .count();
    assert_eq!(ended, 9, "{}", server.stderr());
}

/// Reads server-sent events from `stream` until one named `last` (or the
/// stream ends): the names and data, in order.
fn read_events(stream: &mut TcpStream, last: &str) -> (Vec<(String, Value)>, bool) {
    let mut text = String::new();
    let mut buffer = [0u8; 4096];
    let mut events = Vec::new();
    loop {
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let mut name = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = Some(n.to_owned());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = Some(serde_json::from_str::<Value>(d).unwrap());
                }
            }
            if let (Some(name), Some(data)) = (name, data) {
                let done = name == last;
                events.push((name, data));
                if done {
                    return (events, false);
                }
            }
        }
        match stream.read(&mut buffer) {
            Ok(0) => return (events, true),
            Ok(n) => text.push_str(&String::from_utf8_lossy(&buffer[..n])),
            Err(err) => panic!("the stream: {err}; so far {events:?}"),
        }
    }
}

/// Opens the event stream with `token`: the stream, after its head.
fn open_events(server: &Server, token: &str) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET /admin/migrations/events HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\
         Authorization: Bearer {token}\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "the head ended early");
        head.push(byte[0]);
    }
    (stream, String::from_utf8(head).unwrap())
}

/// The events of a run reach every stream as they happen, each migration
/// starting and ending, then the answer; streams end at shutdown and do
/// not hold it.
#[test]
fn the_event_stream_shows_a_run_live_and_ends_at_shutdown() {
    let t = TestEnv::new();
    t.migration("001_users.sql", "CREATE TABLE users (id int);")
        .migration("002_slow.sql", "SELECT pg_sleep(0.5);");
    let server = Server::start(&t, &[]);
    assert_eq!(server.get("/admin/migrations/events", None).status, 401);
    let (mut watching, head) = open_events(&server, VIEWER_TOKEN);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{head}"
    );
    let (hello, _) = read_events(&mut watching, "hello");
    assert_eq!(hello[0].1["keep_alive_seconds"], 15);

    let mut run = server.send_run();
    let (events, ended) = read_events(&mut watching, "run_finished");
    assert!(!ended);
    let mut answer = String::new();
    run.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let answer: Value = serde_json::from_str(answer.split_once("\r\n\r\n").unwrap().1).unwrap();
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "run_started",
            "plan",
            "migration_started",
            "migration_applied",
            "migration_started",
            "migration_applied",
            "run_finished"
        ]
    );
    let run = &events[0].1["run"];
    assert!(events.iter().all(|(_, data)| &data["run"] == run));
    assert_eq!(
        events[0].1["actor"],
        "MIGRATE_ADMIN_TOKEN (API, from 127.0.0.1)"
    );
    assert_eq!(events[2].1["version"], "001");
    assert_eq!(events[4].1["version"], "002");
    assert!(events[5].1["duration_ms"].as_u64().unwrap() >= 500);
    let finished = &events[6].1;
    assert_eq!(finished["status"], 200);
    assert_eq!(finished["body"], answer, "the same answer");

    // SIGTERM: the stream ends at once, and the server with it.
    let started = std::time::Instant::now();
    let (code, stdout, _server) = server.terminate();
    let (_, ended) = read_events(&mut watching, "never");
    assert!(ended);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "an open stream held the shutdown for {:?}",
        started.elapsed()
    );
}

/// A head that never ends is cut off at the deadline, and audited.
#[test]
fn a_head_that_never_ends_is_cut_off_and_audited() {
    let t = TestEnv::new();
    two_migrations(&t);
    let server = Server::start(&t, &[]);
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
        .write_all(b"GET /admin/migrations/status HTTP/1.1\r\nHost: t\r\n")
        .unwrap();
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(9) && waited < Duration::from_secs(15),
        "closed after {waited:?}"
    );
    wait_until(Duration::from_secs(5), "the audit line", || {
        server
            .audit_lines()
            .iter()
            .any(|l| l["outcome"] == "head_timeout" && l["client"].as_str().is_some())
    });
}

/// A client that sends requests and never reads the answers holds its
/// connection only until a write has waited `WRITE_TIMEOUT` (20 s).
#[test]
fn a_client_that_stops_reading_is_cut_off() {
    let t = TestEnv::new();
    // Answers of about 240 KB each.
    for i in 1..=1000 {
        t.migration(&format!("{i:04}_table_{i}.sql"), "SELECT 1;");
    }
    let server = Server::start(&t, &[]);
    let mut stream = TcpStream::connect(server.addr).unwrap();
    let request = format!(
        "GET /admin/migrations/status HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    );
    // 80 answers (19 MB) are far more than the kernel buffers on both sides
    // hold while the client reads nothing (a receive buffer grows only as
    // its reader reads).
    for _ in 0..80 {
        stream.write_all(request.as_bytes()).unwrap();
    }
    std::thread::sleep(Duration::from_secs(26));
    // Cut off: what was sent before is there, then the end, at once.
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = std::time::Instant::now();
    let mut got = Vec::new();
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buffer[..n]),
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(err) => panic!(
                "the connection stayed open: {err} after {} bytes",
                got.len()
            ),
        }
    }
    let answers = String::from_utf8_lossy(&got)
        .matches("HTTP/1.1 200")
        .count();
    assert!(answers < 80, "all {answers} answers were sent");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{} bytes took {:?}",
        got.len(),
        started.elapsed()
    );
    // The server goes on serving.
    assert_eq!(server.get("/healthz", None).status, 200);
}
