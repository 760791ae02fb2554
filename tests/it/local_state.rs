//! What runs keep on disk between them, with the real binary (and the real registry where a
//! push is involved): `--oci-layout` written by several runs at once, a damaged layer cache
//! file, temporary files of killed runs, and the modes and symlinks of the files users keep.

use std::collections::BTreeSet;
use std::io::{BufRead, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::common::*;
use sha2::Digest as _;

/// Only a name here: nothing in these tests contacts it unless a test starts a registry.
const NAMED: &str = "registry.example:5000";

fn greeter(dir: &Path, registry: &str) -> PathBuf {
    write_crate(
        &dir.join("greeter"),
        "greeter",
        &format!(
            "\n[package.metadata.cluster]\nregistry = \"{registry}\"\nimage = \"team/greeter\"\ntags = [\"v1\"]\n"
        ),
        HELLO_ONCE,
    )
}

fn layer_cache(manifest: &Path) -> PathBuf {
    manifest.parent().unwrap().join("target/adapt-push/layers")
}

fn sha256_hex(reader: impl Read) -> String {
    let mut reader = std::io::BufReader::new(reader);
    let mut hasher = sha2::Sha256::new();
    loop {
        let piece = reader.fill_buf().unwrap();
        if piece.is_empty() {
            break;
        }
        hasher.update(piece);
        let n = piece.len();
        reader.consume(n);
    }
    hex::encode(hasher.finalize())
}

/// Every blob of the layout has the sha256 its name says; returns how many there are.
fn assert_layout_blobs_verify(layout: &Path) -> usize {
    let mut count = 0;
    for entry in std::fs::read_dir(layout.join("blobs/sha256")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        assert_eq!(
            sha256_hex(std::fs::File::open(&path).unwrap()),
            name,
            "{} does not hold the blob it is named for",
            path.display()
        );
        count += 1;
    }
    count
}

/// Every blob in the tarball has the sha256 its name says; returns how many there are.
fn assert_tarball_blobs_verify(tarball: &Path) -> usize {
    let mut archive = tar::Archive::new(std::fs::File::open(tarball).unwrap());
    let mut count = 0;
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let Some(name) = path.strip_prefix("blobs/sha256/").filter(|n| !n.is_empty()) else {
            continue;
        };
        let name = name.to_string();
        assert_eq!(sha256_hex(entry), name, "{path} in the tarball");
        count += 1;
    }
    count
}

fn index_names(layout: &Path) -> BTreeSet<String> {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// Names in `dir` that start with a dot: temporary files (and our lock file).
fn dot_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') && n != ".adapt-push.lock")
        .collect();
    names.sort();
    names
}

/// Four runs write one new layout at once, round after round: each run's image is in
/// `index.json` afterwards (an unlocked read-merge-write lost most of them), every run succeeds
/// (a run that found another's half-made layout called it "not an OCI image layout"), and
/// every blob is whole.
#[test]
fn four_runs_writing_one_layout_at_once_lose_no_image() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = greeter(dir.path(), NAMED);
    // Built once: the rounds race on the layout, not on cargo.
    adapt_push(&manifest).arg("--no-push").run().assert_ok();
    for round in 0..6 {
        let layout = dir.path().join(format!("layout-{round}"));
        let layout_arg = layout.to_str().unwrap().to_string();
        let children: Vec<_> = (0..4)
            .map(|i| {
                adapt_push(&manifest)
                    .args(["--oci-layout", &layout_arg])
                    .args(["--tag", &format!("r{round}-{i}")])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("run cargo-adapt-push")
            })
            .collect();
        for child in children {
            Run::from(child.wait_with_output().unwrap()).assert_ok();
        }
        let expected: BTreeSet<String> = (0..4)
            .map(|i| format!("{NAMED}/team/greeter:r{round}-{i}"))
            .collect();
        assert_eq!(index_names(&layout), expected, "round {round}");
        assert!(assert_layout_blobs_verify(&layout) >= 3);
        assert_eq!(dot_files(&layout), Vec::<String>::new());
    }
}

