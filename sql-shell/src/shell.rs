//! What the shell does with a statement: run it (with progress and Ctrl-C
//! cancellation on a terminal), then print the result in the chosen format.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use ember::{EmberContext, EmberError, QueryResult, Submitted};
use futures::FutureExt;

use crate::output::{self, Format};
use crate::progress::Progress;

pub struct Shell {
    pub ctx: EmberContext,
    pub format: Format,
    pub timing: bool,
    pub max_rows: Option<usize>,
    pub interactive: bool,
    /// `\o FILE` redirects results here.
    pub output: Option<(String, std::fs::File)>,
    /// SIGINT, listened to for the whole session so that no Ctrl-C is lost
    /// between two polls (and none kills the shell).
    interrupts: Option<tokio::signal::unix::Signal>,
}

impl Shell {
    pub fn new(ctx: EmberContext, format: Format, interactive: bool) -> Self {
        Self {
            ctx,
            format,
            timing: false,
            max_rows: None,
            interactive,
            output: None,
            interrupts: if interactive {
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok()
            } else {
                None
            },
        }
    }

    /// Runs one statement and prints its result. A job's result streams:
    /// CSV and JSON rows are written as they arrive, and a table cut at
    /// `max_rows` stops fetching there (the rest of the job is cancelled).
    pub async fn execute(&mut self, sql: &str) -> Result<(), EmberError> {
        let started = Instant::now();
        let result = match self.ctx.submit_sql(sql).await? {
            Submitted::Done(result) => result,
            Submitted::Job(job) => {
                let status = match self.follow(&job).await {
                    Ok(status) => status,
                    Err(e) => {
                        self.ctx.release(&job.job_id).await;
                        return Err(e);
                    }
                };
                return self
                    .print_stream(self.ctx.stream(job), status, started)
                    .await;
            }
        };
        self.print(&result, started.elapsed())
            .map_err(|e| EmberError::Io(format!("writing the result: {e}")))
    }

    /// Waits for a job to succeed, drawing progress and cancelling it on
    /// Ctrl-C when interactive.
    async fn follow(&mut self, job: &ember::RunningJob) -> Result<ember::JobStatus, EmberError> {
        let Some(interrupts) = self.interrupts.as_mut() else {
            return self.ctx.wait_for(job, |_| {}).await;
        };
        // A Ctrl-C pressed before this query (at the prompt) is not for it.
        while interrupts.recv().now_or_never().is_some() {}
        let job_id = job.job_id.clone();
        let progress = Progress::new(std::io::stderr().is_terminal());
        let completion = self.ctx.wait_for(job, |s| progress.update(s));
        tokio::pin!(completion);
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut cancelled = false;
        let result = loop {
            tokio::select! {
                r = &mut completion => break r,
                _ = tick.tick() => progress.draw(),
                _ = interrupts.recv(), if !cancelled => {
                    cancelled = true;
                    progress.clear();
                    eprintln!("cancelling query {job_id} ...");
                    if let Err(e) = self.ctx.cancel(&job_id).await {
                        eprintln!("cancel failed: {e}");
                    }
                }
            }
        };
        progress.clear();
        result
    }

