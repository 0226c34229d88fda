//! Running `migrate` on a pseudo-terminal, as an operator at a terminal
//! would, answering its prompt.

use nix::pty::openpty;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct PtyOutcome {
    pub code: i32,
    /// Everything written to the terminal (stdout and stderr together).
    pub output: String,
}

/// Runs `command` with stdin, stdout and stderr on a new terminal. When the
/// output contains `prompt`, types `answer`.
pub fn run_on_pty(command: Command, prompt: Option<(&str, &str)>) -> PtyOutcome {
    run_on_pty_with_stderr(command, prompt, None)
}

/// As `run_on_pty`, with stderr sent to `stderr` instead of the terminal
/// when one is given (`migrate up 2>log`).
pub fn run_on_pty_with_stderr(
    command: Command,
    prompt: Option<(&str, &str)>,
    stderr: Option<std::fs::File>,
) -> PtyOutcome {
    run_on_pty_redirected(command, prompt, None, stderr)
}

/// As `run_on_pty`, with stdout and stderr sent to files instead of the
/// terminal when they are given (`migrate up | tee log`, `up 2>log`).
pub fn run_on_pty_redirected(
    mut command: Command,
    prompt: Option<(&str, &str)>,
    stdout: Option<std::fs::File>,
    stderr: Option<std::fs::File>,
) -> PtyOutcome {
    let pty = openpty(None, None).expect("openpty");
    let slave: OwnedFd = pty.slave;
    let on_terminal = |file: Option<std::fs::File>| match file {
        Some(file) => Stdio::from(file),
        None => Stdio::from(slave.try_clone().unwrap()),
    };
    let (stdout, stderr) = (on_terminal(stdout), on_terminal(stderr));
    command
        .env("TERM", "xterm-256color")
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(stdout)
        .stderr(stderr);
    drop(slave);
    let mut child = command.spawn().expect("spawn on pty");
    // The parent must not keep the terminal's slave side open, or reading
    // the master never ends.
    drop(command);

    let master = std::fs::File::from(pty.master);
    let mut writer = master.try_clone().unwrap();
    let output = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let output = Arc::clone(&output);
        let mut master = master;
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match master.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => output.lock().unwrap().extend_from_slice(&buf[..n]),
                }
            }
        })
    };
    if let Some((prompt, answer)) = prompt {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let seen = String::from_utf8_lossy(&output.lock().unwrap()).contains(prompt);
            if seen {
                // A person answers a moment after the question shows, once
                // the prompt reads the terminal key by key.
                std::thread::sleep(Duration::from_millis(200));
                writer.write_all(answer.as_bytes()).unwrap();
                break;
            }
            if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let status = child.wait().unwrap();
    drop(writer);
    reader.join().unwrap();
    let output = String::from_utf8_lossy(&output.lock().unwrap()).into_owned();
    PtyOutcome {
        code: status.code().unwrap_or(-1),
        output,
    }
}
