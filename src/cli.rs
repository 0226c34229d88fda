//! The command line, as clap sees it. Nothing here is interpreted: the
//! values are resolved against the environment and the config folder in
//! `settings`.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "migrate",
    version,
    about = "PostgreSQL schema migrations: each applied exactly once, in order, under an advisory lock",
    long_about = None,
    after_help = "With no command, `migrate` runs `up`. Options may stand before or after the command.\n\
Environment: SKIP_MIGRATIONS=true makes `up` exit 0 at once without connecting; SKIP_BOOTSTRAP=true \
skips the bootstrap scripts (config: skip-migrations, skip-bootstrap in deployment.yaml).\n\
Exit codes: 0 done or nothing to do, 1 a migration or the run failed, 2 bad usage, config or \
migration files, 3 drift between files and database, 4 the lock was not acquired within \
--lock-wait, 5 the database could not be reached. Across a fleet, the most severe of the targets' \
codes: 1, then 3, 2, 5, 4."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub global: GlobalArgs,
}

#[derive(Debug, Subcommand, Clone, PartialEq, Eq)]
pub enum Command {
    /// Apply pending migrations in order, each in its own transaction (the default)
    Up,
    /// Roll back the last applied migration(s) with their .down.sql files
    Down(DownArgs),
    /// Show every migration: APPLIED, PENDING, FAILED, CHANGED or MISSING
    Status,
    /// Show the journal of every apply, failure, rollback and repair, oldest first
    History,
    /// Compare files and database; exit 3 on drift (changed, missing or out-of-order files)
    Validate,
    /// Accept applied files as they are now (all drifted versions, or the ones named)
    Repair(RepairArgs),
    /// Show who holds the migration lock
    Lock,
    /// Create the next numbered NNN_NAME.sql and NNN_NAME.down.sql in the folder
    New(NewArgs),
    /// Wait until the database has no pending or failed migrations of this folder
    Wait(WaitArgs),
    /// Print a shell completion script
    Completions(CompletionsArgs),
    /// Apply every migration to a throwaway PostgreSQL server, check each down file, show the
    /// result, remove the server
    Sandbox,
    /// Serve the admin HTTP API: status, history and running the pending migrations
    Serve(ServeArgs),
}

#[derive(Debug, Args, Clone, PartialEq, Eq, Default)]
pub struct ServeArgs {
    /// Address to listen on [env: MIGRATE_LISTEN] [default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<String>,

    /// File of named tokens, one `name:sha256-hex` per line [env: MIGRATE_TOKEN_FILE]; also
    /// MIGRATE_ADMIN_TOKEN, a token itself
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,

    /// Serve /metrics without a token [env: MIGRATE_PUBLIC_METRICS]
    #[arg(long)]
    pub public_metrics: bool,

    /// A run asked for with one token starts only once a second, different run token approves it, within 15 minutes [env: MIGRATE_REQUIRE_APPROVAL]
    #[arg(long)]
    pub require_approval: bool,

    /// Only clients from these networks, e.g. 10.0.0.0/8 (repeat, or comma-separate)
    /// [env: MIGRATE_ALLOW_FROM] [default: any]
    #[arg(long, value_name = "CIDR")]
    pub allow_from: Vec<String>,

    /// At most N runs per minute, for all clients together [env: MIGRATE_RUN_LIMIT] [default: 6]
    #[arg(long, value_name = "N")]
    pub run_limit: Option<u32>,
}

#[derive(Debug, Args, Clone, PartialEq, Eq, Default)]
pub struct DownArgs {
    /// How many of the newest applied migrations to roll back [default: 1]
    #[arg(long, value_name = "N")]
    pub steps: Option<usize>,

    /// Roll back every applied migration newer than VERSION (VERSION stays applied)
    #[arg(long, value_name = "VERSION")]
    pub to: Option<String>,
}

#[derive(Debug, Args, Clone, PartialEq, Eq, Default)]
pub struct NewArgs {
    /// The migration's name: letters, digits, `_` and `-`
    #[arg(value_name = "NAME")]
    pub name: String,
}

#[derive(Debug, Args, Clone, PartialEq, Eq, Default)]
pub struct WaitArgs {
    /// How long to wait before giving up (exit 1), e.g. 90s, 5m [env: MIGRATE_WAIT_TIMEOUT] [default: 5m]
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
}

