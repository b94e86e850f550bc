//! Fault injection, for tests only: make chosen tasks fail, hang or kill
//! their process at a chosen point, a bounded number of times.
//!
//! Off unless `EMBER_FAULTS` (or [`ExecutorConfig::faults`]) names faults.
//! A spec is a `;`-separated list of faults, each `ACTION@POINT` followed by
//! `:key=value` filters and settings:
//!
//! ```text
//!   kill@task-end:stage=0:times=1          SIGKILL this process after a map task of
//!                                          stage 0 wrote its output, before it reports
//!   fail@task-start:stage=1:partition=0:times=4
//!   hang@task-start:stage=2:times=1        the task waits until cancelled (or ms)
//!   kill@task-start:reads=1:times=1        die as the first task that reads a
//!                                          shuffle starts (its map stage is done)
//!   kill@serve-shuffle:times=1             die while streaming a shuffle bucket
//!   kill@serve-result:times=1              die while a client fetches a result
//!   disconnect@task-end:ms=3000:times=1    cut the control stream and hold status
//!                                          reports for 3 s (a network partition),
//!                                          then reconnect and send them late
//! ```
//!
//! Points: `task-start` (before the task runs), `task-end` (its output is
//! written, its report not yet sent), `serve-shuffle` / `serve-result` (as
//! the first batch of a Flight stream of a shuffle bucket / a final result
//! is read; only `kill` and `disconnect` act there, the stream itself has no
//! task to fail or hang).
//!
//! `times` is a budget (default 1). With `EMBER_FAULTS_DIR` set, the budget is
//! shared by every process given the same directory: firing claims a token
//! file created with `O_EXCL`, so a fault fires `times` times in the whole
//! cluster, whichever executor gets there first.
//!
//! [`ExecutorConfig::faults`]: crate::ExecutorConfig::faults

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::error::{ExecutorError, Result};

/// Where in a task's life a fault can fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultPoint {
    TaskStart,
    TaskEnd,
    ServeShuffle,
    ServeResult,
}

/// What a fault does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultAction {
    /// The task fails with a retryable error.
    Fail,
    /// The task waits until cancelled, or for `ms` if given.
    Hang,
    /// The process SIGKILLs itself.
    Kill,
    /// The control stream is cut and status reports are held for `ms`.
    Disconnect,
}

#[derive(Debug)]
struct Fault {
    index: usize,
    action: FaultAction,
    point: FaultPoint,
    stage: Option<u32>,
    partition: Option<u32>,
    /// Only tasks of stages that read shuffle input (`reads=1`) or that do
    /// not (`reads=0`).
    reads: Option<bool>,
    times: u32,
    duration: Duration,
    fired: AtomicU32,
}

/// The faults of one executor.
#[derive(Debug, Default)]
pub struct Faults {
    faults: Vec<Fault>,
    budget_dir: Option<PathBuf>,
    disconnected_until: Mutex<Option<Instant>>,
}

