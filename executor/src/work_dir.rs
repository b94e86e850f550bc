//! The executor's own directory for shuffle files and operator spills, and
//! the clean-up of those left behind by executors that were killed.
//!
//! Under `--work-dir` every executor process works in `executor-<id>/`,
//! claimed with an exclusive lock on `executor-<id>.lock` beside it, held for
//! as long as the process lives. The directory is removed when the executor
//! stops; one that was killed (SIGKILL, the kernel's OOM killer) cannot do
//! that, and its spilled shuffle outputs, which no one can read any more
//! (a restarted executor is a new executor to the scheduler), would stay on
//! disk for good. So an executor starting on a work dir removes every
//! sibling whose lock it can take: the lock is released by the kernel when
//! its holder dies, however it dies, so a directory whose lock is free
//! belongs to no running executor. Several executors may share one work dir;
//! their claims go one at a time, under a lock on `.claim.lock`.
//!
//! Without `--work-dir` the directory is a fresh temporary one.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use crate::error::{ExecutorError, Result};

/// Prefix of an executor's directory and lock file under a work dir.
const PREFIX: &str = "executor-";

/// Held while an executor claims its directory and removes abandoned ones.
const CLAIM_LOCK: &str = ".claim.lock";

/// This executor's directory, removed when dropped.
#[derive(Debug)]
pub struct WorkDir {
    path: PathBuf,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    /// Removes itself when dropped.
    Temporary { _dir: tempfile::TempDir },
    /// Under a work dir, with the lock that claims it and its path.
    Claimed { _lock: File, lock_path: PathBuf },
}

impl WorkDir {
    /// A fresh temporary directory (no `--work-dir`).
    pub fn temporary() -> Result<Self> {
        let temp = tempfile::Builder::new()
            .prefix("ember-executor-")
            .tempdir()?;
        Ok(Self {
            path: temp.path().to_path_buf(),
            kind: Kind::Temporary { _dir: temp },
        })
    }

    /// Executor `id`'s directory under `parent`, after removing those of
    /// executors no longer running. Fails if a running executor already has
    /// this id on this work dir.
    pub fn claim(parent: &Path, id: &str) -> Result<Self> {
        std::fs::create_dir_all(parent).map_err(|e| {
            ExecutorError::Config(format!("cannot create work dir {}: {e}", parent.display()))
        })?;
        // Claims go one at a time. Otherwise a starting executor cleaning up
        // could find the lock file another has just created, lock it before
        // its owner does, and the owner would be refused (or hold a lock
        // on a file that was removed meanwhile).
        let claiming = open_lock(&parent.join(CLAIM_LOCK))?;
        claiming
            .lock()
            .map_err(|e| ExecutorError::Config(format!("cannot lock {}: {e}", parent.display())))?;
        let lock_path = parent.join(format!("{PREFIX}{id}.lock"));
        let lock = open_lock(&lock_path)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(ExecutorError::Config(format!(
                    "another running executor has id {id} on work dir {} \
                     (give each executor its own --id)",
                    parent.display()
                )));
            }
            Err(TryLockError::Error(e)) => {
                return Err(ExecutorError::Config(format!(
                    "cannot lock {}: {e}",
                    lock_path.display()
                )));
            }
        }
        remove_abandoned(parent, id);
        let path = parent.join(format!("{PREFIX}{id}"));
        // Left by an earlier executor with this id that was killed.
        if path.exists() {
            std::fs::remove_dir_all(&path)?;
        }
        std::fs::create_dir_all(&path)?;
        Ok(Self {
            path,
            kind: Kind::Claimed {
                _lock: lock,
                lock_path,
            },
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        // A temporary directory removes itself.
        if let Kind::Claimed { lock_path, .. } = &self.kind {
            if let Err(e) = std::fs::remove_dir_all(&self.path) {
                tracing::warn!(dir = %self.path.display(), error = %e, "could not remove the work directory");
            }
            // Removed while still locked: a starting executor that opened
            // it meanwhile finds it locked until this one is gone.
            let _ = std::fs::remove_file(lock_path);
        }
    }
}

fn open_lock(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| ExecutorError::Config(format!("cannot create {}: {e}", path.display())))
}

