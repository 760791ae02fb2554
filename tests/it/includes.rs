//! `include` takes files the way Docker's `COPY` takes them from its context, against the real
//! registry (Debian's docker-registry): sources outside the package (or, for a workspace member,
//! the workspace) are refused before anything is built, links inside an included directory are
//! copied as links, FIFOs and sockets are errors naming them, and a file other users of the host
//! cannot read is warned about (it becomes world-readable in the image).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::*;

/// The crate `inc` in `dir`, pushing to `registry` as `team/inc:v1` with `include` = `entries`
/// (TOML array items).
fn crate_including(dir: &Path, registry: &str, entries: &str) -> PathBuf {
    write_crate(
        dir,
        "inc",
        &format!(
            "\n[package.metadata.cluster]\nregistry = \"{registry}\"\nimage = \"team/inc\"\n\
             tags = [\"v1\"]\ninclude = [{entries}]\n"
        ),
        HELLO,
    )
}

/// Every entry of every layer of `repo@digest`: path, type, and link target for links.
fn layer_entries(
    registry: &TestRegistry,
    repo: &str,
    digest: &str,
) -> Vec<(String, tar::EntryType, Option<String>)> {
    let (status, _, body) = registry.manifest(repo, digest);
    assert_eq!(status, 200, "manifest {repo}@{digest}");
    let manifest: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let mut entries = Vec::new();
    for layer in manifest["layers"].as_array().unwrap() {
        let blob = registry.blob(repo, layer["digest"].as_str().unwrap());
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&blob[..]));
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let kind = entry.header().entry_type();
            let link = entry
                .link_name()
                .unwrap()
                .map(|l| l.to_string_lossy().into_owned());
            entries.push((path, kind, link));
        }
    }
    entries
}

#[test]
fn sources_outside_the_package_are_refused_before_anything_is_built() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let (pkg, outside) = (root.join("pkg"), root.join("outside"));
    fs::create_dir_all(outside.join("keys")).unwrap();
    fs::write(outside.join("secret.txt"), "host secret\n").unwrap();
    fs::write(outside.join("keys/id"), "private key\n").unwrap();
    fs::create_dir_all(&pkg).unwrap();
    std::os::unix::fs::symlink(outside.join("secret.txt"), pkg.join("linked.txt")).unwrap();
    std::os::unix::fs::symlink(&outside, pkg.join("via")).unwrap();
    let absolute = outside.join("secret.txt").display().to_string();
    let cases = [
        // What the issue did with /etc/shadow, with a file of our own.
        (absolute.as_str(), outside.join("secret.txt")),
        ("../outside/secret.txt", outside.join("secret.txt")),
        // A symlink named in `include` is followed; its target is outside.
        ("linked.txt", outside.join("secret.txt")),
        // A link among the parents, and a directory.
        ("via/secret.txt", outside.join("secret.txt")),
        ("via/keys", outside.join("keys")),
    ];
    for (from, resolved) in &cases {
        let manifest = crate_including(
            &pkg,
            &registry.addr(),
            &format!("{{ from = \"{from}\", to = \"/s/\" }}"),
        );
        // Quiet, as in the issue: the error is said all the same. (The crate's own target
        // directory, to see below that nothing was compiled.)
        let run = adapt_push(&manifest).arg("-q").run();
        run.assert_failed();
        let said = &run.stderr;
        assert!(
            said.contains(&format!(
                "`include` entry `{from}` resolves to {}",
                resolved.display()
            )),
            "{said}"
        );
        assert!(
            said.contains(&manifest.display().to_string()) && said.contains("outside"),
            "{said}"
        );
        assert!(run.stdout.is_empty(), "{}", run.stdout);
    }
    // Refused while planning: nothing compiled (the crate's own target dir), nothing pushed.
    assert!(!pkg.join("target/debug").exists(), "the crate was built");
    assert!(registry.tags("team/inc").is_empty());
}

#[test]
fn a_workspace_member_includes_from_the_workspace_but_not_beyond() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let ws = root.join("ws");
    fs::create_dir_all(ws.join("shared")).unwrap();
    fs::write(ws.join("shared/app.toml"), "level = \"shared\"\n").unwrap();
    fs::write(root.join("beside.toml"), "not in the workspace\n").unwrap();
    fs::write(
        ws.join("Cargo.toml"),
        "[workspace]\nmembers = [\"app\"]\nresolver = \"2\"\n",
    )
    .unwrap();
    let member = |from: &str| {
        let app = ws.join("app");
        fs::create_dir_all(app.join("src")).unwrap();
        fs::write(app.join("src/main.rs"), HELLO).unwrap();
        let manifest = app.join("Cargo.toml");
        fs::write(
            &manifest,
            format!(
                "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
                 [package.metadata.cluster]\nregistry = \"{}\"\nimage = \"team/ws-app\"\n\
                 tags = [\"v1\"]\ninclude = [{{ from = \"{from}\", to = \"/etc/app/\" }}]\n",
                registry.addr()
            ),
        )
        .unwrap();
        manifest
    };

    let run = adapt_push(member("../../beside.toml"))
        .shared_target_dir()
        .run();
    run.assert_failed();
    assert!(
        run.stderr.contains(&format!(
            "`include` entry `../../beside.toml` resolves to {}",
            root.join("beside.toml").display()
        )) && run
            .stderr
            .contains(&format!("the workspace root {}", ws.display())),
        "{}",
        run.stderr
    );

    let run = adapt_push(member("../shared/app.toml"))
        .shared_target_dir()
        .run();
    run.assert_ok();
    let reference = run.pull_ref();
    let digest = reference.split_once('@').unwrap().1;
    let files = image_files(&registry, "team/ws-app", digest);
    assert!(files.contains(&"etc/app/app.toml".to_string()), "{files:?}");
}

