//! Reaching the server: exit 5, passwords, TLS modes.

use crate::common::tls::SelfSigned;
use crate::common::{Outcome, SECRET, Server, TestEnv, server};
use migrate::pgserver::ClusterOptions;

#[test]
fn an_unreachable_server_is_exit_5_without_the_password() {
    let t = TestEnv::new();
    t.migration("001_a.sql", "SELECT 1;");
    let dsn = format!("postgres://app:{SECRET}@127.0.0.1:1/app?connect_timeout=3");
    for command in ["up", "status", "history"] {
        t.migrate_bare()
            .args([command, "--dsn", &dsn])
            .run()
            .code(5)
            .stderr_has("cannot connect to app@127.0.0.1:1/app: error connecting to server: Connection refused");
    }
}

#[test]
fn a_malformed_connection_string_names_the_setting_and_value() {
    let t = TestEnv::new();
    t.migration("001_a.sql", "SELECT 1;");
    for dsn in [
        format!("postgres://app:{SECRET}@127.0.0.1:54x2/app"),
        format!("host=127.0.0.1 port=54x2 user=app password={SECRET}"),
    ] {
        t.migrate_bare()
            .args(["status", "--dsn", &dsn])
            .run()
            .code(2)
            .stderr_has("--dsn: invalid connection string: port `54x2` is not a number");
    }
}

/// The harness's own server, which also listens on TCP with password
/// authentication and TLS; tests that need it skip on an external server.
fn own_server() -> Option<(
    &'static migrate::pgserver::TempCluster,
    &'static crate::common::tls::Certificates,
)> {
    match server() {
        Server::Temp { cluster, tls } => Some((cluster, tls)),
        Server::External { .. } => {
            eprintln!("skipped: needs the harness's own server (MIGRATE_TEST_DSN is set)");
            None
        }
    }
}

#[test]
fn password_authentication_over_tcp() {
    let Some((cluster, _)) = own_server() else {
        return;
    };
    let t = TestEnv::new();
    t.migration("001_a.sql", "CREATE TABLE a (id int);");
    let port = cluster.port();
    let good = format!(
        "postgres://postgres:postgres@127.0.0.1:{port}/{}?sslmode=disable",
        t.db_name
    );
    t.migrate_bare()
        .args(["up", "--yes", "--dsn", &good])
        .run()
        .code(0);
    let bad = format!(
        "postgres://postgres:{SECRET}@127.0.0.1:{port}/{}?sslmode=disable",
        t.db_name
    );
    // A refused password is not worth waiting for.
    let out = t
        .migrate_bare()
        .args(["status", "--wait-for-db", "30s", "--dsn", &bad])
        .run();
    out.code(5)
        .stderr_has("password authentication failed for user \"postgres\"");
    assert!(
        !out.stdout.contains("waiting for the database"),
        "{}",
        out.stdout
    );
    assert!(
        out.elapsed < std::time::Duration::from_secs(5),
        "took {:?}",
        out.elapsed
    );
}

/// Fails the test if the output shows `password` or any run of 4 or more
/// characters of what follows its first `@`, which is what a URL split at
/// the first `@` would show as the host.
#[track_caller]
fn assert_no_part_of(out: &Outcome, password: &str) {
    let tail = &password[password.find('@').unwrap() + 1..];
    let mut parts = vec![password];
    for len in 4..=tail.len() {
        parts.extend((0..=tail.len() - len).map(|start| &tail[start..start + len]));
    }
    for part in parts {
        assert!(
            !out.stdout.contains(part) && !out.stderr.contains(part),
            "the output shows {part:?} of the password\n--- stdout\n{}\n--- stderr\n{}",
            out.stdout,
            out.stderr
        );
    }
}

