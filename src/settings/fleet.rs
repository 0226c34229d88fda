//! A fleet's settings: where its targets come from (`--each-schema`,
//! `--targets`, `--targets-query`), how many run at a time, the canary,
//! and the shard this process takes.

use super::Environment;
use crate::cli::GlobalArgs;
use crate::config::expand_env;
use crate::dsn::Dsn;
use crate::error::Error;
use crate::fleet::{FleetOptions, Shard, Target, Targets};
use std::path::{Path, PathBuf};

/// Where the targets come from, before any of them is read.
#[derive(Clone, Debug)]
pub enum Source {
    EachSchema(String),
    File(PathBuf),
    Query(String),
}

#[derive(Clone, Debug)]
pub struct FleetSettings {
    pub source: Source,
    pub options: FleetOptions,
}

impl FleetSettings {
    /// The targets: a file is read now (its `${VAR}`s expanded); a pattern
    /// or a query is run by the fleet on the main connection.
    pub fn targets(&self, env: &Environment) -> Result<Targets, Error> {
        Ok(match &self.source {
            Source::EachSchema(pattern) => Targets::EachSchema(pattern.clone()),
            Source::Query(sql) => Targets::Query(sql.clone()),
            Source::File(path) => Targets::Listed(read_targets(path, env)?),
        })
    }
}

/// The fleet settings, when a target source is given; an error when a
/// fleet option is given without one, or a value is wrong. The
/// environment's `MIGRATE_*` fleet variables count only for a command that
/// runs across a fleet (`fleet_command`): one set for a whole pod does not
/// break its `serve` or `history`; flags always count.
pub fn resolve(
    args: &GlobalArgs,
    env: &Environment,
    fleet_command: bool,
) -> Result<Option<FleetSettings>, Error> {
    let given = |flag: Option<String>, var: &str| {
        flag.map(|v| (v, format!("--{}", var_flag(var))))
            .or_else(|| {
                fleet_command
                    .then(|| env.get(var).map(|v| (v.to_owned(), var.to_owned())))
                    .flatten()
            })
    };
    let sources: Vec<(Source, String)> = [
        given(args.each_schema.clone(), "MIGRATE_EACH_SCHEMA")
            .map(|(v, origin)| (Source::EachSchema(v), origin)),
        given(
            args.targets.as_ref().map(|p| p.display().to_string()),
            "MIGRATE_TARGETS",
        )
        .map(|(v, origin)| (Source::File(PathBuf::from(v)), origin)),
        given(args.targets_query.clone(), "MIGRATE_TARGETS_QUERY")
            .map(|(v, origin)| (Source::Query(v), origin)),
    ]
    .into_iter()
    .flatten()
    .collect();
    let parallel = given(args.parallel.clone(), "MIGRATE_PARALLEL");
    let canary = args.canary.clone().map(|v| (v, "--canary".to_owned()));
    let shard = given(args.shard.clone(), "MIGRATE_SHARD");
    let shards = given(args.shards.clone(), "MIGRATE_SHARDS");
    let source = match sources.as_slice() {
        [] => {
            // Only flags: a variable meant for the fleet's runs may be set
            // where single runs happen too.
            let flag = |value: &Option<(String, String)>| {
                value
                    .as_ref()
                    .map(|(_, o)| o.clone())
                    .filter(|o| o.starts_with("--"))
            };
            let stray = [
                flag(&parallel),
                flag(&canary),
                args.keep_going.then(|| "--keep-going".to_owned()),
                flag(&shard),
                flag(&shards),
            ];
            if let Some(origin) = stray.into_iter().flatten().next() {
                return Err(Error::Usage(format!(
                    "{origin} is for a fleet: give its targets with --each-schema, --targets or \
                     --targets-query"
                )));
            }
            return Ok(None);
        }
        [(source, _)] => source.clone(),
        [(_, first), (_, second), ..] => {
            return Err(Error::Usage(format!(
                "{first} and {second} both give a fleet's targets; give one"
            )));
        }
    };
    if let Source::EachSchema(pattern) = &source
        && pattern.trim().is_empty()
    {
        return Err(Error::Usage(
            "--each-schema needs a LIKE pattern, e.g. tenant_%".into(),
        ));
    }
    let whole = |value: &Option<(String, String)>, least: usize| -> Result<Option<usize>, Error> {
        match value {
            None => Ok(None),
            Some((text, origin)) => match text.trim().parse::<usize>() {
                Ok(n) if n >= least => Ok(Some(n)),
                _ => Err(Error::Config {
                    origin: origin.clone(),
                    message: format!("`{text}` is not a whole number of at least {least}"),
                }),
            },
        }
    };
    let parallel = whole(&parallel, 1)?.unwrap_or(4);
    let canary = whole(&canary, 0)?.unwrap_or(0);
    let shards = whole(&shards, 1)?;
    let shard = match (&shard, shards) {
        (Some((text, origin)), count) => {
            let shard = Shard::parse(text).map_err(|message| Error::Config {
                origin: origin.clone(),
                message,
            })?;
            if let Some(count) = count
                && count != shard.count as usize
            {
                return Err(Error::Usage(format!(
                    "{origin} {text} and --shards {count} disagree on the number of shards"
                )));
            }
            Some(shard)
        }
        (None, Some(count)) => {
            let Some(index) = env.get("JOB_COMPLETION_INDEX") else {
                return Err(Error::Usage(format!(
                    "--shards {count} takes this process's shard from JOB_COMPLETION_INDEX (set \
                     by a Kubernetes Job with completionMode: Indexed), which is not set; or \
                     give --shard I/{count}"
                )));
            };
            let parsed = index.trim().parse::<u32>().map_err(|_| Error::Config {
                origin: "JOB_COMPLETION_INDEX".into(),
                message: format!("`{index}` is not a whole number"),
            })?;
            let count = u32::try_from(count).map_err(|_| Error::Config {
                origin: "--shards".into(),
                message: "too many shards".into(),
            })?;
            Some(Shard::new(parsed, count).map_err(|message| Error::Config {
                origin: "JOB_COMPLETION_INDEX".into(),
                message,
            })?)
        }
        (None, None) => None,
    };
    Ok(Some(FleetSettings {
        source,
        options: FleetOptions {
            parallel,
            canary,
            keep_going: args.keep_going,
            shard,
            details: true,
        },
    }))
}

