//! The benchmark's floors. `pg_floor DSN`: the least a program can do to
//! talk to PostgreSQL with tokio-postgres (connect, run one query, exit);
//! every replica that runs `migrate up` at start-up pays at least this.
//! `pg_floor DSN DIR`: the same after reading and hashing (SHA-256) every
//! file of DIR on one thread, the I/O any tool that checks its migrations
//! against the database must do.

use sha2::{Digest, Sha256};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let dsn = args.next().expect("usage: pg_floor DSN [DIR]");
    if let Some(dir) = args.next() {
        let mut hashed = 0;
        for entry in std::fs::read_dir(dir).expect("read DIR") {
            let bytes = std::fs::read(entry.expect("entry").path()).expect("read file");
            hashed += Sha256::digest(&bytes)[0] as usize;
        }
        std::hint::black_box(hashed);
    }
    let (client, connection) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls)
        .await
        .expect("connect");
    let connection = tokio::spawn(connection);
    client.simple_query("SELECT 1").await.expect("query");
    drop(client);
    let _ = connection.await;
}
