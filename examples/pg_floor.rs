//! The benchmark's floor: the least a program can do to talk to
//! PostgreSQL with tokio-postgres (connect, run one query, exit). Every
//! replica that runs `migrate up` at start-up pays at least this.
//!
//! `pg_floor DSN`

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let dsn = std::env::args().nth(1).expect("usage: pg_floor DSN");
    let (client, connection) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls)
        .await
        .expect("connect");
    let connection = tokio::spawn(connection);
    client.simple_query("SELECT 1").await.expect("query");
    drop(client);
    let _ = connection.await;
}