impl Faults {
    /// Parses a spec (see the module doc); an empty spec injects nothing.
    pub fn parse(spec: &str, budget_dir: Option<PathBuf>) -> Result<Self> {
        let bad = |what: String| ExecutorError::Config(format!("EMBER_FAULTS: {what}"));
        let mut faults = vec![];
        for (index, item) in spec
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .enumerate()
        {
            let mut parts = item.split(':');
            let head = parts.next().unwrap_or_default();
            let (action, point) = head
                .split_once('@')
                .ok_or_else(|| bad(format!("{item:?}: expected ACTION@POINT")))?;
            let action = match action {
                "fail" => FaultAction::Fail,
                "hang" => FaultAction::Hang,
                "kill" => FaultAction::Kill,
                "disconnect" => FaultAction::Disconnect,
                other => return Err(bad(format!("unknown action {other:?}"))),
            };
            let point = match point {
                "task-start" => FaultPoint::TaskStart,
                "task-end" => FaultPoint::TaskEnd,
                "serve-shuffle" => FaultPoint::ServeShuffle,
                "serve-result" => FaultPoint::ServeResult,
                other => return Err(bad(format!("unknown point {other:?}"))),
            };
            let mut fault = Fault {
                index,
                action,
                point,
                stage: None,
                partition: None,
                reads: None,
                times: 1,
                duration: Duration::ZERO,
                fired: AtomicU32::new(0),
            };
            for kv in parts {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| bad(format!("{kv:?}: expected key=value")))?;
                let n: u64 = v
                    .parse()
                    .map_err(|_| bad(format!("{k}={v:?}: expected a number")))?;
                match k {
                    "stage" => fault.stage = Some(n as u32),
                    "partition" => fault.partition = Some(n as u32),
                    "reads" => fault.reads = Some(n != 0),
                    "times" => fault.times = n as u32,
                    "ms" => fault.duration = Duration::from_millis(n),
                    other => return Err(bad(format!("unknown key {other:?}"))),
                }
            }
            faults.push(fault);
        }
        if !faults.is_empty() {
            tracing::warn!(spec, "FAULT INJECTION IS ON (testing only)");
        }
        Ok(Self {
            faults,
            budget_dir,
            disconnected_until: Mutex::new(None),
        })
    }

    /// The fault that fires at `point` for this task (of a stage that
    /// `reads` shuffle input or not), if any; its budget is spent by this call.
    pub fn fire(
        &self,
        point: FaultPoint,
        stage: u32,
        partition: u32,
        reads: bool,
    ) -> Option<(FaultAction, Duration)> {
        let fault = self.faults.iter().find(|f| {
            f.point == point
                && f.stage.is_none_or(|s| s == stage)
                && f.partition.is_none_or(|p| p == partition)
                && f.reads.is_none_or(|r| r == reads)
                && self.claim(f)
        })?;
        tracing::warn!(action = ?fault.action, ?point, stage, partition, "injecting fault");
        Some((fault.action, fault.duration))
    }

    /// Spends one unit of `f`'s budget, cluster-wide when a budget directory is set.
    fn claim(&self, f: &Fault) -> bool {
        match &self.budget_dir {
            None => f
                .fired
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                    (n < f.times).then_some(n + 1)
                })
                .is_ok(),
            Some(dir) => (0..f.times).any(|n| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(dir.join(format!("fault-{}-{n}", f.index)))
                    .is_ok()
            }),
        }
    }

    /// Carries out a fault that acts on the whole process (kill, disconnect);
    /// returns the ones the task itself must act on (fail, hang).
    pub fn act(&self, fired: Option<(FaultAction, Duration)>) -> Option<(FaultAction, Duration)> {
        match fired? {
            (FaultAction::Kill, _) => kill_self(),
            (FaultAction::Disconnect, d) => {
                *self.disconnected_until.lock() = Some(Instant::now() + d);
                None
            }
            other => Some(other),
        }
    }

    /// While a `disconnect` fault lasts: how much longer.
    pub fn disconnected_for(&self) -> Option<Duration> {
        let until = (*self.disconnected_until.lock())?;
        until.checked_duration_since(Instant::now())
    }
}

/// SIGKILL, exactly what an operator's `kill -9` or the OOM killer does.
fn kill_self() -> ! {
    tracing::warn!("fault injection: killing this process");
    // SAFETY: kill(2) on our own pid has no memory-safety preconditions.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    std::process::abort()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_filters_by_point_stage_and_partition_within_its_budget() {
        let f = Faults::parse("fail@task-start:stage=1:partition=0:times=2", None).unwrap();
        assert_eq!(f.fire(FaultPoint::TaskEnd, 1, 0, false), None);
        assert_eq!(f.fire(FaultPoint::TaskStart, 2, 0, false), None);
        assert_eq!(f.fire(FaultPoint::TaskStart, 1, 1, false), None);
        assert!(f.fire(FaultPoint::TaskStart, 1, 0, false).is_some());
        assert!(f.fire(FaultPoint::TaskStart, 1, 0, false).is_some());
        assert_eq!(f.fire(FaultPoint::TaskStart, 1, 0, false), None);
    }

    #[test]
    fn a_budget_directory_is_shared_by_every_process_using_it() {
        let dir = tempfile::tempdir().unwrap();
        let spec = "hang@task-start:times=3:ms=10";
        let a = Faults::parse(spec, Some(dir.path().to_path_buf())).unwrap();
        let b = Faults::parse(spec, Some(dir.path().to_path_buf())).unwrap();
        let fired = (0..5)
            .filter(|i| {
                let f = if i % 2 == 0 { &a } else { &b };
                f.fire(FaultPoint::TaskStart, 0, 0, true).is_some()
            })
            .count();
        assert_eq!(fired, 3);
    }

    #[test]
    fn bad_specs_are_refused_with_the_reason() {
        for spec in [
            "explode@task-start",
            "fail",
            "fail@nowhere",
            "fail@task-end:x=1",
            "fail@task-end:stage=a",
        ] {
            let e = Faults::parse(spec, None).unwrap_err().to_string();
            assert!(e.contains("EMBER_FAULTS"), "{spec}: {e}");
        }
    }
}
