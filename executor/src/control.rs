//! The executor's link to the scheduler: registration, then a control stream
//! that carries a heartbeat every interval and brings back reconciliation.
//!
//! The stream is the scheduler's primary liveness signal: when this process
//! dies, the kernel closes its sockets and the scheduler sees the stream
//! break within milliseconds. Each heartbeat lists the task attempts the
//! scheduler has not heard the end of and the jobs this executor holds; the
//! answer names jobs the scheduler has forgotten, whose tasks are cancelled
//! and data freed here.
//!
//! When the stream breaks (the scheduler restarted, or declared this executor
//! lost), the executor registers again, with backoff, for as long as it runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ember_proto::{ExecutorInfo, Heartbeat, RegisterExecutorRequest};
use tokio::sync::mpsc;

use crate::error::{ExecutorError, Result};
use crate::service::Inner;

/// A registration the scheduler accepted.
#[derive(Debug, Clone, Copy)]
pub struct Registration {
    pub id: u64,
    pub heartbeat_interval: Duration,
}

const MAX_BACKOFF: Duration = Duration::from_secs(2);

pub async fn register(inner: &Inner) -> Result<Registration> {
    let request = RegisterExecutorRequest {
        executor: Some(ExecutorInfo {
            executor_id: inner.id.clone(),
            address: inner.address.clone(),
            slots: inner.slots as u32,
            memory_bytes: inner.memory_bytes,
            http_address: inner.http_address.clone().unwrap_or_default(),
        }),
    };
    let response = inner
        .scheduler
        .clone()
        .register_executor(request)
        .await
        .inspect_err(|_| inner.metrics.grpc_error("client", "RegisterExecutor"))
        .map_err(|s| match s.code() {
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::DeadlineExceeded => {
                ExecutorError::SchedulerUnreachable {
                    url: inner.scheduler_url.clone(),
                    message: s.message().to_string(),
                }
            }
            _ => ExecutorError::RegistrationRefused(s.message().to_string()),
        })?
        .into_inner();
    Ok(Registration {
        id: response.registration,
        heartbeat_interval: Duration::from_millis(response.heartbeat_interval_ms.max(50)),
    })
}

/// Registers, retrying while the scheduler is unreachable (it may still be
/// starting) until `deadline` (`None`: forever); a refusal fails at once.
pub async fn register_patiently(inner: &Inner, deadline: Option<Instant>) -> Result<Registration> {
    let mut backoff = Duration::from_millis(100);
    loop {
        match register(inner).await {
            Err(ExecutorError::SchedulerUnreachable { .. })
                if deadline.is_none_or(|d| Instant::now() + backoff < d) =>
            {
                tracing::debug!(url = %inner.scheduler_url, "scheduler not reachable; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            other => return other,
        }
    }
}

/// Keeps the executor attached to its scheduler for as long as it runs.
pub async fn control_loop(inner: Arc<Inner>, mut registration: Registration) {
    loop {
        inner
            .attached
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let why = attach(&inner, registration).await;
        inner
            .attached
            .store(false, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(reason = %why, "lost the scheduler's control stream; registering again");
        if let Some(pause) = inner.faults.disconnected_for() {
            tokio::time::sleep(pause).await;
        }
        registration = loop {
            match register_patiently(&inner, None).await {
                Ok(r) => break r,
                Err(e) => {
                    // Refused (e.g. the old registration is still being torn
                    // down): try again shortly.
                    tracing::warn!(error = %e, "re-registration failed; retrying");
                    tokio::time::sleep(MAX_BACKOFF).await;
                }
            }
        };
        tracing::info!(
            registration = registration.id,
            "registered again with the scheduler"
        );
    }
}

/// Runs one control stream until it ends; returns why it ended.
async fn attach(inner: &Inner, registration: Registration) -> String {
    let (tx, rx) = mpsc::channel::<Heartbeat>(4);
    if tx.send(heartbeat(inner, registration)).await.is_err() {
        return "heartbeat channel closed".into();
    }
    let mut responses = match inner
        .scheduler
        .clone()
        .control(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(e) => {
            inner.metrics.grpc_error("client", "Control");
            return format!("cannot open the control stream: {}", e.message());
        }
    };
    let mut ticker = tokio::time::interval(registration.heartbeat_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                if inner.faults.disconnected_for().is_some() {
                    // Dropping the sender ends the stream, as a partition would.
                    return "fault injection: disconnected".into();
                }
                if tx.send(heartbeat(inner, registration)).await.is_err() {
                    return "heartbeat channel closed".into();
                }
            }
            message = responses.message() => match message {
                Ok(Some(r)) => {
                    if r.reregister {
                        return "the scheduler does not know this registration".into();
                    }
                    for job in r.forget_jobs {
                        tracing::info!(job, "the scheduler forgot this job; freeing its data");
                        inner.remove_job(&job);
                    }
                }
                Ok(None) => return "the scheduler closed the stream".into(),
                Err(e) => return e.message().to_string(),
            }
        }
    }
}

fn heartbeat(inner: &Inner, registration: Registration) -> Heartbeat {
    let mut jobs = inner.store.job_ids();
    jobs.extend(inner.jobs.active());
    jobs.sort();
    jobs.dedup();
    Heartbeat {
        executor_id: inner.id.clone(),
        registration: registration.id,
        attempts: inner.attempts.lock().keys().copied().collect(),
        jobs,
        load: Some(inner.metrics.load(inner.snapshot())),
    }
}
