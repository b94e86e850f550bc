//! The executor registry: who is registered (under which registration), the
//! task attempts each one is running, and so its free slots. Plain data, no
//! I/O; [`Core`](crate::core::Core) holds it under its lock.
//!
//! Slots are derived, not counted: an executor's free slots are its slots
//! minus the attempts launched there that have not ended. An attempt ends
//! when its report arrives, when the executor's heartbeat stops listing it,
//! or with the executor. A stale or duplicate report can therefore never
//! free a slot twice.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use ember_proto::executor_service_client::ExecutorServiceClient;
use ember_proto::{ExecutorInfo, ExecutorLoad};
use tonic::transport::Channel;

/// A task attempt launched on an executor.
#[derive(Debug, Clone)]
pub struct LaunchedAttempt {
    pub job_id: String,
    pub stage: u32,
    pub partition: u32,
    pub launched: Instant,
}

#[derive(Debug)]
pub struct ExecutorEntry {
    pub info: ExecutorInfo,
    /// Which registration of this executor id this is.
    pub registration: u64,
    pub last_seen: Instant,
    pub client: ExecutorServiceClient<Channel>,
    /// Attempts launched here that have not ended.
    pub running: HashMap<u64, LaunchedAttempt>,
    /// Its control stream is open (a heartbeat came through it). Only then
    /// does it get tasks: a process that dies before opening it would
    /// otherwise hold tasks that only the heartbeat timeout gives back.
    pub connected: bool,
    /// Its figures at its last heartbeat.
    pub load: ExecutorLoad,
    /// Attempts that reported here since it registered: succeeded, and
    /// failed (killed ones are neither).
    pub tasks_succeeded: u64,
    pub tasks_failed: u64,
}

impl ExecutorEntry {
    pub fn free_slots(&self) -> usize {
        (self.info.slots as usize).saturating_sub(self.running.len())
    }
}

#[derive(Debug, Default)]
pub struct Registry {
    executors: BTreeMap<String, ExecutorEntry>,
    next_registration: u64,
    next_attempt: u64,
}

impl Registry {
    /// Adds an executor under a new registration id.
    pub fn add(&mut self, info: ExecutorInfo, client: ExecutorServiceClient<Channel>) -> u64 {
        self.next_registration += 1;
        let registration = self.next_registration;
        self.executors.insert(
            info.executor_id.clone(),
            ExecutorEntry {
                info,
                registration,
                last_seen: Instant::now(),
                client,
                running: HashMap::new(),
                load: ExecutorLoad::default(),
                tasks_succeeded: 0,
                tasks_failed: 0,
                connected: false,
            },
        );
        registration
    }

