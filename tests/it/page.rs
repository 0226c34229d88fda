//! The admin page, in a real headless Chromium (WebDriver) against a real
//! `migrate serve` and a real PostgreSQL. Each state's screenshot is saved
//! under `target/screenshots/`.

use crate::common::TestEnv;
use crate::common::browser::{Browser, DESKTOP, ENTER, ESCAPE, PHONE, key};
use crate::serve::{CI_TOKEN, Server, TOKEN, VIEWER_TOKEN};
use serde_json::json;
use std::time::Duration;

const TOKEN_KEY: &str = "migrate.admin.token";

/// The page in a new browser; `None` when the machine has no Chromium (see
/// [`Browser::start`]).
fn open(server: &Server, size: (u32, u32)) -> Option<Browser> {
    let browser = Browser::start(size)?;
    browser.goto(&format!("http://{}/", server.addr));
    browser.wait(Duration::from_secs(20), "the sign-in form", |b| {
        b.shown("#token")
    });
    Some(browser)
}

/// Types the token and presses Enter, as a person would.
fn sign_in(browser: &Browser, token: &str) {
    browser.type_into("#token", token);
    browser.keys(&key(ENTER));
    browser.wait(Duration::from_secs(20), "the console", |b| {
        b.shown("#console") && !b.text("#summary").is_empty()
    });
}

/// The state table's rows (none before the first run made it).
fn applied(t: &TestEnv) -> Vec<String> {
    if t.table_exists("public.schema_migrations") {
        t.state()
    } else {
        Vec::new()
    }
}

fn stored_token(browser: &Browser) -> Option<String> {
    browser
        .exec(
            "return sessionStorage.getItem(arguments[0]);",
            vec![json!(TOKEN_KEY)],
        )
        .as_str()
        .map(str::to_owned)
}

fn dialog_open(browser: &Browser) -> bool {
    browser
        .exec("return document.getElementById('confirm').open;", vec![])
        .as_bool()
        .unwrap_or(false)
}

