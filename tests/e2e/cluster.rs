//! A cluster of real processes: one `ember-scheduler` and `ember-executor`s,
//! each killable with SIGKILL, executors optionally with injected faults
//! whose budget is shared through one directory.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ember::EmberContext;

use crate::common::binary;

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A program to run and the arguments before Ember's own flags (e.g. an
/// example binary and its role).
#[derive(Debug, Clone)]
pub struct Program {
    pub path: PathBuf,
    pub args: Vec<String>,
}

impl Program {
    pub fn binary(name: &str) -> Self {
        Self {
            path: binary(name),
            args: vec![],
        }
    }

    /// `target/<profile>/examples/<name>` run as `<name> <role>`.
    pub fn example(name: &str, role: &str) -> Self {
        let path = binary("examples").join(name);
        Self {
            path,
            args: vec![role.to_string()],
        }
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.path);
        c.args(&self.args);
        c
    }
}

/// Kills its processes (SIGKILL) when dropped, even if the test fails.
pub struct ProcessCluster {
    pub port: u16,
    pub url: String,
    scheduler_program: Program,
    executor_program: Program,
    scheduler: Option<Child>,
    scheduler_args: Vec<String>,
    executors: Vec<(String, Child)>,
    next_executor: usize,
    faults: String,
    faults_dir: tempfile::TempDir,
    logs: tempfile::TempDir,
    /// `RUST_LOG` of every process (default: info for the scheduler, warn
    /// for executors).
    log_level: Option<String>,
    /// Where the latest scheduler start's output begins in its log.
    scheduler_log_start: usize,
}

impl ProcessCluster {
    /// A scheduler whose heartbeat timeout (60 s) is far longer than any
    /// test: a test that recovers quickly shows the loss was noticed by the
    /// broken connection, not the clock.
    pub fn start(executors: usize, faults: &str, scheduler_args: &[&str]) -> Self {
        Self::start_programs(
            executors,
            faults,
            scheduler_args,
            Program::binary("ember-scheduler"),
            Program::binary("ember-executor"),
        )
    }

    /// Like [`start`](Self::start) with other scheduler and executor
    /// programs (taking the same flags).
    pub fn start_programs(
        executors: usize,
        faults: &str,
        scheduler_args: &[&str],
        scheduler_program: Program,
        executor_program: Program,
    ) -> Self {
        Self::launch(
            executors,
            faults,
            scheduler_args,
            scheduler_program,
            executor_program,
            None,
        )
    }

    fn launch(
        executors: usize,
        faults: &str,
        scheduler_args: &[&str],
        scheduler_program: Program,
        executor_program: Program,
        log_level: Option<String>,
    ) -> Self {
        let port = free_port();
        let mut cluster = Self {
            port,
            url: format!("http://127.0.0.1:{port}"),
            scheduler_program,
            executor_program,
            scheduler: None,
            scheduler_args: scheduler_args.iter().map(|s| s.to_string()).collect(),
            executors: vec![],
            next_executor: 0,
            faults: faults.to_string(),
            faults_dir: tempfile::tempdir().unwrap(),
            logs: tempfile::tempdir().unwrap(),
            log_level,
            scheduler_log_start: 0,
        };
        cluster.start_scheduler();
        for _ in 0..executors {
            cluster.spawn_executor();
        }
        cluster
    }

