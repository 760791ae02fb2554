//! Crates to push: the example project, copies of fixtures, and small generated crates.

use std::fs;
use std::path::{Path, PathBuf};

/// A program that prints "hello".
pub const HELLO: &str = "fn main() {\n    println!(\"hello\");\n}\n";

/// A program that prints "hello from NAME VERSION" when run with `--once`, and nothing
/// otherwise (an image's default command stays quiet).
pub const HELLO_ONCE: &str = r#"fn main() {
    if std::env::args().any(|a| a == "--once") {
        println!("hello from {} {}", env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"));
    }
}
"#;

/// A program that does nothing.
pub const EMPTY_MAIN: &str = "fn main() {}\n";

/// The repository's `example-project/` (the `greeter` crate).
pub fn example_project() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("example-project")
}

/// Recursively copies `src` into `dst` (created if missing), skipping `target/` and `.git/`
/// directories. Symlinks are copied as the files they point to.
pub fn copy_dir(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap_or_else(|e| panic!("create {}: {e}", dst.display()));
    let entries = fs::read_dir(src).unwrap_or_else(|e| panic!("read {}: {e}", src.display()));
    for entry in entries {
        let entry = entry.expect("read dir entry");
        let from = entry.path();
        let to = dst.join(entry.file_name());
        if from.is_dir() {
            if entry.file_name() == "target" || entry.file_name() == ".git" {
                continue;
            }
            copy_dir(&from, &to);
        } else {
            fs::copy(&from, &to)
                .unwrap_or_else(|e| panic!("copy {} -> {}: {e}", from.display(), to.display()));
        }
    }
}

/// Writes a minimal std-only binary crate into `dir` and returns its Cargo.toml path.
///
/// The manifest is `[package]` (name, version 0.1.0, edition 2021), then `cargo_toml_extra`
/// verbatim (more `[package]` keys and/or tables such as `[package.metadata.cluster]`), then an
/// empty `[workspace]` so cargo never searches the parent directories.
pub fn write_crate(dir: &Path, name: &str, cargo_toml_extra: &str, main_rs: &str) -> PathBuf {
    fs::create_dir_all(dir.join("src")).expect("create crate src dir");
    let manifest = dir.join("Cargo.toml");
    fs::write(
        &manifest,
        format!(
            "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\
             {cargo_toml_extra}\n\n[workspace]\n"
        ),
    )
    .expect("write Cargo.toml");
    fs::write(dir.join("src/main.rs"), main_rs).expect("write src/main.rs");
    manifest
}

/// The [`HELLO`] crate `name` in `dir` pushing to `registry` as `team/{name}:v1`, with the
/// crate directory's `file` included in the image at `/data/{file}`.
pub fn crate_with_data_file(dir: &Path, name: &str, registry: &str, file: &str) -> PathBuf {
    write_crate(
        dir,
        name,
        &format!(
            "\n[package.metadata.cluster]\nregistry = \"{registry}\"\nimage = \"team/{name}\"\n\
             tags = [\"v1\"]\ninclude = [{{ from = \"{file}\", to = \"/data/{file}\" }}]\n"
        ),
        HELLO,
    )
}

/// A crate in `dir` pushing to `registry` (any string form) as `image`, plus `extra` lines for
/// the cluster table. `salt` goes into the binary so each crate's layers differ, and into the
/// package name: these crates build in one shared target dir while other tests of the same
/// process do, and cargo copies every binary to `target/<profile>/<name>`, so a common name
/// would let one test's build replace another's binary between its build and its read.
pub fn crate_for(dir: &Path, registry: &str, image: &str, extra: &str, salt: &str) -> PathBuf {
    let name: String = salt
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    write_crate(
        dir,
        &format!("faulty-{name}"),
        &format!(
            "\n[package.metadata.cluster]\nregistry = \"{registry}\"\nimage = \"{image}\"\n{extra}"
        ),
        &format!("fn main() {{\n    println!(\"hello {salt}\");\n}}\n"),
    )
}

/// A reproducible stream of pseudo-random words (xorshift64; no dependency).
pub fn xorshift(seed: u64) -> impl Iterator<Item = u64> {
    std::iter::successors(Some(seed), |&x| {
        let x = x ^ (x << 13);
        let x = x ^ (x >> 7);
        Some(x ^ (x << 17))
    })
    .skip(1)
}

/// `size` bytes of deterministic base64 text: compressible, so deflating it takes real work
/// (unlike random bytes, which are stored).
pub fn compressible_text(size: usize) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    xorshift(0x9E37_79B9_7F4A_7C15)
        .take(size)
        .map(|x| ALPHABET[(x % 64) as usize])
        .collect()
}

/// `size` bytes no compressor can shrink, the same for the same `seed`.
pub fn incompressible_bytes(size: usize, seed: u64) -> Vec<u8> {
    xorshift(seed).take(size).map(|x| x as u8).collect()
}

/// The `[package.metadata.cluster]` table of a split registry (pushed to `external`, pulled
/// through `internal`), then the `extra` keys.
pub fn split_config(external: &str, internal: &str, extra: &str) -> String {
    format!(
        "\n[package.metadata.cluster]\nregistry = {{ external = \"{external}\", internal = \"{internal}\" }}\n{extra}"
    )
}