/// A run finding the layout locked by another waits, says so once a second has passed, and
/// goes on when the lock is free.
#[test]
fn a_run_waits_for_the_lock_on_a_layout_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = greeter(dir.path(), NAMED);
    adapt_push(&manifest).arg("--no-push").run().assert_ok();
    let layout = dir.path().join("layout");
    std::fs::create_dir(&layout).unwrap();
    // Held as another run holds it: an exclusive flock on the lock file inside the layout.
    let lock = std::fs::File::create(layout.join(".adapt-push.lock")).unwrap();
    lock.lock().unwrap();

    let mut child = adapt_push(&manifest)
        .args(["--oci-layout", layout.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run cargo-adapt-push");
    let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let (pipe, stderr) = (child.stderr.take().unwrap(), stderr.clone());
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(pipe).lines() {
                let line = line.unwrap();
                let mut all = stderr.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
            }
        })
    };
    let started = std::time::Instant::now();
    while !stderr.lock().unwrap().contains("Waiting") {
        if let Some(status) = child.try_wait().unwrap() {
            reader.join().unwrap();
            panic!(
                "the run ended ({status}) without waiting for the lock:\n{}",
                stderr.lock().unwrap()
            );
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "no word of waiting after 2 minutes:\n{}",
            stderr.lock().unwrap()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run went on while the lock was held"
    );
    assert!(!layout.join("index.json").exists());
    drop(lock);
    let status = child.wait().unwrap();
    reader.join().unwrap();
    let stderr = stderr.lock().unwrap().clone();
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "for the lock on {} (another adapt-push run is writing it)",
            layout.display()
        )),
        "{stderr}"
    );
    assert_eq!(stderr.matches("Waiting").count(), 1, "{stderr}");
    assert_eq!(
        index_names(&layout),
        BTreeSet::from([format!("{NAMED}/team/greeter:v1")])
    );
}

/// Flips a byte in the middle of the cached runtime layer (same size, so a lookup by size
/// trusts it) and returns the layer's digest (hex).
fn damage_cached_runtime_layer(manifest: &Path) -> String {
    let cache = layer_cache(manifest);
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cache.join("greeter-greeter-runtime.json")).unwrap())
            .unwrap();
    // The runtime layer's inputs (the host's libraries, generated files) are old: the run
    // recorded their stat, so the next run takes the cached file without reading its inputs.
    assert!(
        record["fingerprint"].is_string(),
        "the runtime layer was not recorded as unchanged-by-stat: {record}"
    );
    let hex = record["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let blob = cache.join("blobs/sha256").join(&hex);
    let mut bytes = std::fs::read(&blob).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&blob, &bytes).unwrap();
    hex
}

/// A registry push of an image whose cached layer was damaged on disk: the registry answers
/// DIGEST_INVALID, the file is found not to hold the layer, the layer is written again and sent,
/// and the run says so once. Before, every push failed the same way, forever.
#[test]
fn a_damaged_layer_in_the_cache_is_written_again_for_a_registry_push() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let manifest = greeter(dir.path(), &registry.addr());
    adapt_push(&manifest).arg("--no-push").run().assert_ok();
    let hex = damage_cached_runtime_layer(&manifest);

    let out = adapt_push(&manifest).run();
    out.assert_ok();
    let err = &out.stderr;
    assert_eq!(err.matches("was damaged").count(), 1, "{err}");
    assert!(err.contains("wrote the layer again"), "{err}");
    let sent = registry.blob("team/greeter", &format!("sha256:{hex}"));
    assert_eq!(sha256_hex(&sent[..]), hex, "the registry holds the layer");
    let cached = layer_cache(&manifest).join("blobs/sha256").join(&hex);
    assert_eq!(sha256_hex(std::fs::File::open(cached).unwrap()), hex);

    // Healed: the next push has nothing to say about it.
    let out = adapt_push(&manifest).args(["--tag", "v2"]).run();
    out.assert_ok();
    assert!(!out.stderr.contains("damaged"), "{}", out.stderr);
}

/// `--tarball` and `--oci-layout` with a damaged cached layer: the copy is hashed as it is
/// written, the layer written again, and both destinations hold blobs that match their names
/// (before, both exited 0 with the damaged bytes under the layer's name).
#[test]
fn a_damaged_layer_in_the_cache_is_written_again_for_a_tarball_and_a_layout() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = greeter(dir.path(), NAMED);
    adapt_push(&manifest).arg("--no-push").run().assert_ok();
    let hex = damage_cached_runtime_layer(&manifest);

    let tarball = dir.path().join("greeter.tar");
    let layout = dir.path().join("layout");
    let out = adapt_push(&manifest)
        .args([
            "--tarball",
            tarball.to_str().unwrap(),
            "--oci-layout",
            layout.to_str().unwrap(),
        ])
        .run();
    out.assert_ok();
    assert!(assert_tarball_blobs_verify(&tarball) >= 3);
    assert!(assert_layout_blobs_verify(&layout) >= 3);
    assert!(layout.join("blobs/sha256").join(&hex).exists());
    let err = &out.stderr;
    assert_eq!(err.matches("was damaged").count(), 1, "{err}");
}

