//! The live progress line shown while a distributed query runs:
//! tasks done / total per unfinished stage, and elapsed time. Drawn on
//! stderr only when it is a terminal, only once the query has run for a
//! moment, and erased before the result prints.

use std::cell::RefCell;
use std::io::Write;
use std::time::{Duration, Instant};

use ember::JobStatus;

/// How long a query runs before progress appears.
const SHOW_AFTER: Duration = Duration::from_millis(300);

pub struct Progress {
    enabled: bool,
    started: Instant,
    status: RefCell<Option<JobStatus>>,
    drawn: RefCell<bool>,
}

impl Progress {
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            started: Instant::now(),
            status: RefCell::new(None),
            drawn: RefCell::new(false),
        }
    }

    pub fn update(&self, status: &JobStatus) {
        *self.status.borrow_mut() = Some(status.clone());
        self.draw();
    }

    pub fn draw(&self) {
        if !self.enabled || self.started.elapsed() < SHOW_AFTER {
            return;
        }
        let line = match &*self.status.borrow() {
            Some(s) => render(s, self.started.elapsed()),
            None => format!(
                "waiting for the scheduler  {:.1}s",
                self.started.elapsed().as_secs_f64()
            ),
        };
        let mut err = std::io::stderr();
        let _ = write!(err, "\r\x1b[2K{line}");
        let _ = err.flush();
        *self.drawn.borrow_mut() = true;
    }

    /// Erases the line, if one was drawn.
    pub fn clear(&self) {
        if *self.drawn.borrow() {
            let mut err = std::io::stderr();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
            *self.drawn.borrow_mut() = false;
        }
    }
}

/// `stage 1: 3/8 ▕███░░░░░▏ stage 2: 0/1 … 2.4s`
pub fn render(status: &JobStatus, elapsed: Duration) -> String {
    let mut parts = vec![];
    for s in &status.stages {
        if s.tasks_done == s.tasks_total {
            continue;
        }
        let width = 10usize;
        let filled = if s.tasks_total == 0 {
            0
        } else {
            (s.tasks_done as usize * width) / s.tasks_total as usize
        };
        parts.push(format!(
            "stage {}: {}/{} [{}{}]{}",
            s.stage_id,
            s.tasks_done,
            s.tasks_total,
            "#".repeat(filled),
            "-".repeat(width - filled),
            if s.tasks_running > 0 {
                format!(" {} running", s.tasks_running)
            } else {
                String::new()
            }
        ));
        if parts.len() == 3 {
            break;
        }
    }
    let done: u32 = status.stages.iter().map(|s| s.tasks_done).sum();
    let total: u32 = status.stages.iter().map(|s| s.tasks_total).sum();
    format!(
        "{}  tasks {done}/{total}  {:.1}s  (Ctrl-C cancels)",
        parts.join("  "),
        elapsed.as_secs_f64()
    )
}