#[derive(Debug, Args, Clone, PartialEq, Eq)]
pub struct CompletionsArgs {
    /// The shell
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args, Clone, PartialEq, Eq, Default)]
pub struct RepairArgs {
    /// Versions to repair [default: every CHANGED or MISSING one]
    #[arg(value_name = "VERSION")]
    pub versions: Vec<String>,
}

#[derive(Clone, Debug, Args, Default)]
pub struct GlobalArgs {
    /// Folder of migration files [env: MIGRATE_PATH] [config: migrations_path] [default: ./migrations]
    #[arg(long, global = true, value_name = "DIR")]
    pub path: Option<PathBuf>,

    /// Connection string, URL or key=value [env: DB_DSN, then DATABASE_URL] [config: dsn]
    #[arg(long, global = true, value_name = "DSN")]
    pub dsn: Option<DsnArg>,

    /// Config folder; every *.yaml in it is read [env: MIGRATE_CONFIG] [default: ./config]
    #[arg(long, global = true, value_name = "DIR")]
    pub config: Option<PathBuf>,

    /// Entry of the config folder to use [env: MIGRATE_DB] [default: db_main]
    #[arg(long, global = true, value_name = "NAME")]
    pub db: Option<String>,

    /// Schema to migrate; created if missing and used as search_path [env: MIGRATE_SCHEMA] [config: schema] [default: public]
    #[arg(long, global = true, value_name = "NAME")]
    pub schema: Option<String>,

    /// State table name; the journal is <NAME>_log [env: MIGRATE_TABLE] [config: table] [default: schema_migrations]
    #[arg(long, global = true, value_name = "NAME")]
    pub table: Option<String>,

    /// Advisory lock key [env: MIGRATE_LOCK_KEY] [config: lock_key] [default: derived from database, schema and table]
    #[arg(long, global = true, value_name = "N", allow_negative_numbers = true)]
    pub lock_key: Option<String>,

    /// How long to wait for the migration lock, e.g. 90s, 5m [env: MIGRATE_LOCK_WAIT] [config: lock_wait] [default: 5m]
    #[arg(long, global = true, value_name = "DURATION")]
    pub lock_wait: Option<String>,

    /// What stands in front of the server: auto, none, session or transaction (a pooler in transaction mode gets a lease lock instead of a session advisory lock) [env: MIGRATE_POOLER] [config: pooler] [default: auto]
    #[arg(long, global = true, value_name = "KIND")]
    pub pooler: Option<String>,

    /// Through a pooler in transaction mode: how long the lock's lease lasts unless renewed, so how soon a killed run's lock is taken over, e.g. 30s [env: MIGRATE_LOCK_LEASE] [config: lock_lease] [default: 30s]
    #[arg(long, global = true, value_name = "DURATION")]
    pub lock_lease: Option<String>,

    /// Exit 0 at once if another instance holds the migration lock [env: MIGRATE_SKIP_IF_LOCKED]
    #[arg(long, global = true)]
    pub skip_if_locked: bool,

    /// --safe=false takes no lock: for a single instance only [env: MIGRATE_SAFE] [default: true]
    #[arg(
        long,
        global = true,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub safe: Option<String>,

    /// Apply without asking for confirmation
    #[arg(short = 'y', long, global = true)]
    pub yes: bool,

    /// Print the plan; change nothing and take no lock
    #[arg(long, global = true)]
    pub dry_run: bool,

    /// Apply up to and including this version
    #[arg(long, global = true, value_name = "VERSION")]
    pub target: Option<String>,

    /// Apply pending files older than the newest applied one [env: MIGRATE_OUT_OF_ORDER]
    #[arg(long, global = true)]
    pub out_of_order: bool,

    /// lock_timeout for each migration; 0 turns it off [env: MIGRATE_LOCK_TIMEOUT] [config: lock_timeout] [default: 5s]
    #[arg(long, global = true, value_name = "DURATION")]
    pub lock_timeout: Option<String>,

    /// statement_timeout for each migration [env: MIGRATE_STATEMENT_TIMEOUT] [config: statement_timeout] [default: the server's]
    #[arg(long, global = true, value_name = "DURATION")]
    pub statement_timeout: Option<String>,