#[test]
fn a_password_with_a_bare_at_connects_and_never_shows() {
    let Some((cluster, _)) = own_server() else {
        return;
    };
    let t = TestEnv::new();
    t.migration("001_a.sql", "CREATE TABLE a (id int);");
    // A role of its own: the shared server's `postgres` password is used
    // by other tests running at the same time.
    let role = format!("{}_at", t.db_name);
    let password = "Zx9@Qv7Kp2Wm4";
    t.client()
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN; \
             ALTER ROLE {role} PASSWORD '{password}'; \
             ALTER DATABASE \"{}\" OWNER TO {role};",
            t.db_name
        ))
        .unwrap();
    let port = cluster.port();
    let dsn = |password: &str| {
        format!(
            "postgres://{role}:{password}@127.0.0.1:{port}/{}?sslmode=disable",
            t.db_name
        )
    };
    let target = format!("{role}@127.0.0.1:{port}/{}", t.db_name);

    let out = t
        .migrate_bare()
        .args(["status", "--dsn", &dsn(password)])
        .run();
    out.code(0).stdout_has("001");
    assert_no_part_of(&out, password);
    let out = t
        .migrate_bare()
        .args(["-v", "up", "--yes", "--dsn", &dsn(password)])
        .run();
    out.code(0)
        .stdout_has(&format!("connected to {target} (PostgreSQL"));
    assert_no_part_of(&out, password);
    assert!(t.table_exists("public.a"));
    for args in [&["status", "--json"][..], &["lock"]] {
        let out = t
            .migrate_bare()
            .args(args)
            .args(["--dsn", &dsn(password)])
            .run();
        out.code(0);
        assert_no_part_of(&out, password);
    }

    // Refused: the server names the user, not the password.
    let wrong = "Zx9@Rb3Nt8Yc6";
    let out = t
        .migrate_bare()
        .args(["status", "--dsn", &dsn(wrong)])
        .run();
    out.code(5)
        .stderr_has(&format!("cannot connect to {target}"))
        .stderr_has(&format!(
            "password authentication failed for user \"{role}\""
        ));
    assert_no_part_of(&out, wrong);
}

#[test]
fn a_password_with_a_bare_at_is_not_shown_when_the_server_is_unreachable() {
    let t = TestEnv::new();
    let password = "Zx9@Qv7Kp2Wm4";
    let out = t
        .migrate_bare()
        .args([
            "status",
            "--dsn",
            &format!("postgres://app:{password}@127.0.0.1:1/app?connect_timeout=3"),
        ])
        .run();
    out.code(5)
        .stderr_has("cannot connect to app@127.0.0.1:1/app: error connecting to server");
    assert_no_part_of(&out, password);
}

#[test]
fn tls_modes() {
    let Some((cluster, certs)) = own_server() else {
        return;
    };
    let t = TestEnv::new();
    // Records whether the session that applies it is encrypted.
    t.migration(
        "001_a.sql",
        "CREATE TABLE tls_check AS SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid();",
    );
    let port = cluster.port();
    let base = |host: &str| {
        format!(
            "host={host} port={port} user=postgres password=postgres dbname={}",
            t.db_name
        )
    };
    let ca = certs.ca_cert.display().to_string();
    let other_ca = certs.other_ca_cert.display().to_string();

    // require: encrypted, certificate not checked.
    t.migrate_bare()
        .args([
            "up",
            "--yes",
            "--dsn",
            &format!("{} sslmode=require", base("127.0.0.1")),
        ])
        .run()
        .code(0);
    assert_eq!(t.value("SELECT ssl FROM tls_check"), Some("t".into()));

    // verify-full: the right authority and the certificate's host name.
    t.migrate_bare()
        .args([
            "status",
            "--dsn",
            &format!("{} sslmode=verify-full sslrootcert={ca}", base("localhost")),
        ])
        .run()
        .code(0);
    // verify-full by address: the certificate names localhost only.
    t.migrate_bare()
        .args([
            "status",
            "--dsn",
            &format!("{} sslmode=verify-full sslrootcert={ca}", base("127.0.0.1")),
        ])
        .run()
        .code(5)
        .stderr_has("cannot connect to postgres@127.0.0.1");
    // verify-ca accepts the address, since it checks only the chain.
    t.migrate_bare()
        .args([
            "status",
            "--dsn",
            &format!("{} sslmode=verify-ca sslrootcert={ca}", base("127.0.0.1")),
        ])
        .run()
        .code(0);
    // Another authority: refused, by both verify modes and by require with a root certificate.
    for mode in ["verify-full", "verify-ca", "require"] {
        t.migrate_bare()
            .args([
                "status",
                "--dsn",
                &format!(
                    "{} sslmode={mode} sslrootcert={other_ca}",
                    base("localhost")
                ),
            ])
            .run()
            .code(5);
    }
    // verify-full with no root certificate anywhere: told where to put one.
    t.migrate_bare()
        .args([
            "status",
            "--dsn",
            &format!("{} sslmode=verify-full", base("localhost")),
        ])
        .run()
        .code(2)
        .stderr_has("sslmode verify-ca and verify-full need a root certificate");
    // A URL with the same keys.
    let url = format!(
        "postgresql://postgres:postgres@localhost:{port}/{}?sslmode=verify-full&sslrootcert={}",
        t.db_name,
        ca.replace('/', "%2F")
    );
    t.migrate_bare()
        .args(["status", "--dsn", &url])
        .run()
        .code(0);
}

