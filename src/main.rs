//! The `cargo-adapt-push` binary: tidies the environment, sets up error reports, and hands the
//! command line to the library ([`cargo_adapt_push::run_from_env`]).

use std::process::ExitCode;

fn main() -> ExitCode {
    ignore_empty_settings();
    raise_open_file_limit();
    // On a terminal, miette's graphical reports; in CI logs, no wrapping, so messages stay whole.
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = miette::set_hook(Box::new(move |_| {
        Box::new(
            miette::MietteHandlerOpts::new()
                .wrap_lines(terminal)
                .build(),
        )
    }));
    cargo_adapt_push::run_from_env()
}

/// CI systems often define variables but leave them empty; an empty `ADAPT_PUSH_*` means unset.
fn ignore_empty_settings() {
    let empty: Vec<_> = std::env::vars_os()
        .filter(|(k, v)| k.to_string_lossy().starts_with("ADAPT_PUSH_") && v.is_empty())
        .map(|(k, _)| k)
        .collect();
    for key in empty {
        // SAFETY: called first thing in main, before the runtime or any other thread starts.
        unsafe { std::env::remove_var(key) };
    }
}

/// Every cached layer an image uses stays open (its lock keeps other runs' pruning off it), so a
/// `--workspace` of many images can pass the soft limit of 1024 open files that most systems
/// start with. Raise it to the hard limit, as Go's runtime does for every program (and so ko).
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
