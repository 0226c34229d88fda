//! At a terminal: the y/N prompt, progress, colour and NO_COLOR.

use crate::common::TestEnv;
use crate::common::pty::{run_on_pty, run_on_pty_redirected};

fn two(t: &TestEnv) {
    t.migration("001_a.sql", "CREATE TABLE a (id int);")
        .migration("002_b.sql", "CREATE TABLE b (id int);");
}

#[test]
fn answering_no_changes_nothing() {
    let t = TestEnv::new();
    two(&t);
    let mut run = t.migrate();
    run.arg("up");
    let out = run_on_pty(run.into_command(), Some(("Continue?", "n")));
    assert_eq!(out.code, 1, "{}", out.output);
    assert!(
        out.output.contains("2 migrations to apply:"),
        "{}",
        out.output
    );
    assert!(
        out.output.contains("aborted; nothing was changed"),
        "{}",
        out.output
    );
    assert!(!t.table_exists("public.schema_migrations"));
    assert!(!t.table_exists("public.a"));
}

#[test]
fn answering_yes_applies_with_colour() {
    let t = TestEnv::new();
    two(&t);
    let mut run = t.migrate();
    run.arg("up");
    let out = run_on_pty(run.into_command(), Some(("Continue?", "y")));
    assert_eq!(out.code, 0, "{}", out.output);
    assert!(out.output.contains("applied"), "{}", out.output);
    assert!(
        out.output.contains("\u{1b}["),
        "a terminal gets colour: {:?}",
        out.output
    );
    assert_eq!(t.state(), ["001:applied", "002:applied"]);
}

#[test]
fn no_color_and_yes_at_a_terminal() {
    let t = TestEnv::new();
    two(&t);
    let mut run = t.migrate();
    run.args(["up", "--yes"]).env("NO_COLOR", "1");
    let out = run_on_pty(run.into_command(), None);
    assert_eq!(out.code, 0, "{}", out.output);
    assert!(
        !out.output.contains("Continue?"),
        "--yes never prompts: {}",
        out.output
    );
    // Progress bars draw with escape sequences too; NO_COLOR removes colour (SGR) only.
    assert!(
        !out.output.contains("\u{1b}[3"),
        "NO_COLOR output has colour: {:?}",
        out.output
    );
    assert!(
        !out.output.contains("\u{1b}[1m"),
        "NO_COLOR output has bold: {:?}",
        out.output
    );
    assert_eq!(t.state().len(), 2);

    let mut run = t.migrate();
    run.arg("status").env("NO_COLOR", "1");
    let out = run_on_pty(run.into_command(), None);
    assert_eq!(out.code, 0);
    assert!(
        out.output.contains("APPLIED") && !out.output.contains("\u{1b}[3"),
        "{:?}",
        out.output
    );
}

#[test]
fn without_a_terminal_output_is_plain_lines_with_durations() {
    let t = TestEnv::new();
    two(&t);
    let out = t.migrate().args(["up", "--yes"]).run();
    out.code(0);
    assert!(!out.stdout.contains('\u{1b}'), "{:?}", out.stdout);
    let applied: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("applied "))
        .collect();
    assert_eq!(applied.len(), 2, "{}", out.stdout);
    for line in applied {
        assert!(line.ends_with("s)"), "a duration on every line: {line}");
    }
}

#[test]
fn with_stderr_redirected_the_prompt_still_reaches_the_operator() {
    let t = TestEnv::new();
    two(&t);
    let log = t.migrations().join("../stderr.log");
    let mut run = t.migrate();
    run.arg("up");
    let out = crate::common::pty::run_on_pty_with_stderr(
        run.into_command(),
        Some(("Continue?", "y")),
        Some(std::fs::File::create(&log).unwrap()),
    );
    assert_eq!(
        out.code,
        0,
        "{}\n{}",
        out.output,
        std::fs::read_to_string(&log).unwrap()
    );
    assert_eq!(t.state(), ["001:applied", "002:applied"]);
}

#[test]
fn errors_on_a_redirected_stderr_carry_no_colour() {
    let t = TestEnv::new();
    t.migration("001_bad.sql", "SELECT * FROM nowhere;");
    let log = t.migrations().join("../stderr.log");
    let mut run = t.migrate();
    run.args(["up", "--yes"]);
    let out = crate::common::pty::run_on_pty_with_stderr(
        run.into_command(),
        None,
        Some(std::fs::File::create(&log).unwrap()),
    );
    assert_eq!(out.code, 1);
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(stderr.starts_with("error: migration 001_bad"), "{stderr:?}");
    assert!(
        out.output.contains("\u{1b}["),
        "stdout, a terminal, keeps its colour"
    );
}

/// `migrate up | tee run.log` at a terminal went ahead without asking:
/// the prompt wanted stdout to be a terminal, though it asks on stderr.
#[test]
fn the_prompt_asks_when_stdout_is_piped() {
    let t = TestEnv::new();
    two(&t);
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut run = t.migrate();
    run.arg("up");
    let out = run_on_pty_redirected(
        run.into_command(),
        Some(("Continue?", "n")),
        Some(log.reopen().unwrap()),
        None,
    );
    assert_eq!(out.code, 1, "{}", out.output);
    assert!(out.output.contains("Continue?"), "{}", out.output);
    let logged = std::fs::read_to_string(log.path()).unwrap();
    assert!(logged.contains("2 migrations to apply:"), "{logged}");
    assert!(!t.table_exists("public.a"));
}

/// Ctrl-C at the prompt left the cursor hidden and said nothing.
#[test]
fn ctrl_c_at_the_prompt_shows_the_cursor_and_says_nothing_changed() {
    let t = TestEnv::new();
    two(&t);
    let mut run = t.migrate();
    run.arg("up");
    let out = run_on_pty(run.into_command(), Some(("Continue?", "\u{3}")));
    assert_eq!(out.code, 130, "{}", out.output);
    assert!(
        out.output
            .contains("interrupted at the prompt: nothing was changed"),
        "{}",
        out.output
    );
    let hidden = out
        .output
        .rfind("\u{1b}[?25l")
        .expect("the prompt hides the cursor");
    let shown = out.output.rfind("\u{1b}[?25h").unwrap_or(0);
    assert!(shown > hidden, "the cursor stays hidden: {:?}", out.output);
    assert!(!t.table_exists("public.schema_migrations"));
}

/// Ctrl-C at repair's prompt ended the process with the cursor hidden.
#[test]
fn ctrl_c_at_the_repair_prompt_changes_nothing() {
    let t = TestEnv::new();
    two(&t);
    t.migrate().args(["up", "--yes"]).run().code(0);
    t.migration("001_a.sql", "CREATE TABLE a (id int); -- edited");
    let mut run = t.migrate();
    run.arg("repair");
    let out = run_on_pty(run.into_command(), Some(("Continue?", "\u{3}")));
    assert_eq!(out.code, 130, "{}", out.output);
    assert!(
        out.output
            .contains("interrupted at the prompt: nothing was changed"),
        "{}",
        out.output
    );
    t.migrate().arg("validate").run().code(3);
}
