//! OCI platforms (`linux/arm64`) and the Rust targets that build for them, and what a cross
//! build needs: the Rust target installed, and a linker (the distribution's cross gcc, a
//! `CARGO_TARGET_<TRIPLE>_LINKER` setting, or zig through `cargo zigbuild`).
//!
//! A binary for another architecture is linked statically (`+crt-static` for glibc targets,
//! musl through zig), so it needs no runtime closure: the host's libraries are for the host's
//! architecture and cannot go in its image.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use miette::Diagnostic;

/// One row of the platform table (also in the README).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlatformRow {
    /// `linux/arm64/v8` style name, without the variant when there is none.
    pub name: &'static str,
    /// GOARCH names, as image configs and indexes write them.
    pub architecture: &'static str,
    pub variant: Option<&'static str>,
    pub gnu_target: &'static str,
    pub musl_target: &'static str,
    /// The cross gcc's prefix (`aarch64-linux-gnu` → `aarch64-linux-gnu-gcc`).
    pub gcc_prefix: &'static str,
    /// Debian/Ubuntu package with that gcc.
    pub gcc_package: &'static str,
}

pub const PLATFORMS: &[PlatformRow] = &[
    PlatformRow {
        name: "linux/amd64",
        architecture: "amd64",
        variant: None,
        gnu_target: "x86_64-unknown-linux-gnu",
        musl_target: "x86_64-unknown-linux-musl",
        gcc_prefix: "x86_64-linux-gnu",
        gcc_package: "gcc-x86-64-linux-gnu",
    },
    PlatformRow {
        name: "linux/arm64",
        architecture: "arm64",
        variant: Some("v8"),
        gnu_target: "aarch64-unknown-linux-gnu",
        musl_target: "aarch64-unknown-linux-musl",
        gcc_prefix: "aarch64-linux-gnu",
        gcc_package: "gcc-aarch64-linux-gnu",
    },
    PlatformRow {
        name: "linux/arm/v7",
        architecture: "arm",
        variant: Some("v7"),
        gnu_target: "armv7-unknown-linux-gnueabihf",
        musl_target: "armv7-unknown-linux-musleabihf",
        gcc_prefix: "arm-linux-gnueabihf",
        gcc_package: "gcc-arm-linux-gnueabihf",
    },
    PlatformRow {
        name: "linux/riscv64",
        architecture: "riscv64",
        variant: None,
        gnu_target: "riscv64gc-unknown-linux-gnu",
        musl_target: "riscv64gc-unknown-linux-musl",
        gcc_prefix: "riscv64-linux-gnu",
        gcc_package: "gcc-riscv64-linux-gnu",
    },
    PlatformRow {
        name: "linux/ppc64le",
        architecture: "ppc64le",
        variant: None,
        gnu_target: "powerpc64le-unknown-linux-gnu",
        musl_target: "powerpc64le-unknown-linux-musl",
        gcc_prefix: "powerpc64le-linux-gnu",
        gcc_package: "gcc-powerpc64le-linux-gnu",
    },
    PlatformRow {
        name: "linux/s390x",
        architecture: "s390x",
        variant: None,
        gnu_target: "s390x-unknown-linux-gnu",
        musl_target: "s390x-unknown-linux-musl",
        gcc_prefix: "s390x-linux-gnu",
        gcc_package: "gcc-s390x-linux-gnu",
    },
];

/// An OCI platform we can build for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Platform(pub &'static PlatformRow);

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name)
    }
}

impl Platform {
    /// `linux/arm64`, `linux/arm64/v8`, `linux/amd64`, `linux/arm/v7`.
    pub fn parse(text: &str) -> Result<Platform, String> {
        let text = text.trim();
        let found = PLATFORMS.iter().find(|row| {
            row.name == text
                || row
                    .variant
                    .is_some_and(|v| text == format!("linux/{}/{v}", row.architecture))
        });
        found.map(Platform).ok_or_else(|| {
            let known: Vec<&str> = PLATFORMS.iter().map(|r| r.name).collect();
            format!(
                "`{text}` is not a platform we build for; known: {}",
                known.join(", ")
            )
        })
    }