    /// Prints a job's result as it streams in.
    async fn print_stream(
        &mut self,
        mut stream: ember::ResultStream,
        status: ember::JobStatus,
        started: Instant,
    ) -> Result<(), EmberError> {
        use futures::StreamExt;
        if self.interactive
            && let Some(note) = recovery_note(&status)
        {
            eprintln!("{note}");
        }
        let io = |e: std::io::Error| EmberError::Io(format!("writing the result: {e}"));
        let schema = stream.schema();
        let (format, max_rows, timing) = (self.format, self.max_rows, self.timing);
        let mut stdout = std::io::stdout().lock();
        let out: &mut dyn Write = match &mut self.output {
            Some((_, file)) => file,
            None => &mut stdout,
        };
        if let Some(mut writer) = output::RowWriter::new(format, &mut *out) {
            while let Some(batch) = stream.next().await {
                writer.write(&batch?).map_err(io)?;
            }
            return writer.finish(&schema).map_err(io);
        }
        // A table needs its rows before it can be drawn: up to the limit,
        // plus one to know whether there are more.
        let mut batches = vec![];
        let mut rows = 0;
        let mut more = false;
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            rows += batch.num_rows();
            batches.push(batch);
            if max_rows.is_some_and(|max| rows > max) {
                more = true;
                break;
            }
        }
        // Dropping the stream stops fetching and cancels what is left.
        drop(stream);
        let hidden = more.then_some(0);
        output::write_table_rows(&schema, &batches, max_rows, hidden, out).map_err(io)?;
        let shown = max_rows.map_or(rows, |max| rows.min(max));
        let noun = if shown == 1 { "row" } else { "rows" };
        let what = if more { " shown" } else { "" };
        if timing {
            writeln!(
                out,
                "{shown} {noun}{what} in {:.3} s",
                started.elapsed().as_secs_f64()
            )
            .map_err(io)?;
        } else {
            writeln!(out, "{shown} {noun}{what}").map_err(io)?;
        }
        out.flush().map_err(io)
    }

    fn print(&mut self, result: &QueryResult, elapsed: Duration) -> std::io::Result<()> {
        if !result.has_result_set {
            if self.interactive && self.timing {
                eprintln!("OK in {:.3} s", elapsed.as_secs_f64());
            }
            return Ok(());
        }
        let format = self.format;
        let max_rows = self.max_rows;
        let timing = self.timing;
        let mut stdout = std::io::stdout().lock();
        let out: &mut dyn Write = match &mut self.output {
            Some((_, file)) => file,
            None => &mut stdout,
        };
        if let Some(mut writer) = output::RowWriter::new(format, &mut *out) {
            for batch in &result.batches {
                writer.write(batch)?;
            }
            return writer.finish(&result.schema);
        }
        output::write_table(result, max_rows, out)?;
        let rows = result.num_rows();
        let noun = if rows == 1 { "row" } else { "rows" };
        if timing {
            writeln!(out, "{rows} {noun} in {:.3} s", elapsed.as_secs_f64())?;
        } else {
            writeln!(out, "{rows} {noun}")?;
        }
        out.flush()
    }
}

/// What the cluster recovered from while running a job, if anything (the
/// full list is in `EXPLAIN ANALYZE`).
fn recovery_note(status: &ember::JobStatus) -> Option<String> {
    use ember::JobEventKind as K;
    let kind = |e: &ember::JobEvent| K::try_from(e.kind).unwrap_or(K::Unspecified);
    let lost: Vec<&str> = status
        .events
        .iter()
        .filter(|e| kind(e) == K::ExecutorLost)
        .map(|e| e.executor_id.as_str())
        .collect();
    let recomputed: usize = status
        .events
        .iter()
        .filter(|e| matches!(kind(e), K::OutputsLost | K::ResultLost | K::TaskRetried))
        .map(|e| e.partitions.len())
        .sum();
    if lost.is_empty() && recomputed == 0 {
        return None;
    }
    let mut note = String::from("note: the cluster recovered while running this query:");
    if !lost.is_empty() {
        note.push_str(&format!(" executor(s) lost: {};", lost.join(", ")));
    }
    note.push_str(&format!(" {recomputed} task(s) re-run"));
    Some(note)
}

/// One clear line; for syntax errors the statement's line with a caret under
/// the position the parser reported.
pub fn format_error(sql: &str, e: &EmberError) -> String {
    let msg = e.to_string();
    let Some(pos) = parse_position(&msg) else {
        return msg;
    };
    let Some(line) = sql.lines().nth(pos.0.saturating_sub(1)) else {
        return msg;
    };
    format!(
        "{msg}\n  {line}\n  {}^",
        " ".repeat(pos.1.saturating_sub(1))
    )
}

/// `(line, column)` from a message containing `Line: L, Column: C`.
fn parse_position(msg: &str) -> Option<(usize, usize)> {
    let rest = &msg[msg.find("Line: ")? + 6..];
    let (line, rest) = rest.split_once(", Column: ")?;
    let col: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    Some((line.trim().parse().ok()?, col.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_errors_point_at_the_position() {
        let e = EmberError::Query(
            "SQL error: ParserError(\"Expected: an expression, found: FROM at Line: 2, Column: 8\")"
                .into(),
        );
        let text = format_error("SELECT a,\nSELECT FROM t", &e);
        assert!(text.ends_with("\n  SELECT FROM t\n         ^"), "{text}");
        let plain = EmberError::Query("table 't' not found".into());
        assert_eq!(format_error("SELECT 1", &plain), "table 't' not found");
    }
}