    pub fn start_scheduler(&mut self) {
        // A restarted scheduler appends to the same log.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.scheduler_log())
            .unwrap();
        self.scheduler_log_start = log.metadata().map_or(0, |m| m.len() as usize);
        let child = self
            .scheduler_program
            .command()
            .args(["--bind", &format!("127.0.0.1:{}", self.port)])
            .args(["--http", "127.0.0.1:0"])
            .args([
                "--heartbeat-interval-ms",
                "200",
                "--executor-timeout-secs",
                "60",
            ])
            .args(&self.scheduler_args)
            .env("RUST_LOG", self.log_level.as_deref().unwrap_or("info"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn ember-scheduler");
        self.scheduler = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "scheduler did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill_scheduler(&mut self) {
        if let Some(mut child) = self.scheduler.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts one more executor (with the cluster's faults); returns its id.
    pub fn spawn_executor(&mut self) -> String {
        self.spawn_executor_program(self.executor_program.clone())
    }

    /// Starts one more executor running `program`; returns its id.
    pub fn spawn_executor_program(&mut self, program: Program) -> String {
        let id = format!("exec-{}", self.next_executor);
        self.next_executor += 1;
        let child = program
            .command()
            .args(["--scheduler", &self.url, "--slots", "1", "--id", &id])
            .args(["--memory", "1GiB", "--http", "127.0.0.1:0"])
            // One work dir for all, in the cluster's own directory: an
            // executor killed with SIGKILL cannot remove its files itself.
            .arg("--work-dir")
            .arg(self.work_dir())
            .env("RUST_LOG", self.log_level.as_deref().unwrap_or("warn"))
            .env("EMBER_FAULTS", &self.faults)
            .env("EMBER_FAULTS_DIR", self.faults_dir.path())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(self.logs.path().join(format!("{id}.log")))
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            )
            .spawn()
            .expect("spawn ember-executor");
        self.executors.push((id.clone(), child));
        id
    }

    /// SIGKILLs executor `id`.
    pub fn kill_executor(&mut self, id: &str) {
        if let Some((_, child)) = self.executors.iter_mut().find(|(i, _)| i == id) {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.executors.retain(|(i, _)| i != id);
    }

    /// Replaces every executor process that has exited (e.g. killed by an
    /// injected fault) with a new one; returns how many were replaced.
    pub fn replace_dead_executors(&mut self) -> usize {
        let dead: Vec<String> = self
            .executors
            .iter_mut()
            .filter_map(|(id, c)| c.try_wait().ok().flatten().map(|_| id.clone()))
            .collect();
        for id in &dead {
            self.executors.retain(|(i, _)| i != id);
            self.spawn_executor();
        }
        dead.len()
    }

    /// Gives every fault its full budget again.
    pub fn reset_faults(&self) {
        for entry in std::fs::read_dir(self.faults_dir.path()).unwrap() {
            let _ = std::fs::remove_file(entry.unwrap().path());
        }
    }

    /// The `--work-dir` every executor shares (each has `executor-<id>/`
    /// under it).
    pub fn work_dir(&self) -> PathBuf {
        self.logs.path().join("work")
    }

    pub fn scheduler_log(&self) -> PathBuf {
        self.logs.path().join("scheduler.log")
    }

    /// Every process's log (scheduler and executors), concatenated.
    pub fn all_logs(&self) -> String {
        let mut out = String::new();
        for entry in std::fs::read_dir(self.logs.path()).unwrap().flatten() {
            out.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
        }
        out
    }

    /// Like [`start`](Self::start) with every process logging at `level`
    /// (to files: [`all_logs`](Self::all_logs)).
    pub fn start_logging(executors: usize, level: &str) -> Self {
        Self::launch(
            executors,
            "",
            &[],
            Program::binary("ember-scheduler"),
            Program::binary("ember-executor"),
            Some(level.to_string()),
        )
    }

    /// `http://...` of the scheduler's REST API and metrics (from its
    /// banner line).
    pub fn http_url(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.scheduler_log_text();
            // The latest start's line: a restarted scheduler appends, and its
            // gRPC port may answer before it prints its HTTP address.
            let latest = log.get(self.scheduler_log_start..).unwrap_or_default();
            if let Some(url) = latest
                .lines()
                .rev()
                .find_map(|l| l.split("REST API and metrics on ").nth(1))
            {
                return url.trim().to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no HTTP URL in the scheduler's output:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn scheduler_log_text(&self) -> String {
        std::fs::read_to_string(self.scheduler_log()).unwrap_or_default()
    }

    /// A new session, once `n` executors are registered.
    pub async fn session(&self, n: usize) -> EmberContext {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(ctx) = EmberContext::remote(&self.url).await
                && ctx
                    .cluster_info()
                    .await
                    .is_ok_and(|c| c.executors.len() == n)
            {
                // A session opened now sees all slots as its partitions.
                return EmberContext::remote(&self.url).await.expect("connect");
            }
            assert!(Instant::now() < deadline, "expected {n} executors");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.executors {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.kill_scheduler();
    }
}
