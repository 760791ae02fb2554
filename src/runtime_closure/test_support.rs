//! Fixtures the tests of the closure's files share: real host binaries, small files, and
//! executables and libraries compiled with `cc` (a test is skipped when there is no compiler).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::RuntimeClosure;

pub(super) fn system_ls() -> PathBuf {
    ["/usr/bin/ls", "/bin/ls"]
        .into_iter()
        .map(PathBuf::from)
        .find(|path| path.is_file())
        .expect("ls is installed")
}

pub(super) fn write_file(dir: &Path, name: &str, contents: &[u8]) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, contents).expect("write test file");
    path
}

pub(super) fn image_paths(closure: &RuntimeClosure) -> Vec<String> {
    closure
        .files
        .iter()
        .map(|file| file.image_path.display().to_string())
        .collect()
}

pub(super) fn assert_sorted_unique_regular_files(closure: &RuntimeClosure) {
    for pair in closure.files.windows(2) {
        assert!(
            pair[0].image_path < pair[1].image_path,
            "not sorted or duplicated: {pair:?}"
        );
    }
    for file in &closure.files {
        assert!(file.image_path.is_absolute(), "{file:?}");
        let metadata = fs::symlink_metadata(&file.host_path).expect("host file exists");
        assert!(metadata.is_file(), "not a regular file: {file:?}");
    }
}

/// Runs the C compiler; `None` (the test is skipped) if there is none or it fails.
pub(super) fn cc(args: &[String]) -> Option<()> {
    match Command::new("cc").args(args).output() {
        Ok(output) if output.status.success() => Some(()),
        Ok(output) => {
            eprintln!(
                "skipped: cc {args:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            None
        }
        Err(error) => {
            eprintln!("skipped: cannot run cc: {error}");
            None
        }
    }
}

/// Builds `root/bin/main` → `root/lib/libfoo.so` → `root/lib/libbar.so`,
/// where main finds libfoo through `-rpath $ORIGIN/../lib`.
pub(super) fn build_main_foo_bar(
    root: &Path,
    main_dtags: &str,
    foo_flags: &[&str],
) -> Option<PathBuf> {
    let (bin, lib) = (root.join("bin"), root.join("lib"));
    fs::create_dir_all(&bin).ok()?;
    fs::create_dir_all(&lib).ok()?;
    write_file(&lib, "bar.c", b"int bar(void) { return 0; }\n");
    write_file(
        &lib,
        "foo.c",
        b"int bar(void);\nint foo(void) { return bar(); }\n",
    );
    write_file(
        &bin,
        "main.c",
        b"int foo(void);\nint main(void) { return foo(); }\n",
    );
    let (bin, lib) = (bin.display(), lib.display());

    cc(&[
        "-shared".into(),
        "-fPIC".into(),
        format!("-o{lib}/libbar.so"),
        format!("{lib}/bar.c"),
    ])?;
    let mut foo_args = vec![
        "-shared".into(),
        "-fPIC".into(),
        format!("-o{lib}/libfoo.so"),
        format!("{lib}/foo.c"),
        format!("-L{lib}"),
        "-lbar".into(),
    ];
    foo_args.extend(foo_flags.iter().map(|flag| flag.to_string()));
    cc(&foo_args)?;
    cc(&[
        format!("-o{bin}/main"),
        format!("{bin}/main.c"),
        format!("-L{lib}"),
        "-lfoo".into(),
        format!("-Wl,-rpath-link,{lib}"),
        format!("-Wl,{main_dtags},-rpath,$ORIGIN/../lib"),
    ])?;
    Some(root.join("bin/main"))
}

pub(super) fn canonical_tempdir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = fs::canonicalize(dir.path()).expect("canonical tempdir");
    (dir, root)
}
