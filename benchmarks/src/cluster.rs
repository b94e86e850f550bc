//! A cluster of real processes owned by `ember-bench` (for
//! `--kill-executor-after`): one `ember-scheduler` and N `ember-executor`s,
//! the binaries found next to `ember-bench`'s own executable. Executors can
//! be SIGKILLed and replaced; everything is killed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct ProcessCluster {
    pub url: String,
    scheduler: Child,
    executors: Vec<Child>,
    slots: usize,
    memory_bytes: u64,
    next_victim: usize,
}

fn sibling(name: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let path = exe
        .parent()
        .map(|d| d.join(name))
        .ok_or("cannot locate ember-bench's directory")?;
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{} not found: build the binaries (`cargo build --release --workspace --bins`)",
            path.display()
        ))
    }
}

impl ProcessCluster {
    pub fn start(executors: usize, slots: usize, memory_bytes: u64) -> Result<Self, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let scheduler = Command::new(sibling("ember-scheduler")?)
            .args(["--bind", &format!("127.0.0.1:{port}")])
            .args(["--http", "off"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting ember-scheduler: {e}"))?;
        let mut cluster = Self {
            url: format!("http://127.0.0.1:{port}"),
            scheduler,
            executors: vec![],
            slots,
            memory_bytes,
            next_victim: 0,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err("ember-scheduler did not start".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for _ in 0..executors {
            cluster.spawn_executor()?;
        }
        Ok(cluster)
    }

    fn spawn_executor(&mut self) -> Result<(), String> {
        let child = Command::new(sibling("ember-executor")?)
            .args(["--scheduler", &self.url])
            .args(["--slots", &self.slots.to_string()])
            .args(["--memory", &self.memory_bytes.to_string()])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting ember-executor: {e}"))?;
        self.executors.push(child);
        Ok(())
    }

    pub fn executors(&self) -> usize {
        self.executors.len()
    }

    /// SIGKILLs one executor (round robin) and starts a replacement.
    pub fn kill_one_and_replace(&mut self) -> Result<(), String> {
        if self.executors.is_empty() {
            return Err("no executor to kill".into());
        }
        let victim = self.next_victim % self.executors.len();
        self.next_victim += 1;
        let mut child = self.executors.remove(victim);
        let killed = child.kill();
        let _ = child.wait();
        killed.map_err(|e| format!("killing an executor: {e}"))?;
        self.spawn_executor()
    }
}

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        for child in self
            .executors
            .iter_mut()
            .chain(std::iter::once(&mut self.scheduler))
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
