//! On a terminal, stderr shows progress bars while layers are compressed and uploaded, and
//! stdout still carries only the reference. stderr goes to a real pseudo-terminal (`script`,
//! from util-linux), stdout to a file.

use std::process::Command;

use crate::common::*;

#[test]
fn a_terminal_shows_compression_and_upload_bars_and_stdout_only_the_reference() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let manifest = crate_with_data_file(dir.path(), "bars", &registry.addr(), "big.bin");
    // Big enough for a bar to be drawn while the layer is written and sent.
    let big: Vec<u8> = (0..(8u32 << 20)).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.path().join("big.bin"), big).unwrap();
    let out_file = dir.path().join("stdout.txt");
    let transcript = dir.path().join("terminal.txt");

    // The tool's hermetic environment, run under `script` so that stderr is a terminal.
    let tool = tool();
    let command_line = format!(
        "{} adapt-push --manifest-path {} >{}",
        tool.get_program().to_string_lossy(),
        manifest.display(),
        out_file.display()
    );
    let mut script = Command::new("script");
    script
        .args(["-q", "-f", "-e", "-c", &command_line])
        .arg(&transcript)
        .stdin(std::process::Stdio::null())
        .env("TERM", "xterm");
    for (key, value) in tool.get_envs() {
        match value {
            Some(value) => script.env(key, value),
            None => script.env_remove(key),
        };
    }
    let status = script.output().expect("run script (util-linux)");
    let terminal = String::from_utf8_lossy(&std::fs::read(&transcript).unwrap()).into_owned();
    assert!(status.status.success(), "{terminal}");

    let stdout = std::fs::read_to_string(&out_file).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "stdout: {stdout:?}");
    assert!(
        lines[0].starts_with(&format!("{}/team/bars@sha256:", registry.addr())),
        "stdout: {stdout:?}"
    );
    // Bars on the terminal: one while compressing, one while uploading.
    assert!(terminal.contains("Compressing"), "{terminal}");
    assert!(terminal.contains("Uploading"), "{terminal}");
    assert!(terminal.contains("Pushed"), "{terminal}");
    // Nothing of the bars leaks into stdout.
    assert!(!stdout.contains('\u{1b}'), "stdout: {stdout:?}");
}