/// `MIGRATE_EACH_SCHEMA` → `each-schema`.
fn var_flag(var: &str) -> String {
    var.trim_start_matches("MIGRATE_")
        .to_ascii_lowercase()
        .replace('_', "-")
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    #[serde(default)]
    dsn: Option<String>,
    #[serde(default)]
    schema: Option<String>,
}

/// A targets file: a YAML list of `{name, dsn, schema}`, each with a
/// `dsn` or a `schema` or both; `${VAR}` and `${VAR:default}` expanded in
/// every value. Errors name the file and the line.
pub fn read_targets(path: &Path, env: &Environment) -> Result<Vec<Target>, Error> {
    let origin = |line: Option<usize>| match line {
        Some(line) => format!("{}:{line}", path.display()),
        None => path.display().to_string(),
    };
    let text = std::fs::read_to_string(path).map_err(|err| Error::Config {
        origin: origin(None),
        message: format!("cannot read the targets file: {err}"),
    })?;
    let entries: Vec<Entry> = serde_yaml_ng::from_str(&text).map_err(|err| Error::Config {
        origin: origin(err.location().map(|l| l.line())),
        message: format!(
            "{}; a targets file is a list of `- name: ...` entries, each with a dsn and/or a \
             schema",
            strip_location(&err.to_string())
        ),
    })?;
    // The line of each top-level `- ` item, for messages about an entry.
    let item_lines: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, line)| line.starts_with('-'))
        .map(|(i, _)| i + 1)
        .collect();
    let lookup = |var: &str| env.get(var).map(str::to_owned);
    entries
        .into_iter()
        .enumerate()
        .map(|(index, entry)| {
            let line = item_lines.get(index).copied();
            let at = |field: &str, message: String| Error::Config {
                origin: format!("{} (target {}, {field})", origin(line), index + 1),
                message,
            };
            let name = expand_env(&entry.name, lookup).map_err(|m| at("name", m))?;
            let schema = entry
                .schema
                .map(|s| expand_env(&s, lookup).map_err(|m| at("schema", m)))
                .transpose()?;
            let dsn = entry
                .dsn
                .map(|d| {
                    let expanded = expand_env(&d, lookup).map_err(|m| at("dsn", m))?;
                    Dsn::parse(&expanded).map_err(|m| at("dsn", m))
                })
                .transpose()?;
            if dsn.is_none() && schema.is_none() {
                return Err(at(
                    "name",
                    format!("target `{name}` needs a dsn, a schema, or both"),
                ));
            }
            Ok(Target { name, dsn, schema })
        })
        .collect()
}

