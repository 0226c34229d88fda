//! What both benchmarks measure of a program: its wall time and peak RSS.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct Sample {
    pub wall: Duration,
    pub max_rss_kib: i64,
}

/// Runs a command to completion; wall time and peak RSS from wait4.
/// `BENCH_VERBOSE=1` shows what it prints on stdout (a failure's summary).
// The child is reaped by wait4 below, which std's Child does not know of.
#[allow(clippy::zombie_processes)]
pub fn measure(command: &mut Command) -> Sample {
    let out = if std::env::var_os("BENCH_VERBOSE").is_some() {
        Stdio::inherit()
    } else {
        Stdio::null()
    };
    let start = Instant::now();
    let child = command
        .stdout(out)
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child; `status` and `usage` are valid for writes.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = start.elapsed();
    assert_eq!(waited, pid, "wait4 failed");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{command:?} failed"
    );
    Sample {
        wall,
        max_rss_kib: usage.ru_maxrss,
    }
}