/// After a run the layer cache holds what the README says: each layer's latest version, and
/// nothing else (a changed layer's old blob went at once, not an hour later).
#[test]
fn the_layer_cache_keeps_only_each_layers_latest_version() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = crate_with_data_file(&dir.path().join("data"), "data", NAMED, "data.txt");
    let cache = layer_cache(&manifest);
    for version in 0..3 {
        std::fs::write(
            manifest.parent().unwrap().join("data.txt"),
            format!("version {version}\n").repeat(1000),
        )
        .unwrap();
        adapt_push(&manifest).arg("--no-push").run().assert_ok();
        let recorded: BTreeSet<String> = std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .map(|p| {
                let record: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
                record["digest"].as_str().unwrap()["sha256:".len()..].to_string()
            })
            .collect();
        let stored: BTreeSet<String> = std::fs::read_dir(cache.join("blobs/sha256"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(stored, recorded, "after version {version}");
        // runtime, includes, binary
        assert_eq!(stored.len(), 3, "after version {version}");
    }
}

/// A file in `dir` named `name`, locked as a live writer holds it (while the handle lives).
fn held_temp_file(dir: &Path, name: &str) -> std::fs::File {
    let file = std::fs::File::create(dir.join(name)).unwrap();
    file.lock().unwrap();
    file
}

/// Temporary files a killed run left (nobody holds their lock) are removed by the next run:
/// beside the tarball, in the layout and its blobs, in the layer cache. Those a live run is
/// writing (locked), and files of the user's, are not touched.
#[test]
fn temporary_files_of_killed_runs_are_removed_and_those_being_written_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = greeter(dir.path(), NAMED);
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let tarball = out_dir.join("greeter.tar");
    let layout = dir.path().join("layout");
    let args = [
        "--tarball",
        tarball.to_str().unwrap(),
        "--oci-layout",
        layout.to_str().unwrap(),
    ];
    adapt_push(&manifest).args(args).run().assert_ok();
    let layout_blobs = layout.join("blobs/sha256");
    let cache_blobs = layer_cache(&manifest).join("blobs/sha256");

    let left = [
        out_dir.join(".greeter.tar.aB3dE6.adapt-push-tmp"),
        layout.join(".index.json.Qw12Er.adapt-push-tmp"),
        layout_blobs.join(format!(".{}.Zx98Cv.adapt-push-tmp", "0".repeat(64))),
        cache_blobs.join(".layer-Kj7Hg5"),
    ];
    for path in &left {
        std::fs::write(path, vec![7u8; 64 << 10]).unwrap();
    }
    let _live = [
        held_temp_file(&out_dir, ".greeter.tar.LiVe01.adapt-push-tmp"),
        held_temp_file(&layout, ".index.json.LiVe02.adapt-push-tmp"),
        held_temp_file(&layout_blobs, ".abc.LiVe03.adapt-push-tmp"),
        held_temp_file(&cache_blobs, ".layer-LiVe04"),
    ];
    let users = out_dir.join(".notes.tmp");
    std::fs::write(&users, "the user's").unwrap();

    adapt_push(&manifest).args(args).run().assert_ok();
    for path in &left {
        assert!(!path.exists(), "{} was left", path.display());
    }
    assert_eq!(
        dot_files(&out_dir),
        [".greeter.tar.LiVe01.adapt-push-tmp", ".notes.tmp"]
    );
    assert_eq!(dot_files(&layout), [".index.json.LiVe02.adapt-push-tmp"]);
    assert_eq!(dot_files(&layout_blobs), [".abc.LiVe03.adapt-push-tmp"]);
    assert_eq!(dot_files(&cache_blobs), [".layer-LiVe04"]);
}