/// A server of the test's own with TLS from the certificate `name` of
/// `certs`, and `migrate status` against it over TCP.
fn own_tls_server(certs: &SelfSigned, name: &str) -> TestEnv {
    let (cert, key) = (format!("{name}.crt"), format!("{name}.key"));
    TestEnv::on_own_server_with(ClusterOptions {
        tcp: true,
        settings: vec![
            ("ssl".into(), "on".into()),
            ("ssl_cert_file".into(), cert.clone()),
            ("ssl_key_file".into(), key.clone()),
        ],
        data_files: vec![
            (cert.clone(), certs.read(&cert)),
            (key.clone(), certs.read(&key)),
        ],
    })
}

fn status_over_tls(t: &TestEnv, host: &str, mode: &str, root: &std::path::Path) -> Outcome {
    t.migrate_bare()
        .args([
            "status",
            "--dsn",
            &format!(
                "host={host} port={} user=postgres password=postgres dbname=postgres \
                 sslmode={mode} sslrootcert={}",
                t.own_port(),
                root.display()
            ),
        ])
        .run()
}

/// A self-signed server certificate given as the root certificate, as
/// psql accepts it: the server's own certificate is the trust anchor.
#[test]
fn a_self_signed_server_certificate_as_the_root() {
    let certs = SelfSigned::new();
    let own = certs.make("own", "localhost", &["subjectAltName=DNS:localhost"]);
    let other = certs.make("other", "localhost", &["subjectAltName=DNS:localhost"]);
    let t = own_tls_server(&certs, "own");

    status_over_tls(&t, "localhost", "verify-full", &own).code(0);
    // The certificate names localhost only.
    status_over_tls(&t, "127.0.0.1", "verify-full", &own)
        .code(5)
        .stderr_has("cannot connect to postgres@127.0.0.1")
        .stderr_has("certificate not valid for name \"127.0.0.1\"");
    // verify-ca checks the certificate, not the name.
    status_over_tls(&t, "127.0.0.1", "verify-ca", &own).code(0);
    status_over_tls(&t, "127.0.0.1", "require", &own).code(0);
    // Another self-signed certificate, for the same name, is no anchor for this one.
    for mode in ["verify-full", "verify-ca", "require"] {
        status_over_tls(&t, "localhost", mode, &other)
            .code(5)
            .stderr_has("invalid peer certificate: UnknownIssuer");
    }
}

/// PostgreSQL's documented recipe for a self-signed server certificate
/// names the host in the common name only, which libpq accepts when the
/// certificate has no alternative name of the host's kind.
#[test]
fn a_self_signed_server_certificate_with_the_name_in_its_common_name() {
    let certs = SelfSigned::new();
    let own = certs.make("own", "localhost", &[]);
    let t = own_tls_server(&certs, "own");

    status_over_tls(&t, "localhost", "verify-full", &own).code(0);
    status_over_tls(&t, "127.0.0.1", "verify-full", &own)
        .code(5)
        .stderr_has("certificate not valid for name \"127.0.0.1\"");
    status_over_tls(&t, "127.0.0.1", "verify-ca", &own).code(0);
}

#[test]
fn application_name_defaults_to_migrate() {
    let t = TestEnv::new();
    t.migration("001_slow.sql", "SELECT pg_sleep(2);");
    let mut child = t.migrate().args(["up", "--yes"]).spawn();
    // Found by its application_name, which the DSN does not set.
    t.wait_for_migrate_running("pg_sleep(2)");
    assert!(child.wait().unwrap().success());
}

/// A DSN given without `--dsn` was quoted whole by the parser's error.
#[test]
fn a_dsn_given_as_an_argument_is_not_echoed_with_its_password() {
    let t = TestEnv::new();
    for args in [
        vec!["up", "postgres://u:Zx9@Secret7@127.0.0.1:1/db"],
        vec!["postgres://u:Zx9@Secret7@127.0.0.1:1/db"],
        vec!["up", "host=h password=Zx9Secret7", "--json"],
        vec!["up", "--lock-wait", "postgres://u:Zx9@Secret7@h/db"],
    ] {
        let out = t.migrate_bare().args(&args).run();
        out.code(2);
        for text in [&out.stdout, &out.stderr] {
            assert!(!text.contains("Secret7"), "{args:?}: {text}");
            assert!(!text.contains("Zx9"), "{args:?}: {text}");
        }
    }
}
