//! The deployment files and the README: every YAML parses, and every
//! `migrate` command line in them is one the binary's parser accepts.

use clap::Parser;
use migrate::cli::Cli;
use serde_yaml_ng::Value;
use std::path::{Path, PathBuf};

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// Splits a shell command line into words: whitespace, '...' and "...".
/// Stops at a redirection or a comment.
fn words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                quoted = true;
                for inner in chars.by_ref() {
                    if inner == c {
                        break;
                    }
                    word.push(inner);
                }
            }
            '#' | '>' | '|' | '&' if word.is_empty() && !quoted => break,
            c if c.is_whitespace() => {
                if !word.is_empty() || quoted {
                    words.push(std::mem::take(&mut word));
                    quoted = false;
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() || quoted {
        words.push(word);
    }
    words
}

/// The arguments after a `migrate` program name, wherever it stands on
/// a shell line.
fn migrate_args(line: &str) -> Option<Vec<String>> {
    let words = words(line);
    let at = words
        .iter()
        .position(|w| w == "migrate" || w.ends_with("/migrate"))?;
    Some(words[at + 1..].to_vec())
}

/// The parser accepts the line, and its values (durations, versions,
/// switches) resolve into settings.
fn assert_parses(args: &[String], origin: &str) {
    let argv = std::iter::once("migrate".to_owned()).chain(args.iter().cloned());
    let cli = Cli::try_parse_from(argv).unwrap_or_else(|err| {
        panic!(
            "{origin}: `migrate {}` is not accepted:\n{err}",
            args.join(" ")
        )
    });
    let empty = tempfile::tempdir().unwrap();
    let mut global = cli.global.clone();
    global.config = Some(empty.path().to_owned());
    if let Err(err) =
        migrate::settings::Settings::resolve(&global, &migrate::settings::Environment::default())
    {
        panic!("{origin}: `migrate {}`: {err}", args.join(" "));
    }
}

/// Container `command` + `args` lists whose program is migrate.
fn container_commands(value: &Value, found: &mut Vec<Vec<String>>) {
    match value {
        Value::Mapping(map) => {
            let strings = |key: &str| -> Vec<String> {
                map.get(key)
                    .and_then(Value::as_sequence)
                    .map(|s| {
                        s.iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let command = strings("command");
            if command.first().is_some_and(|c| c.ends_with("migrate")) {
                let mut args = command[1..].to_vec();
                args.extend(strings("args"));
                found.push(args);
            }
            for (_, child) in map {
                container_commands(child, found);
            }
        }
        Value::Sequence(items) => items.iter().for_each(|i| container_commands(i, found)),
        _ => {}
    }
}

/// `run:` steps of a CI workflow.
fn run_steps(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Mapping(map) => {
            if let Some(run) = map.get("run").and_then(Value::as_str) {
                found.extend(run.lines().map(str::to_owned));
            }
            for (_, child) in map {
                run_steps(child, found);
            }
        }
        Value::Sequence(items) => items.iter().for_each(|i| run_steps(i, found)),
        _ => {}
    }
}

/// `{{ .Values.key }}` replaced with the chart's value, `{{ .Release.Name }}`
/// with `release`: enough for the templates here.
fn helm_render(template: &str, values: &Path) -> String {
    let values: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(values).unwrap()).unwrap();
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find("}}").expect("a closed {{ }}") + start;
        let expression = rest[start + 2..end].trim();
        let value = match expression.strip_prefix(".Values.") {
            Some(key) => match &values[key] {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => panic!("values.yaml: {key} is {other:?}"),
            },
            None if expression == ".Release.Name" => "release".to_owned(),
            None => panic!("a template expression this test does not render: {expression}"),
        };
        out.push_str(&value);
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    out
}

#[test]
fn every_deployment_file_parses_and_uses_only_real_commands_and_flags() {
    let mut files = Vec::new();
    files_under(&repository().join("deploy"), &mut files);
    let mut checked = 0;
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        let origin = path
            .strip_prefix(repository())
            .unwrap()
            .display()
            .to_string();
        // A Helm template: its `{{ .Values.x }}` from the chart's values.
        let text = match path.parent() {
            Some(dir) if dir.ends_with("templates") => {
                helm_render(&text, &dir.parent().unwrap().join("values.yaml"))
            }
            _ => text,
        };
        match path.extension().and_then(|e| e.to_str()) {
            Some("yaml" | "yml") => {
                // Every document of the file (`---` separates them).
                for document in serde_yaml_ng::Deserializer::from_str(&text) {
                    let value = <Value as serde::Deserialize>::deserialize(document)
                        .unwrap_or_else(|err| panic!("{origin} is not valid YAML: {err}"));
                    let mut commands = Vec::new();
                    container_commands(&value, &mut commands);
                    let mut lines = Vec::new();
                    run_steps(&value, &mut lines);
                    commands.extend(lines.iter().filter_map(|l| migrate_args(l)));
                    for args in commands {
                        assert_parses(&args, &origin);
                        checked += 1;
                    }
                }
            }
            _ if path.file_name().is_some_and(|n| n == "Dockerfile") => {
                let array = |keyword: &str| -> Vec<String> {
                    text.lines()
                        .find_map(|l| l.strip_prefix(keyword))
                        .map(|rest| serde_json::from_str(rest.trim()).expect("an exec-form array"))
                        .unwrap_or_default()
                };
                let entrypoint = array("ENTRYPOINT ");
                assert!(
                    entrypoint.first().is_some_and(|e| e.ends_with("migrate")),
                    "{origin}"
                );
                let mut args = entrypoint[1..].to_vec();
                args.extend(array("CMD "));
                assert_parses(&args, &origin);
                checked += 1;
                assert!(
                    text.contains("\nUSER "),
                    "{origin}: runs as a non-root user"
                );
            }
            _ => {}
        }
    }
    assert!(
        checked >= 7,
        "only {checked} command lines found in deploy/"
    );
}

#[test]
fn every_migrate_command_in_the_readme_parses() {
    let readme = std::fs::read_to_string(repository().join("README.md")).unwrap();
    // Shell blocks only (```sh, or no language): a ```toml line may
    // start with `migrate` too.
    let mut in_code = false;
    let mut in_block = false;
    let mut checked = 0;
    for line in readme.lines() {
        if let Some(language) = line.strip_prefix("```") {
            in_block = !in_block;
            in_code = in_block && matches!(language.trim(), "" | "sh" | "bash" | "console");
            continue;
        }
        let line = line.trim();
        let candidate = if in_code {
            line.starts_with("migrate ") || line == "migrate"
        } else {
            false
        };
        if candidate && let Some(args) = migrate_args(line) {
            assert_parses(&args, "README.md");
            checked += 1;
        }
    }
    assert!(
        checked >= 8,
        "only {checked} command lines found in the README"
    );
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_tree(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// The variables a shell line `export A=1 B=2` sets.
fn exported(line: &str) -> Vec<(String, String)> {
    let words = words(line);
    if words.first().map(String::as_str) != Some("export") {
        return Vec::new();
    }
    words[1..]
        .iter()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The README's "Using it on a database" block, run line by line as
/// written against a fresh database, with the repository's example
/// migrations and config: its `export` lines set the environment (but the
/// test's database stands in for `DATABASE_URL`).
#[test]
fn the_readmes_walkthrough_runs_as_written() {
    let readme = std::fs::read_to_string(repository().join("README.md")).unwrap();
    let section = readme
        .split("## Using it on a database")
        .nth(1)
        .expect("the section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("its code block");
    let commands: Vec<Vec<String>> = block.lines().filter_map(migrate_args).collect();
    assert!(commands.len() >= 10, "{commands:?}");
    let exports: Vec<(String, String)> = block.lines().flat_map(exported).collect();
    assert!(
        exports.iter().any(|(k, _)| k == "DATABASE_URL"),
        "{exports:?}"
    );

    let t = crate::common::TestEnv::new();
    std::fs::remove_dir(t.migrations()).unwrap();
    copy_tree(&repository().join("migrations"), &t.migrations());
    copy_tree(&repository().join("config"), &t.dir().join("config"));
    for args in &commands {
        let mut run = t.migrate_bare();
        run.args(args);
        for (name, value) in &exports {
            run.env(name, value);
        }
        let out = run.env("DATABASE_URL", &t.dsn).run();
        out.code(0);
        if args.iter().any(|a| a == "--json") {
            let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
            assert_eq!(doc["ok"], true);
        }
    }
    assert_eq!(
        t.value("SELECT count(*) FROM app.users WHERE email = 'admin@example.com'"),
        Some("1".into()),
        "the bootstrap script made the super admin once"
    );
    assert!(t.migrations().join("006_add_orders.sql").exists());
    assert!(t.migrations().join("006_add_orders.down.sql").exists());
}

/// The example folder on a database where pgcrypto is already installed,
/// in `public`: the bootstrap script finds it there, and rolling back 005
/// leaves it alone.
#[test]
fn the_example_migrations_live_with_a_pgcrypto_installed_before_them() {
    let t = crate::common::TestEnv::new();
    std::fs::remove_dir(t.migrations()).unwrap();
    copy_tree(&repository().join("migrations"), &t.migrations());
    copy_tree(&repository().join("config"), &t.dir().join("config"));
    t.client()
        .batch_execute("CREATE EXTENSION pgcrypto SCHEMA public")
        .unwrap();
    let migrate = |args: &[&str]| {
        t.migrate()
            .args(args)
            .env("SUPER_ADMIN_EMAIL", "admin@example.com")
            .env("SUPER_ADMIN_PASSWORD", "pre-installed")
            .run()
    };
    migrate(&["up", "--yes"]).code(0);
    assert_eq!(
        t.value(
            "SELECT password_hash = public.crypt('pre-installed', password_hash) FROM app.users"
        ),
        Some("t".into())
    );
    migrate(&["down", "--yes"])
        .code(0)
        .stdout_has("rolled back 005_enable_pgcrypto");
    assert_eq!(
        t.value(
            "SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'pgcrypto'"
        ),
        Some("public".into())
    );
}

/// In a schema whose name needs quoting, 005 installs pgcrypto there and
/// its down file removes it again.
#[test]
fn the_example_migrations_in_a_mixed_case_schema() {
    let t = crate::common::TestEnv::new();
    std::fs::remove_dir(t.migrations()).unwrap();
    copy_tree(&repository().join("migrations"), &t.migrations());
    copy_tree(&repository().join("config"), &t.dir().join("config"));
    let migrate = |args: &[&str]| {
        t.migrate()
            .args(args)
            .env("DB_SCHEMA", "MyApp")
            .env("SUPER_ADMIN_EMAIL", "admin@example.com")
            .env("SUPER_ADMIN_PASSWORD", "mixed-case")
            .run()
    };
    migrate(&["up", "--yes"]).code(0);
    let installed_in = "SELECT coalesce(max(extnamespace::regnamespace::text), 'none') \
                        FROM pg_extension WHERE extname = 'pgcrypto'";
    assert_eq!(t.value(installed_in), Some("\"MyApp\"".into()));
    migrate(&["down", "--yes"]).code(0);
    assert_eq!(t.value(installed_in), Some("none".into()));
}

/// The README's example token file is one `migrate serve` accepts.
#[test]
fn the_readmes_token_file_parses() {
    let readme = std::fs::read_to_string(repository().join("README.md")).unwrap();
    let section = readme
        .split("## Admin page and HTTP API")
        .nth(1)
        .expect("the section");
    let example = section
        .split("```\n")
        .find(|block| block.starts_with("# name:sha256"))
        .expect("the token file example");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    std::fs::write(&file, example).unwrap();
    let tokens = migrate::serve::Tokens::load(None, Some(&file)).unwrap();
    assert_eq!(
        tokens.check(Some(b"Bearer example-ci-token-do-not-use-1")),
        Ok(("ci", migrate::serve::Role::Run))
    );
    assert_eq!(
        tokens.check(Some(b"Bearer example-ops-token-do-not-use-2")),
        Ok(("ops-alice", migrate::serve::Role::Run))
    );
    assert_eq!(
        tokens.check(Some(b"Bearer example-read-token-do-not-use-3")),
        Ok(("dashboard", migrate::serve::Role::Read))
    );
}
