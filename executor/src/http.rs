//! An executor's HTTP side (axum, on `--http`): Prometheus `/metrics`,
//! `/healthz`, and `/readyz` (ready while attached to a scheduler).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::metrics::Snapshot;
use crate::service::Inner;

pub(crate) fn router(inner: Arc<Inner>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .with_state(inner)
}

async fn ready(State(inner): State<Arc<Inner>>) -> Response {
    if inner.attached.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not attached to a scheduler",
        )
            .into_response()
    }
}

async fn metrics(State(inner): State<Arc<Inner>>) -> Response {
    let now = Snapshot {
        memory_pool_used: inner.runtime.memory_pool.reserved() as i64,
        shuffle_memory_used: inner.store.memory_used() as i64,
        shuffle_spilled_total: inner.store.spilled_bytes(),
        tasks_running: (inner.slots - inner.task_slots.available_permits()) as i64,
        slots: inner.slots as i64,
    };
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        inner.metrics.render(now),
    )
        .into_response()
}
