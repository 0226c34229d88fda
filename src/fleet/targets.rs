//! Where a fleet's targets come from, and the checks on them before
//! anything runs: names given once, no two targets on the same tracking
//! table, none left out by a pattern or query that found nothing.

use super::Target;
use crate::dsn::Dsn;
use crate::engine::Database;
use crate::error::{DbFailure, Error};
use crate::store::Tracking;
use std::collections::HashMap;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, SimpleQueryMessage};

/// The targets, as given.
#[derive(Clone, Debug)]
pub enum Targets {
    /// Already known (a targets file, or a service's own list).
    Listed(Vec<Target>),
    /// Every schema of the main database whose name matches this LIKE
    /// pattern (system schemas never do).
    EachSchema(String),
    /// A query run on the main connection; its rows give each target's
    /// `name` and its `schema` and/or `dsn`.
    Query(String),
}

impl Targets {
    /// How the targets were given, for messages.
    pub fn describe(&self) -> String {
        match self {
            Targets::Listed(_) => "the list of targets".into(),
            Targets::EachSchema(pattern) => format!("--each-schema {pattern}"),
            Targets::Query(_) => "--targets-query".into(),
        }
    }

    /// Whether finding the targets needs the main connection.
    pub(super) fn needs_connection(&self) -> bool {
        !matches!(self, Targets::Listed(_))
    }
}

/// Every schema matching `pattern`, by name.
pub(super) async fn each_schema(client: &Client, pattern: &str) -> Result<Vec<Target>, Error> {
    let rows = client
        .query_typed(
            "SELECT nspname::text FROM pg_catalog.pg_namespace
              WHERE nspname LIKE $1
                AND nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema'
              ORDER BY nspname COLLATE \"C\"",
            &[(&pattern, Type::TEXT)],
        )
        .await
        .map_err(|err| {
            Error::Usage(format!(
                "--each-schema {pattern}: cannot list the schemas: {}",
                DbFailure::from(err)
            ))
        })?;
    Ok(rows
        .iter()
        .map(|row| {
            let schema: String = row.get(0);
            Target {
                name: schema.clone(),
                dsn: None,
                schema: Some(schema),
            }
        })
        .collect())
}

/// The targets a query's rows give: a `name` column, and a `schema` or
/// `dsn` column or both (a NULL takes the main connection's).
pub(super) async fn from_query(
    client: &Client,
    sql: &str,
    schema: &str,
) -> Result<Vec<Target>, Error> {
    // Run as the migrations run: with the search path set to the schema.
    let path = format!("SET search_path TO {}", crate::store::quote_ident(schema));
    client
        .batch_execute(&path)
        .await
        .map_err(|err| Error::database("cannot set the search path", err))?;
    let messages = client
        .simple_query(sql)
        .await
        .map_err(|err| Error::Usage(format!("--targets-query failed: {}", DbFailure::from(err))))?;
    let mut targets = Vec::new();
    let rows = messages.iter().filter_map(|m| match m {
        SimpleQueryMessage::Row(row) => Some(row),
        _ => None,
    });
    for (index, row) in rows.enumerate() {
        let columns = row.columns();
        let position = |name: &str| columns.iter().position(|c| c.name() == name);
        let (Some(name), schema, dsn) = (position("name"), position("schema"), position("dsn"))
        else {
            return Err(Error::Usage(format!(
                "--targets-query: the rows need a `name` column (they have {})",
                column_list(row)
            )));
        };
        if schema.is_none() && dsn.is_none() {
            return Err(Error::Usage(format!(
                "--targets-query: the rows need a `schema` or a `dsn` column, or both (they \
                 have {})",
                column_list(row)
            )));
        }
        let row_number = index + 1;
        let Some(name) = row.get(name).map(str::to_owned) else {
            return Err(Error::Usage(format!(
                "--targets-query: row {row_number} has no name (NULL)"
            )));
        };
        let dsn = match dsn.and_then(|i| row.get(i)) {
            Some(text) => Some(Dsn::parse(text).map_err(|err| {
                Error::Usage(format!(
                    "--targets-query: row {row_number} ({name}): its dsn: {err}"
                ))
            })?),
            None => None,
        };
        targets.push(Target {
            name,
            dsn,
            schema: schema.and_then(|i| row.get(i)).map(str::to_owned),
        });
    }
    Ok(targets)
}

fn column_list(row: &tokio_postgres::SimpleQueryRow) -> String {
    let names: Vec<String> = row
        .columns()
        .iter()
        .map(|c| format!("`{}`", c.name()))
        .collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// A target made ready: its name and the database settings it runs with.
#[derive(Clone, Debug)]
pub struct FleetTarget {
    pub name: String,
    pub database: Database,
}

impl FleetTarget {
    /// `user@host:port/db schema`, never the password.
    pub fn describe(&self) -> String {
        format!(
            "{} {}",
            self.database.dsn.describe(),
            self.database.tracking.schema
        )
    }
}

/// The targets with the main settings filled in, refused when a name is
/// empty or given twice, or when two of them would share one tracking
/// table (same server, database, schema and table): they would each
/// believe the other's history is theirs.
pub(super) fn prepare(
    targets: Vec<Target>,
    main: &Database,
    source: &Targets,
) -> Result<Vec<FleetTarget>, Error> {
    if main.lock_key.is_some() {
        return Err(Error::Usage(
            "a lock key (--lock-key, MIGRATE_LOCK_KEY or lock_key) names one lock, and each \
             target of a fleet takes its own, derived from its database, schema and table: \
             leave it unset"
                .into(),
        ));
    }
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut tables: HashMap<(String, String, String), String> = HashMap::new();
    let mut prepared = Vec::with_capacity(targets.len());
    for (index, target) in targets.into_iter().enumerate() {
        let name = target.name.trim().to_owned();
        if name.is_empty() {
            return Err(Error::Usage(format!(
                "{}: target {} has an empty name",
                source.describe(),
                index + 1
            )));
        }
        if let Some(first) = names.insert(name.clone(), index) {
            return Err(Error::Usage(format!(
                "{}: the name `{name}` is given to targets {} and {}; each target needs a name \
                 of its own (shards and metrics go by it)",
                source.describe(),
                first + 1,
                index + 1
            )));
        }
        let mut database = main.clone();
        if let Some(dsn) = target.dsn {
            database.dsn = dsn;
        }
        if let Some(schema) = target.schema {
            if schema.is_empty() {
                return Err(Error::Usage(format!(
                    "{}: target `{name}` has an empty schema",
                    source.describe()
                )));
            }
            database.tracking = Tracking {
                schema,
                table: main.tracking.table.clone(),
            };
        }
        let key = (
            database.dsn.database_key(),
            database.tracking.schema.clone(),
            database.tracking.table.clone(),
        );
        if let Some(other) = tables.insert(key, name.clone()) {
            return Err(Error::Usage(format!(
                "{}: targets `{other}` and `{name}` are the same database ({}), schema and \
                 tracking table ({}): each would run over the other's history; give each \
                 target its own schema or database",
                source.describe(),
                database.dsn.describe(),
                database.tracking.display_state()
            )));
        }
        prepared.push(FleetTarget { name, database });
    }
    Ok(prepared)
}
