//! Advisory file locks for what several runs share on disk (an `--oci-layout` directory, the
//! layer cache) and for the temporary files a run that was killed leaves behind.
//!
//! The locks are `flock`s (std's `File::lock`): the kernel drops them when their process ends,
//! however it ends, and they hold between containers that share a volume, where pids say
//! nothing. Three uses:
//! - a directory is locked through [`LOCK_FILE`] inside it, exclusively, by whoever reads and
//!   rewrites what is in it ([`lock_dir`]);
//! - a temporary file is locked by its writer for as long as it is open ([`temp_file`]); a later
//!   run removes those nobody holds, left by a run that was killed ([`sweep`]);
//! - a file in use (a cache blob a run is about to upload) is held with a shared lock; removing
//!   it takes the exclusive one ([`remove_if_unused`]).
//!
//! Files are created `0666` less the umask, as any program's output is, never tempfile's `0600`.

use std::fs::{File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

/// The lock file of a directory: kept, never removed (removing a lock file lets two runs hold
/// "the" lock at once, on two files).
pub const LOCK_FILE: &str = ".adapt-push.lock";

/// How long a busy lock is waited for quietly before saying so.
const PATIENCE: Duration = Duration::from_secs(1);
const POLL: Duration = Duration::from_millis(25);

/// An exclusive lock on a directory, held until dropped.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

/// Locks `dir` (created if missing) through its [`LOCK_FILE`], waiting as long as another run
/// holds it. When the lock is still busy after [`PATIENCE`], `waiting` is told so once, in
/// words (`for the lock on DIR (...)`), before the wait goes on.
pub fn lock_dir(dir: &Path, waiting: &dyn Fn(&str)) -> io::Result<DirLock> {
    std::fs::create_dir_all(dir)
        .map_err(|e| io::Error::new(e.kind(), format!("creating {}: {e}", dir.display())))?;
    let path = dir.join(LOCK_FILE);
    let opened = match OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o666)
        .open(&path)
    {
        // Another user's lock file (a shared cache volume): a lock needs only reading.
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => File::open(&path),
        other => other,
    };
    let file = opened.map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    let started = Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(DirLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) if started.elapsed() < PATIENCE => {
                std::thread::sleep(POLL);
            }
            Err(std::fs::TryLockError::WouldBlock) => break,
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("locking {}: {e}", path.display()),
                ));
            }
        }
    }
    waiting(&format!(
        "for the lock on {} (another adapt-push run is writing it)",
        dir.display()
    ));
    file.lock()
        .map_err(|e| io::Error::new(e.kind(), format!("locking {}: {e}", path.display())))?;
    Ok(DirLock { _file: file })
}

/// A new file `{prefix}{random}{suffix}` in `dir`, `0666` less the umask, locked by this process
/// for as long as it is open (persisted or not), so [`sweep`] leaves it alone.
pub fn temp_file(dir: &Path, prefix: &str, suffix: &str) -> io::Result<tempfile::NamedTempFile> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let file = tempfile::Builder::new()
            .prefix(prefix)
            .suffix(suffix)
            .permissions(Permissions::from_mode(0o666))
            .tempfile_in(dir)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
        // A sweep may have taken the file between its creation and this lock, and removed its
        // name: then the lock is on a file nobody can find, so make another.
        let locked = file.as_file().try_lock().is_ok() && names(file.path(), file.as_file());
        if locked {
            return Ok(file);
        }
        if attempts >= 5 {
            return Err(io::Error::other(format!(
                "{}: could not lock a new temporary file",
                dir.display()
            )));
        }
    }
}