/// serde_yaml_ng's message without its ` at line N column M`, which the
/// origin already gives.
fn strip_location(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(line: &[&str]) -> GlobalArgs {
        let mut full = vec!["migrate"];
        full.extend_from_slice(line);
        crate::cli::Cli::try_parse_from(full).unwrap().global
    }

    fn env(pairs: &[(&str, &str)]) -> Environment {
        Environment::from_pairs(pairs.iter().copied())
    }

    fn message(result: Result<Option<FleetSettings>, Error>) -> String {
        result.unwrap_err().to_string()
    }

    #[test]
    fn no_source_is_no_fleet_and_fleet_options_alone_are_refused() {
        assert!(resolve(&args(&[]), &env(&[]), true).unwrap().is_none());
        assert!(
            message(resolve(&args(&["--parallel", "8"]), &env(&[]), true))
                .contains("--parallel is for a fleet")
        );
        assert!(
            message(resolve(&args(&["--keep-going"]), &env(&[]), true)).contains("--keep-going")
        );
    }

    #[test]
    fn the_environment_counts_only_for_commands_that_run_across_a_fleet() {
        let vars = env(&[
            ("MIGRATE_EACH_SCHEMA", "tenant_%"),
            ("MIGRATE_PARALLEL", "8"),
        ]);
        assert!(resolve(&args(&[]), &vars, false).unwrap().is_none());
        let fleet = resolve(&args(&[]), &vars, true).unwrap().unwrap();
        assert_eq!(fleet.options.parallel, 8);
        // A variable alone is no mistake; a flag alone is.
        let parallel = env(&[("MIGRATE_PARALLEL", "8")]);
        assert!(resolve(&args(&[]), &parallel, true).unwrap().is_none());
        assert!(
            resolve(&args(&["--each-schema", "t%"]), &env(&[]), false)
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn defaults_and_values() {
        let fleet = resolve(&args(&["--each-schema", "tenant_%"]), &env(&[]), true)
            .unwrap()
            .unwrap();
        assert!(matches!(fleet.source, Source::EachSchema(ref p) if p == "tenant_%"));
        assert_eq!(fleet.options.parallel, 4);
        assert_eq!(fleet.options.canary, 0);
        assert!(!fleet.options.keep_going);
        assert!(fleet.options.shard.is_none());
        let fleet = resolve(
            &args(&[
                "--each-schema",
                "t%",
                "--parallel",
                "2",
                "--canary",
                "3",
                "--keep-going",
            ]),
            &env(&[]),
            true,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (
                fleet.options.parallel,
                fleet.options.canary,
                fleet.options.keep_going
            ),
            (2, 3, true)
        );
    }

    #[test]
    fn bad_numbers_name_their_origin() {
        let e = message(resolve(
            &args(&["--each-schema", "t%", "--parallel", "0"]),
            &env(&[]),
            true,
        ));
        assert!(e.contains("--parallel") && e.contains("at least 1"), "{e}");
        let e = message(resolve(
            &args(&["--each-schema", "t%"]),
            &env(&[("MIGRATE_PARALLEL", "many")]),
            true,
        ));
        assert!(
            e.contains("MIGRATE_PARALLEL") && e.contains("`many`"),
            "{e}"
        );
    }

    #[test]
    fn two_sources_are_refused() {
        let e = message(resolve(
            &args(&["--each-schema", "t%"]),
            &env(&[("MIGRATE_TARGETS_QUERY", "SELECT 1")]),
            true,
        ));
        assert!(e.contains("--each-schema and MIGRATE_TARGETS_QUERY"), "{e}");
    }

    #[test]
    fn the_shard_comes_from_the_flag_or_the_job_index() {
        let shard = |line: &[&str], vars: &[(&str, &str)]| {
            let mut full = vec!["--each-schema", "t%"];
            full.extend_from_slice(line);
            resolve(&args(&full), &env(vars), true).map(|f| f.unwrap().options.shard)
        };
        assert_eq!(
            shard(&["--shard", "1/3"], &[]).unwrap(),
            Some(Shard::new(1, 3).unwrap())
        );
        assert_eq!(
            shard(&["--shards", "3"], &[("JOB_COMPLETION_INDEX", "2")]).unwrap(),
            Some(Shard::new(2, 3).unwrap())
        );
        // The flag wins over the index.
        assert_eq!(
            shard(
                &["--shard", "0/3", "--shards", "3"],
                &[("JOB_COMPLETION_INDEX", "2")]
            )
            .unwrap(),
            Some(Shard::new(0, 3).unwrap())
        );
        let e = shard(&["--shards", "3"], &[]).unwrap_err().to_string();
        assert!(
            e.contains("JOB_COMPLETION_INDEX") && e.contains("not set"),
            "{e}"
        );
        let e = shard(&["--shards", "3"], &[("JOB_COMPLETION_INDEX", "3")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("JOB_COMPLETION_INDEX") && e.contains("0 to 2"),
            "{e}"
        );
        let e = shard(&["--shard", "1/4", "--shards", "3"], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("disagree"), "{e}");
        let e = shard(&["--shard", "5/4"], &[]).unwrap_err().to_string();
        assert!(e.contains("--shard") && e.contains("0 to 3"), "{e}");
    }

    fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("targets.yaml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn a_targets_file_with_variables() {
        let (_dir, path) = file(
            "- name: acme\n  dsn: postgres://app:${ACME_PW}@db1/acme\n\
             - name: globex\n  schema: tenant_${SUFFIX:globex}\n\
             - {name: both, dsn: 'host=db2 dbname=b', schema: s}\n",
        );
        let targets = read_targets(&path, &env(&[("ACME_PW", "secret")])).unwrap();
        assert_eq!(targets.len(), 3);
        assert_eq!(targets[0].name, "acme");
        assert_eq!(targets[0].dsn.as_ref().unwrap().dbname(), Some("acme"));
        assert_eq!(targets[1].schema.as_deref(), Some("tenant_globex"));
        assert!(targets[1].dsn.is_none());
        assert_eq!(targets[2].schema.as_deref(), Some("s"));
    }

    #[test]
    fn a_bad_targets_file_names_the_file_and_line() {
        let check = |text: &str, vars: &[(&str, &str)], expect: &[&str]| {
            let (_dir, path) = file(text);
            let e = read_targets(&path, &env(vars)).unwrap_err().to_string();
            for part in expect {
                assert!(e.contains(part), "{e:?} lacks {part:?}");
            }
            assert!(!e.contains("secret"), "{e}");
        };
        check(
            "- name: a\n  schema: s\n- name: b\n  dsn: postgres://u:${PW}@h/d\n",
            &[],
            &["targets.yaml:3", "target 2, dsn", "PW is not set"],
        );
        check(
            "- name: a\n",
            &[],
            &["targets.yaml:1", "needs a dsn, a schema"],
        );
        check(
            "- name: a\n  schema: s\n  shcema: t\n",
            &[],
            &["targets.yaml:", "unknown field `shcema`"],
        );
        check("name: a\n", &[], &["targets.yaml", "a list of"]);
        check("- name: [\n", &[], &["targets.yaml:"]);
        check(
            "- name: a\n  dsn: 'postgres://u:secret@h/d?sslmode=maybe'\n",
            &[],
            &["targets.yaml:1", "dsn", "sslmode"],
        );
    }

    #[test]
    fn a_missing_targets_file_is_named() {
        let e = read_targets(Path::new("/nonexistent/targets.yaml"), &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/nonexistent/targets.yaml") && e.contains("cannot read"),
            "{e}"
        );
    }
}