    /// Linux on the host's architecture: the default, also on macOS (images run Linux).
    pub fn host() -> Option<Platform> {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "arm" => "arm",
            "riscv64" => "riscv64",
            "powerpc64" => "ppc64le",
            "s390x" => "s390x",
            _ => return None,
        };
        PLATFORMS
            .iter()
            .find(|r| r.architecture == arch)
            .map(Platform)
    }

    pub fn architecture(&self) -> &'static str {
        self.0.architecture
    }

    pub fn variant(&self) -> Option<&'static str> {
        self.0.variant
    }
}

/// How cargo is to build for a platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrossBuild {
    pub platform: Platform,
    /// `None`: the host's own target (no `--target`, exactly as a plain `cargo build`).
    pub target: Option<String>,
    /// `cargo zigbuild` instead of `cargo build`.
    pub zig: bool,
    /// `CARGO_TARGET_<TRIPLE>_LINKER` to set (the cross gcc found on PATH).
    pub linker_env: Option<(String, String)>,
    /// Link the C runtime statically (`-C target-feature=+crt-static`).
    pub static_crt: bool,
}

#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum PlatformError {
    #[error("the Rust target {triple} (for {platform}) is not installed")]
    #[diagnostic(help("run `rustup target add {triple}`"))]
    TargetMissing { triple: String, platform: String },

    #[error("no linker for {triple} (for {platform}): {gcc_prefix}-gcc is not on PATH")]
    #[diagnostic(help(
        "install the cross linker (Debian/Ubuntu: `apt-get install {package}`), or name one with {env}=<program>, or link with zig: `cargo install cargo-zigbuild` and `pip install ziglang` (then {musl} is used: `rustup target add {musl}`)"
    ))]
    NoLinker {
        triple: &'static str,
        platform: &'static str,
        gcc_prefix: &'static str,
        package: &'static str,
        env: String,
        musl: &'static str,
    },

    #[error("could not ask rustc about targets: {0}")]
    Rustc(String),
}

/// `CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER` for `aarch64-unknown-linux-gnu`.
pub fn linker_env_name(triple: &str) -> String {
    format!(
        "CARGO_TARGET_{}_LINKER",
        triple.to_ascii_uppercase().replace(['-', '.'], "_")
    )
}

/// What the host offers for cross builds; read once.
#[derive(Debug, Clone)]
pub struct Host {
    pub triple: String,
    sysroot: PathBuf,
}

impl Host {
    /// `rustc -vV` and `rustc --print sysroot` in `dir` (so a rust-toolchain file applies).
    pub fn detect(dir: &Path) -> Result<Host, PlatformError> {
        let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
        let run = |args: &[&str]| -> Result<String, PlatformError> {
            let out = Command::new(&rustc)
                .args(args)
                .current_dir(dir)
                .output()
                .map_err(|e| PlatformError::Rustc(format!("{rustc}: {e}")))?;
            if !out.status.success() {
                return Err(PlatformError::Rustc(
                    String::from_utf8_lossy(&out.stderr).trim().to_string(),
                ));
            }
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        };
        let triple = run(&["-vV"])?
            .lines()
            .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
            .ok_or_else(|| PlatformError::Rustc("rustc -vV names no host".into()))?;
        let sysroot = PathBuf::from(run(&["--print", "sysroot"])?);
        Ok(Host { triple, sysroot })
    }

    fn has_target(&self, triple: &str) -> bool {
        self.sysroot
            .join("lib/rustlib")
            .join(triple)
            .join("lib")
            .is_dir()
    }
}

