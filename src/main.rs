//! The `migrate` binary: parse the command line, run, exit with its code.

use clap::Parser;

fn main() {
    let code = match migrate::cli::Cli::try_parse() {
        Ok(cli) => migrate::commands::run(cli),
        Err(err) => migrate::commands::parse_failed(err),
    };
    std::process::exit(code);
}
