//! The `migrate` binary: parse the command line, run, exit with its code.

use clap::Parser;

fn main() {
    let cli = migrate::cli::Cli::parse();
    std::process::exit(migrate::commands::run(cli));
}
