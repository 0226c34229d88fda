//! Integration tests: the real `migrate` binary against a real PostgreSQL
//! server that the harness starts (see DEVELOPERS.md).

mod common;

mod config;
mod connection;
mod deploy;
mod down;
mod drift;
mod faults;
mod files;
mod fleet;
mod help;
mod json;
mod kill;
mod library;
mod lock;
mod notx;
mod ops;
mod page;
mod pooler;
mod sandbox;
mod serve;
mod status;
mod terminal;
mod timeouts;
mod up;
