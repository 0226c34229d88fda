//! The `migrate` binary: parse the command line, run, exit with its code.

use clap::Parser;

fn main() {
    let code = match migrate::cli::Cli::try_parse() {
        Ok(cli) => {
            if !matches!(cli.command, Some(migrate::cli::Command::Serve(_))) {
                one_malloc_arena();
            }
            migrate::commands::run(cli)
        }
        Err(err) => migrate::commands::parse_failed(err),
    };
    std::process::exit(code);
}

/// A run is one short process with a thread or two reading files beside
/// the one talking to the server. glibc gives each thread its own malloc
/// arena, so what the reading threads free is never reused by the other:
/// with 10 000 files that strands over a MiB. One arena for the lot. Not
/// for `serve`, whose worker threads allocate side by side for as long as
/// it runs.
fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes the allocator's settings; called before
    // any thread but this one exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}