    /// Keep trying the first connection this long [env: MIGRATE_WAIT_FOR_DB] [config: wait_for_db] [default: 0, try once]
    #[arg(long, global = true, value_name = "DURATION")]
    pub wait_for_db: Option<String>,

    /// One JSON document on stdout; messages go to stderr
    #[arg(long, global = true)]
    pub json: bool,

    /// Write Prometheus metrics to PATH (node-exporter textfile collector) [env: MIGRATE_METRICS_FILE]
    #[arg(long, global = true, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,

    /// Only errors, warnings and what the command is for (tables, JSON)
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Also the connection, the server version and the lock key
    #[arg(short, long, global = true)]
    pub verbose: bool,

    /// Same as `migrate status`
    #[arg(long = "status", global = true)]
    pub status_flag: bool,

    /// Every schema whose name matches this LIKE pattern (tenant_%), each with its own state table, journal and lock [env: MIGRATE_EACH_SCHEMA]
    #[arg(long, global = true, value_name = "PATTERN", conflicts_with_all = ["targets", "targets_query"], help_heading = "Fleets")]
    pub each_schema: Option<String>,

    /// A YAML list of targets, each a `name` with a `dsn` and/or a `schema`; ${VAR} is expanded [env: MIGRATE_TARGETS]
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        conflicts_with = "targets_query",
        help_heading = "Fleets"
    )]
    pub targets: Option<PathBuf>,

    /// A query run on the main connection whose rows give each target's `name` and its `schema` and/or `dsn` [env: MIGRATE_TARGETS_QUERY]
    #[arg(long, global = true, value_name = "SQL", help_heading = "Fleets")]
    pub targets_query: Option<String>,

    /// Targets migrated at a time, each over one connection [env: MIGRATE_PARALLEL] [default: 4]
    #[arg(long, global = true, value_name = "N", help_heading = "Fleets")]
    pub parallel: Option<String>,

    /// Migrate the first K targets alone first, and stop if any of them fails
    #[arg(long, global = true, value_name = "K", help_heading = "Fleets")]
    pub canary: Option<String>,

    /// After a target fails, go on with the others (by default none starts after a failure)
    #[arg(long, global = true, help_heading = "Fleets")]
    pub keep_going: bool,

    /// Only the targets whose name hashes into shard I of N (0-based), e.g. 2/8 [env: MIGRATE_SHARD]
    #[arg(long, global = true, value_name = "I/N", help_heading = "Fleets")]
    pub shard: Option<String>,

    /// N shards, this one numbered by JOB_COMPLETION_INDEX (a Kubernetes Indexed Job) [env: MIGRATE_SHARDS]
    #[arg(long, global = true, value_name = "N", help_heading = "Fleets")]
    pub shards: Option<String>,
}

/// A `--dsn` value as given; its `Debug` hides it, since it may hold a
/// password.
#[derive(Clone, Default)]
pub struct DsnArg(pub String);

impl std::fmt::Debug for DsnArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DsnArg(<hidden>)")
    }
}

impl std::str::FromStr for DsnArg {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<DsnArg, Self::Err> {
        Ok(DsnArg(s.to_owned()))
    }
}

impl Command {
    /// The command's name as typed.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Up => "up",
            Command::Down(_) => "down",
            Command::Status => "status",
            Command::History => "history",
            Command::Validate => "validate",
            Command::Repair(_) => "repair",
            Command::Lock => "lock",
            Command::New(_) => "new",
            Command::Wait(_) => "wait",
            Command::Completions(_) => "completions",
            Command::Sandbox => "sandbox",
            Command::Serve(_) => "serve",
        }
    }
}

impl Cli {
    /// The command to run: the subcommand, `--status`, or `up`.
    pub fn command(&self) -> Result<Command, String> {
        match (&self.command, self.global.status_flag) {
            (None, true) | (Some(Command::Status), true) => Ok(Command::Status),
            (Some(other), true) => Err(format!(
                "--status cannot be combined with the `{}` command",
                other.name()
            )),
            (Some(command), false) => Ok(command.clone()),
            (None, false) => Ok(Command::Up),
        }
    }
}
