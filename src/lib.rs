//! `migrate`: PostgreSQL schema migrations, each applied exactly once, in
//! order, under an advisory lock.
//!
//! The binary is a thin layer over this library. A service can embed the
//! same engine: build a [`Migrator`] from a folder of migrations and a
//! [`Database`], and call [`Migrator::up`] at start-up.
//!
//! ```no_run
//! # async fn run() -> Result<(), migrate::Error> {
//! use migrate::{discover, Database, Dsn, LockMode, Migrator, Silent, Tracking, UpOptions};
//! use std::time::Duration;
//!
//! let migrations = discover("migrations".as_ref()).map_err(migrate::Error::Files)?;
//! let database = Database {
//!     dsn: Dsn::parse("postgres://app@localhost/app").map_err(migrate::Error::Usage)?,
//!     tracking: Tracking { schema: "public".into(), table: "schema_migrations".into() },
//!     lock: LockMode::Wait(Duration::from_secs(300)),
//!     lock_key: None,
//!     actor: None,
//!     session: migrate::store::SessionSettings {
//!         lock_timeout: Duration::from_secs(5),
//!         statement_timeout: None,
//!     },
//!     wait_for_db: Duration::from_secs(30),
//!     bootstrap: None,
//! };
//! let report = Migrator::new(migrations, database).up(&UpOptions::default(), &Silent).await?;
//! println!("{} applied", report.applied.len());
//! # Ok(()) }
//! ```

pub mod cli;
pub mod commands;
pub mod config;
pub mod dsn;
pub mod duration;
pub mod engine;
pub mod error;
pub mod metrics;
pub mod migration;
pub mod pgserver;
pub mod plan;
pub mod render;
pub mod report;
pub mod settings;
pub mod store;

#[cfg(feature = "embed")]
pub use include_dir;

pub use dsn::Dsn;
pub use engine::{Database, LockMode, Migrator, UpOptions, default_actor};
pub use error::Error;
pub use migration::{Migration, MigrationSet, Version, discover};
pub use report::{Event, Reporter, Silent, UpOutcome, UpReport};
pub use store::Tracking;
