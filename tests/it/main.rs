//! Integration tests: the real `migrate` binary against a real PostgreSQL
//! server that the harness starts (see DEVELOPERS.md).

mod common;

mod config;
mod connection;
mod files;
mod help;
mod kill;
mod library;
mod lock;
mod sandbox;
mod status;
mod terminal;
mod up;
