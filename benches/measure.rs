//! What both benchmarks measure of a program: its wall time, peak RSS,
//! and the CPU time the whole machine was busy meanwhile (the program and
//! the server alike).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct Sample {
    pub wall: Duration,
    pub max_rss_kib: i64,
    /// All CPUs' time out of idle and I/O wait, from `/proc/stat` (zero
    /// where there is none).
    #[allow(dead_code)] // startup.rs does not report it
    pub busy: Duration,
}

/// The machine's busy CPU time so far: user, nice, system, irq, softirq
/// and steal of `/proc/stat`'s first line.
fn busy_so_far() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return Duration::ZERO;
    };
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let busy: u64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| fields.get(i))
        .sum();
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(busy * 1000 / ticks)
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
    let busy_before = busy_so_far();
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
    let busy = busy_so_far().saturating_sub(busy_before);
    assert_eq!(waited, pid, "wait4 failed");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{command:?} failed"
    );
    Sample {
        wall,
        max_rss_kib: usage.ru_maxrss,
        busy,
    }
}
