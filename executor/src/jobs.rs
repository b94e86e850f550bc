//! The jobs this executor knows: a cancel flag per job with tasks here, and
//! tombstones of jobs the scheduler has told it to forget.
//!
//! Tombstones make the order of RPCs irrelevant: a `CancelTasks` or
//! `RemoveJobData` that overtakes its job's `LaunchTasks` leaves a tombstone,
//! and the late launch is answered by reporting its tasks killed instead of
//! re-creating the job's entry (whose data nobody would ever free).
//! Tombstones are bounded in number and age.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::watch;

/// Tombstones kept at most (oldest dropped first).
const MAX_TOMBSTONES: usize = 10_000;
/// A tombstone older than this is dropped: by then the scheduler has long
/// stopped launching the job, and heartbeats reconcile anything left.
const TOMBSTONE_TTL: Duration = Duration::from_secs(3600);

#[derive(Debug, Default)]
struct Inner {
    cancel: HashMap<String, watch::Sender<bool>>,
    removed: HashMap<String, Instant>,
    removed_order: VecDeque<String>,
}

#[derive(Debug, Default)]
pub struct JobTable(Mutex<Inner>);

impl JobTable {
    /// The cancel flag for a task of `job`, or `None` if the job was removed.
    pub fn admit(&self, job: &str) -> Option<watch::Receiver<bool>> {
        let mut inner = self.0.lock();
        if inner.removed.contains_key(job) {
            return None;
        }
        Some(
            inner
                .cancel
                .entry(job.to_string())
                .or_insert_with(|| watch::channel(false).0)
                .subscribe(),
        )
    }

    /// Cancels `job`'s tasks and refuses its future launches. Returns whether
    /// it had tasks here.
    pub fn remove(&self, job: &str) -> bool {
        let mut inner = self.0.lock();
        let now = Instant::now();
        while let Some(oldest) = inner.removed_order.front() {
            let expired = inner
                .removed
                .get(oldest)
                .is_none_or(|t| now.duration_since(*t) > TOMBSTONE_TTL);
            if !expired && inner.removed_order.len() < MAX_TOMBSTONES {
                break;
            }
            if let Some(id) = inner.removed_order.pop_front() {
                inner.removed.remove(&id);
            }
        }
        if inner.removed.insert(job.to_string(), now).is_none() {
            inner.removed_order.push_back(job.to_string());
        }
        match inner.cancel.remove(job) {
            Some(flag) => {
                flag.send_replace(true);
                true
            }
            None => false,
        }
    }

    /// Cancels every task (shutdown).
    pub fn cancel_all(&self) {
        for (_, flag) in self.0.lock().cancel.drain() {
            flag.send_replace(true);
        }
    }

    /// Jobs with tasks admitted here and not removed.
    pub fn active(&self) -> Vec<String> {
        self.0.lock().cancel.keys().cloned().collect()
    }

    #[cfg(test)]
    fn tombstones(&self) -> usize {
        self.0.lock().removed.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_launch_that_arrives_after_its_job_was_removed_is_refused() {
        let jobs = JobTable::default();
        assert!(!jobs.remove("j"));
        assert!(jobs.admit("j").is_none());
        assert!(jobs.active().is_empty());
    }

    #[test]
    fn removing_a_job_cancels_its_tasks() {
        let jobs = JobTable::default();
        let flag = jobs.admit("j").unwrap();
        assert!(jobs.remove("j"));
        assert!(*flag.borrow());
    }

    #[test]
    fn tombstones_are_bounded() {
        let jobs = JobTable::default();
        for i in 0..MAX_TOMBSTONES + 10 {
            jobs.remove(&format!("j{i}"));
        }
        assert!(jobs.tombstones() <= MAX_TOMBSTONES);
        assert!(jobs.admit("j0").is_some(), "the oldest tombstone is gone");
    }
}
