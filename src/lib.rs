//! `migrate`: PostgreSQL schema migrations, each applied exactly once, in
//! order, under an advisory lock.
//!
//! The binary is a thin layer over this library. A service can embed the
//! same engine: build a [`Migrator`] from a folder of migrations (or from
//! migrations compiled into the binary, [`MigrationSet::from_embedded`])
//! and a [`Database`], and call [`Migrator::start_up`] at start-up: it
//! honours `SKIP_MIGRATIONS` and `SKIP_BOOTSTRAP`, takes the migration
//! lock, sends progress [`Event`]s to the [`Reporter`] it is given and
//! returns an [`UpReport`] or a typed [`Error`]. `examples/service.rs` is a
//! whole service doing this, bootstrap scripts included.
//!
//! ```no_run
//! # async fn run() -> Result<(), migrate::Error> {
//! use migrate::{discover, Database, Dsn, LockMode, Migrator, Silent, Tracking};
//! use std::time::Duration;
//!
//! let migrations = discover("migrations".as_ref()).map_err(migrate::Error::Files)?;
//! let database = Database {
//!     dsn: Dsn::parse("postgres://app@localhost/app").map_err(migrate::Error::Usage)?,
//!     tracking: Tracking { schema: "public".into(), table: "schema_migrations".into() },
//!     lock: LockMode::Wait(Duration::from_secs(300)),
//!     lock_key: None,
//!     pooler: migrate::Pooler::Auto,
//!     lease: migrate::DEFAULT_LEASE,
//!     actor: None,
//!     session: migrate::store::SessionSettings {
//!         lock_timeout: Duration::from_secs(5),
//!         statement_timeout: None,
//!     },
//!     wait_for_db: Duration::from_secs(30),
//!     bootstrap: None,
//! };
//! let report = Migrator::new(migrations, database).start_up(&Silent).await?;
//! println!("{:?}: {} applied", report.outcome, report.done.applied.len());
//! # Ok(()) }
//! ```

#[cfg(feature = "cli")]
pub mod cli;
#[cfg(feature = "cli")]
pub mod commands;
#[cfg(feature = "cli")]
pub mod config;
pub mod dsn;
pub mod duration;
pub mod engine;
#[cfg(feature = "cli")]
pub mod environment;
pub mod error;
pub mod fleet;
#[cfg(feature = "cli")]
pub mod metrics;
pub mod migration;
#[cfg(feature = "cli")]
pub mod pgserver;
pub mod plan;
#[cfg(feature = "cli")]
pub mod render;
pub mod report;
#[cfg(feature = "cli")]
pub mod serve;
#[cfg(feature = "cli")]
pub mod settings;
pub mod state;
pub mod store;

#[cfg(feature = "embed")]
pub use include_dir;

pub use dsn::Dsn;
pub use engine::{DEFAULT_LEASE, Database, LockMode, Migrator, Pooler, UpOptions, default_actor};
pub use error::Error;
pub use migration::{Migration, MigrationSet, Version, discover};
pub use report::{Event, Reporter, Silent, UpOutcome, UpReport};
pub use store::Tracking;