fn badges(browser: &Browser) -> Vec<String> {
    browser
        .exec(
            "return [...document.querySelectorAll('#migrations .badge')].map(e => e.innerText);",
            vec![],
        )
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn with_the_keyboard_alone_an_operator_signs_in_runs_and_watches_them_apply() {
    let t = TestEnv::new();
    t.migration("001_users.sql", "CREATE TABLE users (id int);")
        .migration(
            "002_slow.sql",
            "SELECT pg_sleep(1.5);\nCREATE TABLE orders (id int);",
        )
        .migration("003_index.sql", "CREATE INDEX ON users (id);");
    let server = Server::start(&t, &[]);
    let Some(browser) = open(&server, DESKTOP) else {
        return;
    };
    browser.screenshot("page-sign-in");
    assert_eq!(browser.focused(), "token", "the token field has the focus");

    sign_in(&browser, TOKEN);
    // The token is kept for the tab, never in the address or a cookie.
    assert_eq!(stored_token(&browser).as_deref(), Some(TOKEN));
    assert!(!browser.url().contains(TOKEN), "{}", browser.url());
    assert_eq!(
        browser.exec("return document.cookie;", vec![]),
        json!(""),
        "no cookies"
    );
    browser.wait_text("#summary", "3 migrations: 0 applied, 3 pending");
    assert_eq!(badges(&browser), ["PENDING", "PENDING", "PENDING"]);
    assert_eq!(browser.text("#lock"), "free");
    let target = browser.text("#target");
    assert!(target.contains(&t.db_name), "{target}");
    assert!(!target.contains("password"), "{target}");
    assert_eq!(browser.text("#tracking"), "public.schema_migrations");
    assert!(browser.shown("#history-empty"));
    browser.screenshot("page-pending");

    // A screen reader finds a name for every control and region.
    let unnamed = browser.exec(
        "const named = (e) => (e.getAttribute('aria-label') || '').trim() \
             || (e.labels && [...e.labels].some(l => l.innerText.trim())) \
             || (e.getAttribute('aria-labelledby') || '').split(' ').some(id => \
                  document.getElementById(id) && document.getElementById(id).innerText.trim()) \
             || (e.tagName === 'BUTTON' && e.innerText.trim()); \
         return [...document.querySelectorAll('button, input, dialog, section, [role=region]')] \
             .filter(e => !named(e)).map(e => e.outerHTML.slice(0, 80));",
        vec![],
    );
    assert_eq!(unnamed, json!([]), "controls without a name");
    assert_eq!(
        browser.exec(
            "return document.getElementById('progress').getAttribute('aria-live');",
            vec![]
        ),
        json!("polite"),
        "progress is announced"
    );

    // Tab reaches the run button by way of "Check status".
    let passed = browser.tab_to("run", 10);
    assert!(passed.contains(&"refresh".to_owned()), "{passed:?}");
    browser.keys(&key(ENTER));
    browser.wait(Duration::from_secs(10), "the confirmation", dialog_open);
    let plan = browser.text("#confirm-list");
    assert_eq!(
        plan.lines().collect::<Vec<_>>(),
        ["001_users", "002_slow", "003_index"],
        "the dialog lists exactly what will run"
    );
    assert_eq!(browser.text("#confirm-title"), "Run 3 pending migrations?");
    assert_eq!(browser.focused(), "confirm-cancel", "the safe choice first");
    browser.screenshot("page-confirm");

    // Escape: nothing runs, and the focus is back on the button.
    browser.keys(&key(ESCAPE));
    browser.wait(Duration::from_secs(5), "the dialog to close", |b| {
        !dialog_open(b)
    });
    assert_eq!(browser.focused(), "run");
    std::thread::sleep(Duration::from_millis(300));
    assert!(applied(&t).is_empty(), "{:?}", applied(&t));

    browser.keys(&key(ENTER));
    browser.wait(Duration::from_secs(10), "the confirmation", dialog_open);
    browser.tab_to("confirm-run", 3);
    browser.keys(&key(ENTER));

    // Live: the slow one is shown running before the run has ended.
    browser.wait_text("#progress", "002_slow: running (2 of 3)");
    // The table follows as each one commits.
    browser.wait(Duration::from_secs(5), "001 shown applied mid-run", |b| {
        badges(b) == ["APPLIED", "PENDING", "PENDING"]
    });
    assert_eq!(browser.text("#result"), "", "no result before the end");
    let progress = browser.text("#progress");
    assert!(
        progress.contains("001_users: applied in"),
        "one line per migration as it ends: {progress}"
    );
    browser.screenshot("page-running");

    let result = browser.wait_text("#result", "Applied 3 migrations");
    assert!(result.contains("002_slow"), "{result}");
    assert!(
        !result.contains("null") && !result.contains("undefined"),
        "{result}"
    );
    browser.wait_text("#summary", "3 migrations: 3 applied, 0 pending");
    assert_eq!(badges(&browser), ["APPLIED", "APPLIED", "APPLIED"]);
    let progress = browser.text("#progress");
    for line in [
        "Run started by",
        "Applying 3 migrations",
        "003_index: applied in",
    ] {
        assert!(progress.contains(line), "{line}: {progress}");
    }
    let history = browser.text("#history tbody");
    assert_eq!(history.lines().count(), 3, "{history}");
    assert!(
        history.contains("MIGRATE_ADMIN_TOKEN (API, from 127.0.0.1)"),
        "{history}"
    );
    assert!(browser.exec("return document.getElementById('run').disabled;", vec![]) == json!(true));
    assert_eq!(applied(&t).len(), 3);
    browser.screenshot("page-applied");

    // A phone's width: everything is there and nothing spills sideways.
    browser.resize(PHONE);
    std::thread::sleep(Duration::from_millis(300));
    let overflow = browser.exec(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
        vec![],
    );
    assert_eq!(overflow, json!(0), "the page is wider than a phone");
    assert!(browser.shown("#summary") && browser.shown("#sign-out"));
    browser.screenshot("page-phone");

    // Signing out forgets the token.
    browser.click("#sign-out");
    browser.wait(Duration::from_secs(5), "the sign-in form", |b| {
        b.shown("#token")
    });
    assert_eq!(stored_token(&browser), None);
    assert!(!browser.shown("#console"));
}

#[test]
fn a_wrong_token_is_refused_and_a_read_token_gets_no_run_button() {
    let t = TestEnv::new();
    t.migration("001_users.sql", "CREATE TABLE users (id int);");
    let server = Server::start(&t, &[]);
    let Some(browser) = open(&server, DESKTOP) else {
        return;
    };

    sign_in_fails(&browser, "not-the-token-at-all-000000");
    assert_eq!(browser.text("#sign-in-error"), "That token is not valid.");
    assert_eq!(stored_token(&browser), None);
    assert!(!browser.shown("#console"));
    browser.screenshot("page-wrong-token");

    browser.exec("document.getElementById('token').value = '';", vec![]);
    sign_in(&browser, VIEWER_TOKEN);
    browser.wait_text("#summary", "1 migration: 0 applied, 1 pending");
    assert!(browser.text("#who").contains("viewer"));
    assert!(browser.text("#who").contains("may read only"));
    assert!(
        !browser.shown("#run"),
        "a read token is shown no run button"
    );
    assert!(browser.text("#run-note").contains("cannot run migrations"));
    browser.screenshot("page-read-token");
    // And the API refuses it anyway.
    let refused = server.run(Some(VIEWER_TOKEN), r#"{"confirm": true}"#);
    assert_eq!(refused.status, 403);
    assert!(applied(&t).is_empty());

    // Guessing from this address is throttled, and the form says for how
    // long.
    browser.click("#sign-out");
    browser.wait(Duration::from_secs(5), "the sign-in form", |b| {
        b.shown("#token")
    });
    for _ in 0..10 {
        server.get("/admin/session", Some("another-wrong-token-0000000"));
    }
    browser.exec("document.getElementById('token').value = '';", vec![]);
    sign_in_fails(&browser, "yet-another-wrong-token-00000");
    let said = browser.text("#sign-in-error");
    assert!(
        said.starts_with("too many failed attempts: try again in ") && said.ends_with("seconds."),
        "{said}"
    );
    browser.screenshot("page-throttled");
}

/// Types a token that is refused: the form stays.
fn sign_in_fails(browser: &Browser, token: &str) {
    browser.type_into("#token", token);
    browser.keys(&key(ENTER));
    browser.wait(Duration::from_secs(10), "the sign-in error", |b| {
        b.shown("#sign-in-error")
    });
}

#[test]
fn a_failure_shows_the_file_line_and_the_servers_message_and_a_retry_is_told_when() {
    let t = TestEnv::new();
    t.migration("001_users.sql", "CREATE TABLE users (id int);")
        .migration(
            "002_broken.sql",
            "CREATE TABLE orders (id int);\nINSERT INTO no_such_table VALUES (1);\n",
        );
    let server = Server::start(&t, &["--run-limit", "1"]);
    let Some(browser) = open(&server, DESKTOP) else {
        return;
    };
    sign_in(&browser, TOKEN);
    browser.click("#run");
    browser.wait(Duration::from_secs(10), "the confirmation", dialog_open);
    browser.click("#confirm-run");
    let result = browser.wait_text("#result", "migration failed");
    assert!(!result.contains("null"), "{result}");
    assert!(
        result.contains("002_broken.sql:2:13"),
        "file:line: {result}"
    );
    assert!(
        result.contains("relation \"no_such_table\" does not exist"),
        "the server's message: {result}"
    );
    assert!(
        result.contains("These committed before it and stay applied:")
            && result.contains("001_users"),
        "{result}"
    );
    assert_eq!(
        browser.exec(
            "return document.getElementById('result').getAttribute('role');",
            vec![]
        ),
        json!("alert")
    );
    browser.wait_text("#summary", "2 migrations: 1 applied, 0 pending, 1 failed");
    assert_eq!(badges(&browser), ["APPLIED", "FAILED"]);
    assert!(browser.text("#migrations").contains("no_such_table"));
    assert!(browser.text("#progress").contains("002_broken: failed"));
    browser.screenshot("page-failed");

    // The budget is one run a minute: the retry is told when to come back.
    browser.click("#run");
    browser.wait(Duration::from_secs(10), "the confirmation", dialog_open);
    assert!(
        browser
            .text("#confirm-list")
            .contains("002_broken (failed before: tried again)")
    );
    browser.click("#confirm-run");
    let result = browser.wait_text("#result", "try again in");
    assert!(result.contains("too many runs"), "{result}");
    assert!(result.contains("seconds"), "{result}");
    browser.screenshot("page-rate-limited");
}

#[test]
fn a_cli_run_holding_the_lock_is_shown_with_its_holder() {
    let t = TestEnv::new();
    t.migration("001_slow.sql", "SELECT pg_sleep(30);");
    let server = Server::start(&t, &[]);
    let Some(browser) = open(&server, DESKTOP) else {
        return;
    };
    let mut cli = t.migrate().args(["up", "--yes"]).spawn();
    t.wait_for_migrate_running("pg_sleep");
    sign_in(&browser, TOKEN);
    let lock = browser.wait_text("#lock", "held by pid");
    assert!(lock.contains("migrate"), "{lock}");
    browser.click("#run");
    browser.wait(Duration::from_secs(10), "the confirmation", dialog_open);
    browser.click("#confirm-run");
    let result = browser.wait_text("#result", "The migration lock is held");
    assert!(result.contains("held by pid"), "{result}");
    assert!(result.contains("Nothing was run"), "{result}");
    browser.screenshot("page-locked");
    let _ = cli.kill();
    let _ = cli.wait();
    assert!(applied(&t).is_empty());
}

#[test]
fn with_approval_required_a_second_token_approves_and_the_run_starts() {
    let t = TestEnv::new();
    t.migration("001_users.sql", "CREATE TABLE users (id int);")
        .migration("002_orders.sql", "CREATE TABLE orders (id int);");
    let server = Server::start(&t, &["--require-approval"]);
    let Some(browser) = open(&server, DESKTOP) else {
        return;
    };
    sign_in(&browser, TOKEN);
    assert_eq!(browser.text("#run"), "Request a run");
    browser.click("#run");
    browser.wait(Duration::from_secs(10), "the confirmation", dialog_open);
    assert!(
        browser
            .text("#confirm-text")
            .contains("once another run token approves")
    );
    browser.click("#confirm-run");
    browser.wait_text("#result", "Waiting for approval");
    let notice = browser.wait_text("#approval", "You asked for a run");
    assert!(
        !browser.shown("#approve"),
        "no approving one's own run: {notice}"
    );
    assert!(applied(&t).is_empty());
    browser.screenshot("page-awaiting-approval");

    // The first operator looks elsewhere on the page meanwhile.
    browser.exec("document.getElementById('refresh').focus();", vec![]);

    // The second operator, in another browser, with the ci token.
    let Some(second) = open(&server, DESKTOP) else {
        return;
    };
    sign_in(&second, CI_TOKEN);
    let notice = second.wait_text("#approval", "MIGRATE_ADMIN_TOKEN asked for a run");
    assert!(notice.contains("Approve it to start it"), "{notice}");
    second.click("#approve");
    second.wait(Duration::from_secs(10), "the confirmation", dialog_open);
    assert_eq!(
        second.text("#confirm-title"),
        "Approve the run MIGRATE_ADMIN_TOKEN asked for?"
    );
    assert_eq!(
        second.text("#confirm-list").lines().collect::<Vec<_>>(),
        ["001_users", "002_orders"]
    );
    second.screenshot("page-approve");
    second.click("#confirm-run");
    second.wait_text("#result", "Applied 2 migrations");
    let history = second.wait_text("#history tbody", "approved by ci");
    assert!(
        history.contains("MIGRATE_ADMIN_TOKEN (API, from 127.0.0.1), approved by ci"),
        "{history}"
    );
    second.screenshot("page-approved");

    // The first page saw the run live too, from the events.
    let first = browser.wait_text("#progress", "002_orders: applied in");
    assert!(first.contains("approved by ci"), "{first}");
    browser.wait_text("#result", "Applied 2 migrations");
    // Another's run is announced, and leaves the focus where it was.
    assert_eq!(browser.focused(), "refresh");
    assert_eq!(
        browser
            .text("#result")
            .matches("Applied 2 migrations")
            .count(),
        1
    );
    assert_eq!(applied(&t).len(), 2);
}

/// What the database says (an error's text, a session's application name)
/// is shown as text, never run as markup.
#[test]
fn text_from_the_database_is_shown_as_text_not_markup() {
    let t = TestEnv::new();
    let markup = r#"<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>"#;
    t.migration(
        "001_raise.sql",
        &format!("DO $$ BEGIN RAISE EXCEPTION '{markup}'; END $$;"),
    );
    t.migrate().arg("up").run().code(1);
    let _holder = t.hold_lock(markup, t.default_lock_key());
    let server = Server::start(&t, &[]);
    let Some(browser) = open(&server, DESKTOP) else {
        return;
    };
    sign_in(&browser, TOKEN);
    browser.wait_text("#summary", "1 failed");
    // (PostgreSQL keeps the first 63 bytes of an application name.)
    let lock = browser.text("#lock");
    assert!(
        lock.contains(r#"(<img src=x onerror="window.pwned=1"><script>"#),
        "{lock}"
    );
    assert!(browser.text("#migrations").contains(markup));
    assert!(
        browser
            .text("#history")
            .contains("<script>window.pwned=2</script>")
    );
    let injected = browser.exec(
        "return [document.querySelectorAll('main img, main script').length, window.pwned === undefined];",
        vec![],
    );
    assert_eq!(injected, json!([0, true]));
}

/// The database goes away while the page is open: "Check status" says so,
/// and comes back with it.
#[test]
fn a_database_that_goes_away_is_said_and_the_page_recovers() {
    let t = TestEnv::on_own_server();
    t.migration("001_users.sql", "CREATE TABLE users (id int);");
    let server = Server::start(&t, &[]);
    let Some(browser) = open(&server, DESKTOP) else {
        return;
    };
    sign_in(&browser, TOKEN);
    browser.wait_text("#summary", "1 migration: 0 applied, 1 pending");
    t.stop_server();
    browser.click("#refresh");
    let said = browser.wait_text("#load-error", "database unavailable");
    assert!(said.contains("error connecting to server"), "{said}");
    browser.screenshot("page-database-gone");
    t.start_server();
    browser.wait(Duration::from_secs(30), "the page to recover", |b| {
        b.click("#refresh");
        std::thread::sleep(Duration::from_millis(500));
        !b.shown("#load-error")
    });
    assert_eq!(
        browser.text("#summary"),
        "1 migration: 0 applied, 1 pending"
    );
}
