//! The scheduler's HTTP side (axum): the web UI (`/ui/`), the REST API under `/api/v1/`
//! (jobs, one job with its stages, executors; JSON views from
//! [`crate::overview`]), Prometheus `/metrics`, and `/healthz` / `/readyz`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Json, Redirect, Response};
use axum::routing::get;
use parking_lot::Mutex;

use crate::core::Core;
use crate::session::Session;

/// What the handlers read.
#[derive(Clone)]
pub(crate) struct Http {
    pub core: Arc<Core>,
    pub sessions: Arc<Mutex<HashMap<String, Arc<Session>>>>,
}

pub(crate) fn router(http: Http) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::temporary("/ui/") }))
        .route("/ui/", get(ui))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route("/api/v1/jobs", get(jobs))
        .route("/api/v1/jobs/{id}", get(job))
        .route("/api/v1/executors", get(executors))
        .with_state(http)
}

/// The web UI: one page, embedded in the binary (no CDN, no build step),
/// drawing the REST API's JSON.
async fn ui() -> Html<&'static str> {
    Html(include_str!("ui/index.html"))
}

/// Ready once an executor can run tasks.
async fn ready(State(http): State<Http>) -> Response {
    if http.core.executors_overview().iter().any(|e| e.connected) {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no executor registered").into_response()
    }
}

async fn metrics(State(http): State<Http>) -> Response {
    let sessions = http.sessions.lock().len();
    let text = http
        .core
        .metrics
        .render(http.core.metrics_snapshot(sessions));
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn jobs(State(http): State<Http>) -> Response {
    Json(http.core.jobs_overview()).into_response()
}

async fn job(State(http): State<Http>, Path(id): Path<String>) -> Response {
    match http.core.job_overview(&id) {
        Some(job) => Json(job).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "error": format!("unknown job {id}") })),
        )
            .into_response(),
    }
}

async fn executors(State(http): State<Http>) -> Response {
    Json(http.core.executors_overview()).into_response()
}