#[test]
fn fifos_and_sockets_in_an_included_directory_are_errors_naming_them() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let assets = root.join("assets");
    fs::create_dir_all(assets.join("run")).unwrap();
    fs::write(assets.join("a.txt"), "a\n").unwrap();

    // A FIFO no one writes to: reading it waited forever.
    let fifo = assets.join("run/pipe");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let manifest = crate_including(&root, &registry.addr(), "\"assets\"");
    let out = adapt_push(&manifest)
        .shared_target_dir()
        .run_within(Duration::from_secs(120));
    assert!(!out.status.success());
    let said = &out.stderr;
    assert!(
        said.contains("`include` entry `assets`")
            && said.contains(&format!("{} is a FIFO", fifo.display())),
        "{said}"
    );
    fs::remove_file(&fifo).unwrap();

    // A socket (a server's, left in the tree): it was a bare "os error 6".
    let socket = assets.join("run/app.sock");
    let _listening = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let out = adapt_push(&manifest)
        .shared_target_dir()
        .run_within(Duration::from_secs(120));
    assert!(!out.status.success());
    let said = &out.stderr;
    assert!(
        said.contains("`include` entry `assets`")
            && said.contains(&format!("{} is a socket", socket.display())),
        "{said}"
    );
    assert!(registry.tags("team/inc").is_empty());
}

#[test]
fn symlinks_inside_an_included_directory_are_copied_as_links() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let (pkg, outside) = (root.join("pkg"), root.join("outside"));
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("secret.txt"), "host secret: do not copy\n").unwrap();
    let assets = pkg.join("assets");
    fs::create_dir_all(&assets).unwrap();
    fs::write(assets.join("a.txt"), "a\n").unwrap();
    let links = [
        ("secret", outside.join("secret.txt").display().to_string()),
        ("manifest", "../Cargo.toml".to_string()),
        ("zero", "/dev/zero".to_string()),
        ("etc", "/etc".to_string()),
    ];
    for (name, target) in &links {
        std::os::unix::fs::symlink(target, assets.join(name)).unwrap();
    }
    let manifest = crate_including(
        &pkg,
        &registry.addr(),
        "{ from = \"assets\", to = \"/srv/assets\" }",
    );
    let run = adapt_push(&manifest).shared_target_dir().run();
    run.assert_ok();
    let reference = run.pull_ref();
    let digest = reference.split_once('@').unwrap().1;
    let entries = layer_entries(&registry, "team/inc", digest);
    for (name, target) in &links {
        let path = format!("srv/assets/{name}");
        let found: Vec<_> = entries.iter().filter(|e| e.0 == path).collect();
        assert_eq!(
            found,
            [&(path.clone(), tar::EntryType::Symlink, Some(target.clone()))],
            "{entries:?}"
        );
    }
    assert!(
        entries
            .iter()
            .any(|e| e.0 == "srv/assets/a.txt" && e.1 == tar::EntryType::Regular)
    );
    // Nothing under the linked directory was walked into.
    assert!(!entries.iter().any(|e| e.0.starts_with("srv/assets/etc/")));
}

#[test]
fn includes_behave_like_copy() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    std::fs::create_dir_all(&real).unwrap();
    std::fs::write(real.join("data.txt"), "data\n").unwrap();
    std::os::unix::fs::symlink(&real, dir.path().join("link")).unwrap();
    std::fs::write(dir.path().join("app.toml"), "x = 1\n").unwrap();
    let manifest = write_crate(
        dir.path(),
        "inc",
        &split_config(
            &registry.addr(),
            &registry.addr(),
            "include = [{ from = \"link\", to = \"/srv/data\" }, { from = \"app.toml\", to = \"/etc/inc/\" }]\n",
        ),
        HELLO_ONCE,
    );
    let out = adapt_push(&manifest).run();
    out.assert_ok();
    let (_, repo, digest) = split_ref(out.stdout.trim());
    let files = image_files(&registry, &repo, &digest);
    assert!(
        files.contains(&"srv/data/data.txt".to_string()),
        "a linked directory is followed: {files:?}"
    );
    assert!(
        files.contains(&"etc/inc/app.toml".to_string()),
        "`to` ending in / is a directory: {files:?}"
    );
}

/// A file inside the package that other users of the host cannot read goes in, with a warning:
/// in the image it is world-readable.
#[test]
fn included_files_other_users_cannot_read_are_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("host-secret.txt");
    fs::write(&secret, "not for the image").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    let manifest = crate_for(
        dir.path(),
        &registry.addr(),
        "team/includes",
        "include = [{ from = \"host-secret.txt\", to = \"/etc/app/secret.txt\" }]",
        "includes",
    );
    let run = adapt_push(&manifest).shared_target_dir().run();
    run.assert_ok();
    let shown = secret.canonicalize().unwrap().display().to_string();
    assert!(
        run.stderr.contains(&format!(
            "`include` entry `host-secret.txt`: {shown} is not readable by every user on this host, but becomes world-readable in the image"
        )),
        "{}",
        run.stderr
    );
}
