//! The Docker engine builder against a real engine (the one `scripts/test` starts; tests that
//! need it skip without it, and fail under CI), one module per way of using it; the helpers they
//! share are here: busybox-based base images made in the engine (no image comes from outside
//! the machine), and reading the one reference a push printed.

mod dockerfile;
mod generated;
mod images_that_run;
mod remote_engine;

use std::fs;

use crate::common::*;

/// The one line of stdout, which must be `{prefix}@sha256:<64 hex>`.
fn single_reference(run: &Run, prefix: &str) -> String {
    let out = &run.stdout;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "stdout must be exactly one line:\n{out}\n--- stderr ---\n{}",
        run.stderr
    );
    let reference = lines[0].to_string();
    let digest = reference
        .strip_prefix(&format!("{prefix}@sha256:"))
        .unwrap_or_else(|| panic!("`{reference}` does not start with {prefix}@sha256:"));
    assert!(
        digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()),
        "{reference}"
    );
    reference
}

fn split_registry(external: &str, internal: &str) -> String {
    format!("registry = {{ external = \"{external}\", internal = \"{internal}\" }}")
}

/// A base image made from Debian's busybox-static, imported into the engine and pushed to the
/// test's registry as `{registry}/base:1`: no image comes from outside the machine.
fn push_busybox_base(host: &str, registry: &TestRegistry) -> String {
    let mut rootfs = BusyboxRootfs::new();
    rootfs
        .dir("bin/", 0o755)
        .dir("tmp/", 0o1777)
        .busybox("bin/");
    for applet in [
        "sh", "echo", "cat", "ls", "find", "env", "test", "true", "false",
    ] {
        rootfs.link(&format!("bin/{applet}"), "busybox");
    }
    rootfs.import_and_push(host, &format!("{}/base:1", registry.addr()), "/bin")
}

/// A root filesystem tar made from Debian's busybox-static, for `docker import`.
struct BusyboxRootfs {
    dir: tempfile::TempDir,
    tar: tar::Builder<fs::File>,
}

impl BusyboxRootfs {
    fn new() -> BusyboxRootfs {
        let dir = tempfile::tempdir().unwrap();
        let tar = tar::Builder::new(fs::File::create(dir.path().join("rootfs.tar")).unwrap());
        BusyboxRootfs { dir, tar }
    }

    fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(mode);
        h.set_size(0);
        self.tar
            .append_data(&mut h, path, std::io::empty())
            .unwrap();
        self
    }

    /// The busybox binary as `{dir}busybox`.
    fn busybox(&mut self, dir: &str) -> &mut Self {
        let busybox = find_program("busybox", &["/bin/busybox", "/usr/bin/busybox"]);
        let bytes = fs::read(busybox).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o755);
        h.set_size(bytes.len() as u64);
        self.tar
            .append_data(&mut h, format!("{dir}busybox"), &bytes[..])
            .unwrap();
        self
    }

    fn link(&mut self, path: &str, target: &str) -> &mut Self {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        self.tar.append_link(&mut h, path, target).unwrap();
        self
    }

    /// Imports the tar into the engine at `host` as `name`, with `PATH={path}`, and pushes it.
    fn import_and_push(mut self, host: &str, name: &str, path: &str) -> String {
        self.tar.finish().unwrap();
        let rootfs = self.dir.path().join("rootfs.tar");
        docker_ok(
            host,
            &[
                "import",
                "--change",
                &format!("ENV PATH={path}"),
                rootfs.to_str().unwrap(),
                name,
            ],
        );
        docker_ok(host, &["push", name]);
        name.to_string()
    }
}

/// Pulls `reference` through its own address after dropping the engine's local copies of the
/// pushed tags, so what runs really came through that address.
fn pull_fresh(host: &str, reference: &str, local_tags: &[String]) {
    for tag in local_tags {
        let _ = docker(host, &["rmi", tag]);
    }
    docker_ok(host, &["pull", reference]);
}