/// Decides how to build for `platform` on this host, or says what is missing.
pub fn prepare(platform: Platform, host: &Host) -> Result<CrossBuild, PlatformError> {
    let row = platform.0;
    if row.gnu_target == host.triple || row.musl_target == host.triple {
        return Ok(CrossBuild {
            platform,
            target: None,
            zig: false,
            linker_env: None,
            static_crt: false,
        });
    }
    let env = linker_env_name(row.gnu_target);
    let gcc = format!("{}-gcc", row.gcc_prefix);
    let configured = std::env::var_os(&env).is_some_and(|v| !v.is_empty());
    let linker_env = if configured {
        None
    } else if on_path(&gcc) {
        Some((env.clone(), gcc.clone()))
    } else if on_path("cargo-zigbuild") {
        // No gcc for the target: zig links, against musl (static, and zig ships it).
        if !host.has_target(row.musl_target) {
            return Err(PlatformError::TargetMissing {
                triple: row.musl_target.into(),
                platform: row.name.into(),
            });
        }
        return Ok(CrossBuild {
            platform,
            target: Some(row.musl_target.into()),
            zig: true,
            linker_env: None,
            static_crt: false,
        });
    } else {
        return Err(PlatformError::NoLinker {
            triple: row.gnu_target,
            platform: row.name,
            gcc_prefix: row.gcc_prefix,
            package: row.gcc_package,
            env,
            musl: row.musl_target,
        });
    };
    if !host.has_target(row.gnu_target) {
        return Err(PlatformError::TargetMissing {
            triple: row.gnu_target.into(),
            platform: row.name.into(),
        });
    }
    Ok(CrossBuild {
        platform,
        target: Some(row.gnu_target.into()),
        zig: false,
        linker_env,
        static_crt: true,
    })
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| {
            let candidate = dir.join(program);
            candidate.is_file()
                && std::fs::metadata(&candidate).is_ok_and(|m| {
                    std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
                })
        })
    })
}

/// `--target`, the linker and static linking for a cross build, on a `cargo build` (or
/// `cargo zigbuild`) command line.
pub fn add_cargo_args(cmd: &mut Command, cross: &CrossBuild) {
    let Some(triple) = &cross.target else { return };
    cmd.args(["--target", triple]);
    if let Some((name, value)) = &cross.linker_env {
        cmd.env(name, value);
    }
    if cross.static_crt {
        // `--config` adds to the user's rustflags for the target instead of replacing them.
        cmd.arg("--config").arg(format!(
            "target.{triple}.rustflags=[\"-C\", \"target-feature=+crt-static\"]"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_parse_with_and_without_variant() {
        assert_eq!(
            Platform::parse("linux/arm64").unwrap().0.gnu_target,
            "aarch64-unknown-linux-gnu"
        );
        assert_eq!(
            Platform::parse("linux/arm64/v8").unwrap().0.name,
            "linux/arm64"
        );
        assert_eq!(
            Platform::parse("linux/amd64").unwrap().architecture(),
            "amd64"
        );
        let err = Platform::parse("windows/amd64").unwrap_err();
        assert!(err.contains("linux/arm64"), "{err}");
    }

    #[test]
    fn linker_variable_names() {
        assert_eq!(
            linker_env_name("aarch64-unknown-linux-gnu"),
            "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER"
        );
    }

    #[test]
    fn a_missing_target_names_rustup() {
        let host = Host {
            triple: "x86_64-unknown-linux-gnu".into(),
            sysroot: PathBuf::from("/nonexistent"),
        };
        let arm = Platform::parse("linux/riscv64").unwrap();
        let err = prepare(arm, &host).unwrap_err();
        let text = format!("{err} {:?}", err.help().map(|h| h.to_string()));
        // Which one depends on what the machine has (a cross gcc, cargo-zigbuild, neither);
        // each names its fix.
        assert!(
            text.contains("rustup target add riscv64gc-unknown-linux-")
                || text.contains("apt-get install gcc-riscv64-linux-gnu"),
            "{text}"
        );
        let native = prepare(Platform::parse("linux/amd64").unwrap(), &host).unwrap();
        assert_eq!(native.target, None);
    }
}