    pub fn get(&self, id: &str) -> Option<&ExecutorEntry> {
        self.executors.get(id)
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut ExecutorEntry> {
        self.executors.get_mut(id)
    }

    pub fn remove(&mut self, id: &str) -> Option<ExecutorEntry> {
        self.executors.remove(id)
    }

    pub fn is_empty(&self) -> bool {
        self.executors.is_empty()
    }

    pub fn entries(&self) -> impl Iterator<Item = &ExecutorEntry> {
        self.executors.values()
    }

    pub fn total_slots(&self) -> usize {
        self.entries().map(|e| e.info.slots as usize).sum()
    }

    /// A fresh attempt id, unique for this scheduler's lifetime.
    pub fn next_attempt(&mut self) -> u64 {
        self.next_attempt += 1;
        self.next_attempt
    }

    /// The connected executor with the most free slots (spreads tasks
    /// evenly).
    pub fn pick(&mut self) -> Option<&mut ExecutorEntry> {
        self.executors
            .values_mut()
            .filter(|e| e.connected && e.free_slots() > 0)
            .max_by_key(|e| e.free_slots())
    }

    /// Executors silent for longer than `timeout`.
    pub fn silent(&self, timeout: Duration) -> Vec<String> {
        self.executors
            .iter()
            .filter(|(_, e)| e.last_seen.elapsed() > timeout)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Ends `attempt` on `executor` (its report arrived). Returns whether it
    /// was running there.
    pub fn end_attempt(&mut self, executor: &str, attempt: u64) -> bool {
        self.executors
            .get_mut(executor)
            .is_some_and(|e| e.running.remove(&attempt).is_some())
    }

    /// A heartbeat of `executor` listed `listed`: attempts launched there
    /// more than `grace` ago that it no longer lists have vanished (their
    /// report will never come). Removes and returns them.
    pub fn reconcile(
        &mut self,
        executor: &str,
        listed: &HashSet<u64>,
        grace: Duration,
    ) -> Vec<(u64, LaunchedAttempt)> {
        let Some(entry) = self.executors.get_mut(executor) else {
            return vec![];
        };
        let vanished: Vec<u64> = entry
            .running
            .iter()
            .filter(|(a, l)| !listed.contains(a) && l.launched.elapsed() > grace)
            .map(|(a, _)| *a)
            .collect();
        vanished
            .into_iter()
            .filter_map(|a| entry.running.remove(&a).map(|l| (a, l)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> ExecutorServiceClient<Channel> {
        ExecutorServiceClient::new(
            tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy(),
        )
    }

    fn registry_with(id: &str, slots: u32) -> Registry {
        let mut r = Registry::default();
        r.add(
            ExecutorInfo {
                executor_id: id.into(),
                address: "127.0.0.1:1".into(),
                slots,
                ..Default::default()
            },
            client(),
        );
        r
    }

    fn launch(r: &mut Registry, id: &str, attempt: u64, ago: Duration) {
        r.get_mut(id).unwrap().running.insert(
            attempt,
            LaunchedAttempt {
                job_id: "j".into(),
                stage: 0,
                partition: 0,
                launched: Instant::now() - ago,
            },
        );
    }

    #[tokio::test]
    async fn only_an_executor_whose_control_stream_is_open_gets_tasks() {
        let mut r = registry_with("a", 2);
        assert!(r.pick().is_none(), "registered, not yet connected");
        r.get_mut("a").unwrap().connected = true;
        assert_eq!(r.pick().unwrap().info.executor_id, "a");
    }

    #[tokio::test]
    async fn slots_come_back_once_per_attempt() {
        let mut r = registry_with("a", 2);
        launch(&mut r, "a", 1, Duration::ZERO);
        launch(&mut r, "a", 2, Duration::ZERO);
        assert!(r.pick().is_none());
        assert!(r.end_attempt("a", 1));
        assert!(!r.end_attempt("a", 1), "a duplicate report frees nothing");
        assert!(!r.end_attempt("a", 77), "a stale report frees nothing");
        assert_eq!(r.get("a").unwrap().free_slots(), 1);
    }

    #[tokio::test]
    async fn heartbeat_reconciliation_ends_only_old_unlisted_attempts() {
        let mut r = registry_with("a", 4);
        launch(&mut r, "a", 1, Duration::from_secs(10));
        launch(&mut r, "a", 2, Duration::from_secs(10));
        launch(&mut r, "a", 3, Duration::ZERO);
        let vanished = r.reconcile("a", &HashSet::from([2]), Duration::from_secs(1));
        assert_eq!(
            vanished.iter().map(|(a, _)| *a).collect::<Vec<_>>(),
            vec![1]
        );
        assert_eq!(r.get("a").unwrap().running.len(), 2);
    }

    #[tokio::test]
    async fn every_registration_has_its_own_id() {
        let mut r = registry_with("a", 1);
        let first = r.get("a").unwrap().registration;
        r.remove("a");
        let info = ExecutorInfo {
            executor_id: "a".into(),
            slots: 1,
            ..Default::default()
        };
        assert_ne!(r.add(info, client()), first);
    }
}