/// Removes the directories (and lock files) under `parent` of executors
/// other than `own` that no longer run. Problems are logged, not fatal: they
/// cost disk space, not correctness.
fn remove_abandoned(parent: &Path, own: &str) {
    let entries = match std::fs::read_dir(parent) {
        Ok(entries) => entries,
        Err(e) => {
            tracing::warn!(dir = %parent.display(), error = %e, "cannot list the work dir");
            return;
        }
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(id) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|n| n.strip_suffix(".lock"))
        else {
            continue;
        };
        if id == own {
            continue;
        }
        let lock_path = entry.path();
        let Ok(lock) = open_lock(&lock_path) else {
            continue;
        };
        // Locked: its executor runs. Anything else but a free lock: leave it.
        if lock.try_lock().is_err() {
            continue;
        }
        let dir = parent.join(format!("{PREFIX}{id}"));
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {
                tracing::info!(dir = %dir.display(), "removed the files of an executor that stopped without cleaning up")
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "could not remove an abandoned executor directory");
                continue;
            }
        }
        let _ = std::fs::remove_file(&lock_path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a killed executor leaves: its directory with a spilled file,
    /// and its lock file, no longer locked by anyone.
    fn leave_abandoned(parent: &Path, id: &str) -> PathBuf {
        let dir = parent.join(format!("{PREFIX}{id}"));
        std::fs::create_dir_all(dir.join("shuffle/job-1")).unwrap();
        std::fs::write(dir.join("shuffle/job-1/0.arrow"), b"spilled").unwrap();
        File::create(parent.join(format!("{PREFIX}{id}.lock"))).unwrap();
        dir
    }

    #[test]
    fn a_starting_executor_removes_what_killed_ones_left_and_keeps_running_ones() {
        let parent = tempfile::tempdir().unwrap();
        let running = WorkDir::claim(parent.path(), "a").unwrap();
        std::fs::write(running.path().join("keep"), b"live").unwrap();
        let dead = leave_abandoned(parent.path(), "dead");
        let unrelated = parent.path().join("not-ours");
        std::fs::create_dir(&unrelated).unwrap();

        let started = WorkDir::claim(parent.path(), "b").unwrap();
        assert!(!dead.exists(), "the killed executor's files stay");
        assert!(!parent.path().join("executor-dead.lock").exists());
        assert!(
            running.path().join("keep").exists(),
            "a running executor's files were removed"
        );
        assert!(unrelated.exists());
        assert!(started.path().is_dir());

        // Stopping removes its own directory and lock file.
        let path = started.path().to_path_buf();
        drop(started);
        assert!(!path.exists());
        assert!(!parent.path().join("executor-b.lock").exists());
        assert!(running.path().join("keep").exists());
    }

    /// Executors started side by side on one work dir (as a cluster's are)
    /// must not take one another's fresh lock file for a dead executor's.
    #[test]
    fn executors_starting_together_all_start() {
        for _ in 0..200 {
            let parent = tempfile::tempdir().unwrap();
            let claims: Vec<_> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..4)
                    .map(|i| {
                        let parent = parent.path();
                        scope.spawn(move || WorkDir::claim(parent, &format!("e{i}")))
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            for claim in &claims {
                let dir = claim.as_ref().expect("an executor was refused");
                assert!(dir.path().is_dir(), "{} was removed", dir.path().display());
            }
            for i in 0..4 {
                assert!(parent.path().join(format!("{PREFIX}e{i}.lock")).exists());
            }
        }
    }

    #[test]
    fn an_id_a_running_executor_has_is_refused_and_a_dead_ones_is_taken_over() {
        let parent = tempfile::tempdir().unwrap();
        let running = WorkDir::claim(parent.path(), "same").unwrap();
        let err = WorkDir::claim(parent.path(), "same").unwrap_err();
        assert!(
            err.to_string()
                .contains("another running executor has id same"),
            "{err}"
        );
        drop(running);

        // Restarted with the same id after being killed: its old files go.
        let dead = leave_abandoned(parent.path(), "same");
        let restarted = WorkDir::claim(parent.path(), "same").unwrap();
        assert_eq!(restarted.path(), dead);
        assert!(!dead.join("shuffle").exists());
    }
}
