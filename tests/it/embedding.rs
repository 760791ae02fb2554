//! The library as an embedder uses it: plain request types in, an exit status out, in this
//! process, with no command line. Each run starts clean (nothing global survives one).

use std::process::ExitCode;

use cargo_adapt_push::request::{Command, PushRequest, VerifyRequest};

fn status(code: ExitCode) -> String {
    format!("{code:?}")
}

#[test]
fn requests_run_in_process_and_each_run_ends_on_its_own_status() {
    let missing = tempfile::tempdir()
        .unwrap()
        .path()
        .join("nowhere/Cargo.toml");
    let push = || {
        Command::Push(PushRequest {
            manifest_path: Some(missing.clone()),
            quiet: true,
            ..PushRequest::default()
        })
    };
    let not_a_reference = Command::Verify(VerifyRequest {
        reference: "not a reference".into(),
        sbom: true,
        provenance: true,
        ..VerifyRequest::default()
    });
    // A push that cannot start fails (1); verify's unreadable image is its own status (2); and a
    // second failing push in the same process is a plain failure again.
    assert_eq!(
        status(cargo_adapt_push::run(push())),
        status(ExitCode::FAILURE)
    );
    assert_eq!(
        status(cargo_adapt_push::run(not_a_reference)),
        status(ExitCode::from(2))
    );
    assert_eq!(
        status(cargo_adapt_push::run(push())),
        status(ExitCode::FAILURE)
    );
}