/// Whether `path` still names the open `file` (same device and inode).
fn names(path: &Path, file: &File) -> bool {
    match (std::fs::symlink_metadata(path), file.metadata()) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Removes the regular files in `dir` whose names `is_temp` accepts and that nobody holds a
/// lock on: temporary files of runs that ended before they could finish or remove them.
/// Best effort; returns how many went.
pub fn sweep(dir: &Path, is_temp: impl Fn(&str) -> bool) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name == LOCK_FILE || !is_temp(name) {
            continue;
        }
        if entry.file_type().is_ok_and(|t| t.is_file()) && remove_if_unused(&entry.path()) {
            removed += 1;
        }
    }
    removed
}

/// Removes the file at `path` unless a process holds a lock on it (its writer, or a run using
/// it). True when it was removed.
pub fn remove_if_unused(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    // Removed while locked, and only if the name still is this file: a writer that renamed it
    // meanwhile, or a new file of the same name, is left alone.
    file.try_lock().is_ok() && names(path, &file) && std::fs::remove_file(path).is_ok()
}

/// Holds `file` in use (a shared lock) for as long as it is open: [`remove_if_unused`] in any
/// run leaves it alone. Converts an exclusive lock this handle has.
pub fn hold_shared(file: &File) -> io::Result<()> {
    file.lock_shared()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_temp_file_is_swept_only_once_its_writer_let_go() {
        let dir = tempfile::tempdir().unwrap();
        let live = temp_file(dir.path(), ".x.", ".adapt-push-tmp").unwrap();
        let left = temp_file(dir.path(), ".y.", ".adapt-push-tmp").unwrap();
        let (_, left_path) = left.keep().unwrap();
        // Not ours by name: never touched, locked or not.
        std::fs::write(dir.path().join("user.tmp"), "mine").unwrap();
        let is_temp = |n: &str| n.ends_with(".adapt-push-tmp");
        // The kept file's handle is closed: nobody holds it.
        assert_eq!(sweep(dir.path(), is_temp), 1);
        assert!(live.path().exists() && !left_path.exists());
        assert!(dir.path().join("user.tmp").exists());
        drop(live);
        assert_eq!(sweep(dir.path(), is_temp), 0);
    }

    #[test]
    fn temp_files_get_the_mode_any_new_file_gets_not_0600() {
        let dir = tempfile::tempdir().unwrap();
        let file = temp_file(dir.path(), ".t.", ".tmp").unwrap();
        // std creates files 0666 less the umask, whatever this test run's umask is.
        let plain = dir.path().join("plain");
        File::create(&plain).unwrap();
        let mode = |m: std::fs::Metadata| m.permissions().mode() & 0o777;
        assert_eq!(
            mode(file.as_file().metadata().unwrap()),
            mode(std::fs::metadata(&plain).unwrap())
        );
    }

    #[test]
    fn a_file_in_use_is_not_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        std::fs::write(&path, "x").unwrap();
        let user = File::open(&path).unwrap();
        hold_shared(&user).unwrap();
        assert!(!remove_if_unused(&path));
        drop(user);
        assert!(remove_if_unused(&path));
        assert!(!path.exists());
    }

    #[test]
    fn a_second_locker_waits_for_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock_dir(dir.path(), &|_| {}).unwrap();
        let (sender, receiver) = std::sync::mpsc::channel();
        let (told, waiting) = std::sync::mpsc::channel();
        let path = dir.path().to_path_buf();
        let second = std::thread::spawn(move || {
            let lock = lock_dir(&path, &|text| told.send(text.to_string()).unwrap()).unwrap();
            sender.send(()).unwrap();
            drop(lock);
        });
        assert!(
            receiver.recv_timeout(Duration::from_millis(300)).is_err(),
            "the second lock was taken while the first was held"
        );
        // Past the patience, the waiter says so once, naming the directory.
        let text = waiting.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(
            text,
            format!(
                "for the lock on {} (another adapt-push run is writing it)",
                dir.path().display()
            )
        );
        drop(first);
        receiver.recv_timeout(Duration::from_secs(10)).unwrap();
        second.join().unwrap();
        assert!(waiting.try_recv().is_err(), "told of the wait twice");
    }
}
