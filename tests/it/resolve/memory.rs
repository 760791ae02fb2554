//! `resolve` on inputs too large to hold twice, and on a stream that never ends: memory stays
//! linear in the input, and the stream is cut at the limit.

use crate::common::*;

use super::shop;

/// Runs `cmd` to its end with stdout going to `stdout`; gives its exit status, its stderr and
/// its peak resident memory in bytes (wait4's `ru_maxrss`: the process's, or a child's if a
/// child's was larger). A watchdog kills it once its resident memory passes `kill_above` or
/// after three minutes, so a regression fails the test instead of exhausting the machine.
///
/// `ru_maxrss` also holds the peak of the memory the child left at exec, which (std spawns with
/// vfork) was this test process's own, and this process runs every other integration test too.
/// So it counts only when it is above this process's own peak (`VmHWM`); below that, the tool's
/// own peak after exec, sampled from /proc every 10 ms, stands in for it.
fn run_measured(
    cmd: &mut std::process::Command,
    stdout: std::fs::File,
    kill_above: u64,
) -> (std::process::ExitStatus, String, u64) {
    use std::os::unix::process::ExitStatusExt;
    let stderr_file = tempfile::tempfile().unwrap();
    // Reaped by wait4 below, which also gives its resource usage.
    #[allow(clippy::zombie_processes)]
    let child = cmd
        .stdout(stdout)
        .stderr(stderr_file.try_clone().unwrap())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let started = std::time::Instant::now();
    let mut killed = None;
    let mut sampled_peak = 0;
    let (status, maxrss) = loop {
        let mut status = 0;
        // SAFETY: a zeroed rusage is a valid value for wait4 to fill in.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: pid is our child; status and usage are valid for writes.
        let reaped = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if reaped == pid {
            break (
                std::process::ExitStatus::from_raw(status),
                usage.ru_maxrss as u64 * 1024,
            );
        }
        assert_eq!(reaped, 0, "wait4: {}", std::io::Error::last_os_error());
        let status = format!("/proc/{pid}/status");
        let rss = status_kib(&status, "VmRSS:") * 1024;
        sampled_peak = sampled_peak.max(status_kib(&status, "VmHWM:") * 1024);
        if killed.is_none() && (rss > kill_above || started.elapsed().as_secs() > 180) {
            killed = Some(rss);
            // SAFETY: signalling our own child, not yet reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    assert!(
        killed.is_none(),
        "killed at {} MiB resident after {:?}",
        killed.unwrap_or(0) >> 20,
        started.elapsed()
    );
    let mut err = String::new();
    use std::io::{Read, Seek};
    let mut stderr_file = stderr_file;
    stderr_file.rewind().unwrap();
    stderr_file.read_to_string(&mut err).unwrap();
    let own_peak = status_kib("/proc/self/status", "VmHWM:") * 1024;
    let peak = if maxrss > own_peak {
        maxrss
    } else {
        sampled_peak
    };
    (status, err, peak)
}

/// A `/proc/PID/status` field in kB (`VmRSS:`, `VmHWM:`); 0 once the process is gone.
fn status_kib(status: &str, field: &str) -> u64 {
    std::fs::read_to_string(status)
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with(field))?.to_string();
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .unwrap_or(0)
}

/// About `size` bytes of multi-document YAML without placeholders, with `adapt://` in comments,
/// longer strings and block scalars, and text that is not ASCII.
fn big_manifest(size: usize) -> String {
    use std::fmt::Write;
    let mut text = String::with_capacity(size + 1024);
    let mut i = 0;
    while text.len() < size {
        write!(
            text,
            "---\n# document {i}: adapt://api in a comment\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app-{i}\n  labels: {{app: app-{i}, note: \"ünïcode ✓\"}}\nspec:\n  template:\n    spec:\n      containers:\n      - name: app\n        image: registry.example/app:{i}\n        args: [\"--say\", 'run adapt://api later']\n        command:\n        - |\n          adapt://api in a script\n"
        )
        .unwrap();
        i += 1;
    }
    text
}

#[test]
fn memory_stays_linear_in_the_input_and_a_stream_that_never_ends_is_cut() {
    const MIB: u64 = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("shop");
    std::fs::create_dir_all(&root).unwrap();
    // No placeholder in the input: nothing is pushed, so no registry is needed.
    shop(&root, "127.0.0.1:9", "127.0.0.1:9");
    let resolve = || {
        let mut cmd = tool();
        cmd.args(["adapt-push", "resolve", "--manifest-path"])
            .arg(root.join("Cargo.toml"));
        cmd
    };

    let big = dir.path().join("big.yaml");
    let text = big_manifest(24 << 20);
    std::fs::write(&big, &text).unwrap();
    let size = text.len() as u64;
    let out = dir.path().join("out.yaml");
    let (status, err, peak) = run_measured(
        resolve().arg("-f").arg(&big),
        std::fs::File::create(&out).unwrap(),
        2 << 30,
    );
    assert!(status.success(), "{status}: {err}");
    assert!(
        std::fs::read_to_string(&out).unwrap() == text,
        "the input unchanged"
    );
    let bound = 2 * size + 64 * MIB;
    eprintln!(
        "{} MiB of YAML: {} MiB resident at most",
        size / MIB,
        peak / MIB
    );
    assert!(
        peak <= bound,
        "{} MiB of YAML took {} MiB resident (bound {} MiB)",
        size / MIB,
        peak / MIB,
        bound / MIB
    );

    // A stream that never ends stops at the documented limit, with memory of that order.
    let (status, err, peak) = run_measured(
        resolve().args(["-f", "/dev/zero"]),
        std::fs::File::create(&out).unwrap(),
        2 << 30,
    );
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("-f /dev/zero: larger than 256 MiB") && err.contains("split the manifests"),
        "{err}"
    );
    eprintln!("-f /dev/zero: {} MiB resident at most", peak / MIB);
    assert!(
        peak <= 2 * 256 * MIB + 64 * MIB,
        "{} MiB resident",
        peak / MIB
    );
}
