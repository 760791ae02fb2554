//! A flaky link in front of a registry, for `scripts/bench-faults` (and for trying things by
//! hand). The same code runs in the registry fault tests.
//!
//! ```text
//! cargo run --example fault-proxy -- --target 127.0.0.1:5000 [--listen 127.0.0.1:0]
//!     [--reset-every N] [--cut-after BYTES] [--cuts N] [--throttle BYTES_PER_SEC]
//! cargo run --example fault-proxy -- --blackhole [--listen 127.0.0.1:0]
//! ```
//!
//! `--blackhole` accepts connections and never answers (a registry that hangs).
//!
//! Prints `listening on 127.0.0.1:PORT` on stdout once ready, then a line of counters on stderr
//! whenever they change. Runs until killed.

// The fault proxies are the test harness's own, so the tests and this tool break links alike.
#[path = "../../tests/it/common/faults/mod.rs"]
mod faults;

use std::io::Write;
use std::time::Duration;

fn main() {
    let mut args = std::env::args().skip(1);
    let mut target = None;
    let mut listen = "127.0.0.1:0".to_string();
    let mut faults = faults::TcpFaults::default();
    let mut blackhole = false;
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        let number = |v: String| {
            v.parse::<u64>()
                .unwrap_or_else(|_| usage(&format!("{v}: not a number")))
        };
        match flag.as_str() {
            "--target" => target = Some(value()),
            "--listen" => listen = value(),
            "--reset-every" => faults.reset_every = number(value()) as usize,
            "--cut-after" => faults.cut_after = number(value()),
            "--cuts" => faults.cuts = number(value()) as usize,
            "--throttle" => faults.throttle = number(value()),
            "--blackhole" => blackhole = true,
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    if blackhole {
        run_blackhole(&listen);
    }
    let target = target.unwrap_or_else(|| usage("--target is required"));
    if faults.cut_after > 0 && faults.cuts == 0 {
        faults.cuts = 1;
    }
    let proxy = faults::FaultProxy::bind(&listen, &target, faults).unwrap_or_else(|e| {
        eprintln!("fault-proxy: cannot listen on {listen}: {e}");
        std::process::exit(1);
    });
    println!("listening on 127.0.0.1:{}", proxy.port);
    let _ = std::io::stdout().flush();
    let mut last = String::new();
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = proxy.stats.summary();
        if now != last {
            eprintln!("fault-proxy: {now}");
            last = now;
        }
    }
}

/// Accepts connections and holds them open without a byte of answer, until killed.
fn run_blackhole(listen: &str) -> ! {
    let listener = std::net::TcpListener::bind(listen).unwrap_or_else(|e| {
        eprintln!("fault-proxy: cannot listen on {listen}: {e}");
        std::process::exit(1);
    });
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    println!("listening on 127.0.0.1:{port}");
    let _ = std::io::stdout().flush();
    let mut held = Vec::new();
    for stream in listener.incoming().flatten() {
        held.push(stream);
    }
    std::process::exit(0);
}

fn usage(problem: &str) -> ! {
    if !problem.is_empty() {
        eprintln!("fault-proxy: {problem}");
    }
    eprintln!(
        "usage: fault-proxy --target HOST:PORT [--listen ADDR] [--reset-every N] [--cut-after BYTES] [--cuts N] [--throttle BYTES_PER_SEC]\n       fault-proxy --blackhole [--listen ADDR]"
    );
    std::process::exit(2);
}
