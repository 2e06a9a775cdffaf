//! Processes a node runs: killing one that is not our direct child, showing what it said
//! before it failed, and cleaning up after it.

use std::path::Path;

/// Sends SIGKILL to `pid` through `kill(1)` (the crate forbids `unsafe`, which a direct
/// `kill(2)` call would need). Errors when the signal could not be sent, e.g. the process
/// is already gone.
pub fn sigkill(pid: u32) -> anyhow::Result<()> {
    signal(pid, "-KILL")
}

/// Sends `signal` (as kill(1) spells it: `-KILL`, `-STOP`, `-CONT`) to `pid`.
pub fn signal(pid: u32, signal: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status()
        .map_err(|error| anyhow::anyhow!("cannot run kill(1): {error}"))?;
    anyhow::ensure!(status.success(), "kill {signal} {pid} failed ({status})");
    Ok(())
}

/// True when process `pid` exists and its command line contains `marker` (so a pid
/// reused by an unrelated process is not mistaken for the node). Where there is no
/// `/proc`, only existence is checked, through `kill -0`.
pub fn alive_with(pid: u32, marker: &str) -> bool {
    let proc_dir = Path::new("/proc");
    if proc_dir.is_dir() {
        return match std::fs::read(proc_dir.join(pid.to_string()).join("cmdline")) {
            // A zombie has an empty command line: it is dead, only not reaped yet.
            Ok(cmdline) => String::from_utf8_lossy(&cmdline).contains(marker),
            Err(_) => false,
        };
    }
    std::process::Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status()
        .map(|status| status.success())
        .unwrap_or(false)
}

/// The last `lines` lines of the file at `path` (for error messages), or a note that it
/// cannot be read.
pub fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(error) => format!("(cannot read {}: {error})", path.display()),
    }
}

/// Says on standard error what went wrong on a path that recovers from it (this crate
/// logs through no framework of its own: its callers' `tracing` set-ups differ).
pub fn warn(message: &str) {
    eprintln!("orderflow-nodes: {message}");
}

/// Removes a node's directory, unless the thread is panicking (a failing test: the
/// node's logs are the evidence) or `ORDERFLOW_KEEP_NODES` is set.
pub fn remove_unless_kept(dir: &Path) {
    if std::thread::panicking() || std::env::var_os("ORDERFLOW_KEEP_NODES").is_some() {
        warn(&format!("kept {}", dir.display()));
        return;
    }
    let _ = std::fs::remove_dir_all(dir);
}
