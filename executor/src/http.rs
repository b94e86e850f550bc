//! An executor's HTTP side (axum, on `--http`): Prometheus `/metrics`,
//! `/healthz`, and `/readyz` (ready while attached to a scheduler).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

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
    let now = inner.snapshot();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        inner.metrics.render(now),
    )
        .into_response()
}