/// A run killed (SIGKILL) while it writes a large tarball leaves its temporary file beside it;
/// the next run writing there removes it.
#[test]
fn a_run_killed_while_writing_a_tarball_leaves_nothing_the_next_run_keeps() {
    let dir = tempfile::tempdir().unwrap();
    let crate_dir = dir.path().join("big");
    let manifest = write_crate(
        &crate_dir,
        "big",
        &format!(
            "\n[package.metadata.cluster]\nregistry = \"{NAMED}\"\nimage = \"team/big\"\ntags = [\"v1\"]\ninclude = [{{ from = \"payload.bin\", to = \"/data/\" }}]\n"
        ),
        HELLO_ONCE,
    );
    std::fs::write(
        crate_dir.join("payload.bin"),
        incompressible_bytes(128 << 20, 7),
    )
    .unwrap();
    // The layers go to the cache first, so the next run spends its time on the tarball.
    adapt_push(&manifest).arg("--no-push").run().assert_ok();

    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let tarball = out_dir.join("big.tar");
    let mut child = adapt_push(&manifest)
        .args(["--tarball", tarball.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run cargo-adapt-push");
    let started = std::time::Instant::now();
    loop {
        if !dot_files(&out_dir).is_empty() {
            child.kill().unwrap();
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before its temporary file was seen"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(300));
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.wait().unwrap();
    assert!(!tarball.exists(), "killed before the tarball was in place");
    let left = dot_files(&out_dir);
    assert_eq!(left.len(), 1, "the killed run's temporary file: {left:?}");

    adapt_push(&manifest)
        .args(["--tarball", tarball.to_str().unwrap()])
        .run()
        .assert_ok();
    assert_eq!(dot_files(&out_dir), Vec::<String>::new());
    assert!(std::fs::metadata(&tarball).unwrap().len() > 128 << 20);
}

/// `cmd` run by `sh` under `umask`, with the same environment.
fn with_umask(cmd: &Command, umask: &str) -> Command {
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => sh.env(key, value),
            None => sh.env_remove(key),
        };
    }
    sh.stdin(Stdio::null());
    sh
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// Outputs are files users keep: created 0666 less the umask (0644 with 022; they were 0600,
/// so `skopeo inspect` as another user failed), an existing file keeps its mode, and a symlink
/// at the output path stays one while the file it names is replaced.
#[test]
fn outputs_follow_the_umask_keep_their_mode_and_write_through_symlinks() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = greeter(dir.path(), NAMED);
    let tarball = dir.path().join("greeter.tar");
    let layout = dir.path().join("layout");
    let write = |args: &[&str], umask: &str| {
        let mut cmd = adapt_push(&manifest);
        cmd.args(args);
        with_umask(&cmd, umask).run().assert_ok();
    };
    write(
        &[
            "--tarball",
            tarball.to_str().unwrap(),
            "--oci-layout",
            layout.to_str().unwrap(),
        ],
        "022",
    );
    assert_eq!(mode(&tarball), 0o644);
    assert_eq!(mode(&layout.join("index.json")), 0o644);
    assert_eq!(mode(&layout.join("oci-layout")), 0o644);
    for blob in std::fs::read_dir(layout.join("blobs/sha256")).unwrap() {
        assert_eq!(mode(&blob.unwrap().path()), 0o644);
    }

    // A narrower umask gives narrower new files...
    let other = dir.path().join("other.tar");
    write(&["--tarball", other.to_str().unwrap()], "027");
    assert_eq!(mode(&other), 0o640);
    // ...and an existing file keeps the mode its owner gave it.
    std::fs::set_permissions(&tarball, std::fs::Permissions::from_mode(0o604)).unwrap();
    write(&["--tarball", tarball.to_str().unwrap()], "077");
    assert_eq!(mode(&tarball), 0o604);

    // A symlink at the output path, dangling, then naming the file written through it.
    let real = dir.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let link = dir.path().join("link.tar");
    std::os::unix::fs::symlink("real/greeter.tar", &link).unwrap();
    for _ in 0..2 {
        write(&["--tarball", link.to_str().unwrap()], "022");
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink(),
            "the symlink was replaced by a file"
        );
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            Path::new("real/greeter.tar")
        );
        assert!(assert_tarball_blobs_verify(&real.join("greeter.tar")) >= 3);
        assert_eq!(dot_files(&real), Vec::<String>::new());
        assert_eq!(dot_files(dir.path()), Vec::<String>::new());
    }
    assert_eq!(mode(&real.join("greeter.tar")), 0o644);
}

/// Every cached layer an image uses stays open while the run lasts (its shared lock keeps other
/// runs' pruning off it), so a workspace of many images needs more than the soft limit of 1024
/// open files most systems start with: the tool raises its soft limit to the hard one at start,
/// as Go programs (ko among them) do. Started with a soft limit of 64, it runs with the hard one.
#[test]
fn the_open_file_limit_is_raised_to_the_hard_limit() {
    use std::os::unix::process::CommandExt;
    let mut cmd = tool();
    cmd.args(["adapt-push", "resolve", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 64,
                rlim_max: 4096,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let mut child = cmd.spawn().expect("start cargo-adapt-push");
    // It waits for its YAML on stdin (kept open), with its limits in /proc meanwhile.
    let limits = Path::new("/proc")
        .join(child.id().to_string())
        .join("limits");
    let mut seen = String::new();
    for _ in 0..100 {
        seen = std::fs::read_to_string(&limits).unwrap_or_default();
        let open_files = seen.lines().find(|l| l.starts_with("Max open files"));
        if open_files.is_some_and(|l| l.split_whitespace().nth(3) == Some("4096")) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    let open_files = seen.lines().find(|l| l.starts_with("Max open files"));
    assert_eq!(
        open_files.and_then(|l| l.split_whitespace().nth(3)),
        Some("4096"),
        "soft limit of open files, from {}:\n{seen}",
        limits.display()
    );
}
