//! Session settings: Ember's own `ember.*` keys, and the DataFusion settings
//! every distributed session needs.
//!
//! `ember.*` keys are a DataFusion config extension, so `SET ember.key = v`,
//! `SHOW ember.key` and `SHOW ALL` work in any session like DataFusion's own
//! keys do.

use std::any::Any;
use std::fmt;

use datafusion::common::config::{ConfigEntry, ConfigExtension, ExtensionOptions};
use datafusion::error::{DataFusionError, Result};
use datafusion::prelude::SessionConfig;

/// What `SHOW` and logs print instead of a secret.
pub const MASK: &str = "****";

/// A secret setting: never printed (`Debug` and `Display` show [`MASK`]).
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Secret(pub String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

/// S3-compatible object storage settings of a session (`ember.s3.*`). Unset
/// ones fall back to the environment (`AWS_ACCESS_KEY_ID`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct S3Settings {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<Secret>,
    pub secret_access_key: Option<Secret>,
    pub session_token: Option<Secret>,
    pub allow_http: Option<bool>,
    pub virtual_hosted_style: Option<bool>,
    /// Seconds to wait for a connection / for a whole request.
    pub connect_timeout_secs: Option<u64>,
    pub request_timeout_secs: Option<u64>,
    /// Retries of a failed request (with backoff) before giving up.
    pub max_retries: Option<usize>,
}

/// Ember's per-session settings (`ember.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmberOptions {
    /// How many times one task may be attempted before its job fails.
    pub task_max_attempts: usize,
    /// How many times one stage may be re-run after lost map outputs before
    /// its job fails.
    pub stage_max_attempts: usize,
    /// Largest result, in rows, the scheduler returns inline for statements
    /// it answers itself (SHOW, EXPLAIN, DESCRIBE).
    pub inline_result_max_rows: usize,
    /// Object storage (`ember.s3.*`).
    pub s3: S3Settings,
}

impl Default for EmberOptions {
    fn default() -> Self {
        Self {
            task_max_attempts: 4,
            stage_max_attempts: 4,
            inline_result_max_rows: 100_000,
            s3: S3Settings::default(),
        }
    }
}

impl ConfigExtension for EmberOptions {
    const PREFIX: &'static str = "ember";
}

fn parse<T: std::str::FromStr>(key: &str, value: &str) -> Result<T> {
    value.trim().parse().map_err(|_| {
        DataFusionError::Configuration(format!("invalid value {value:?} for ember.{key}"))
    })
}

/// An optional setting: an empty value unsets it.
fn optional<T: std::str::FromStr>(key: &str, value: &str) -> Result<Option<T>> {
    if value.trim().is_empty() {
        Ok(None)
    } else {
        parse(key, value).map(Some)
    }
}

fn secret(value: &str) -> Option<Secret> {
    (!value.is_empty()).then(|| Secret(value.to_string()))
}

impl EmberOptions {
    /// Every `(key, value, description)`; secrets as they are when
    /// `expose`, masked otherwise.
    fn list(&self, expose: bool) -> Vec<(&'static str, Option<String>, &'static str)> {
        let s3 = &self.s3;
        let show = |v: &Option<Secret>| {
            v.as_ref().map(|s| {
                if expose {
                    s.expose().to_string()
                } else {
                    MASK.to_string()
                }
            })
        };
        vec![
            (
                "task_max_attempts",
                Some(self.task_max_attempts.to_string()),
                "How many times one task may be attempted before its job fails.",
            ),
            (
                "stage_max_attempts",
                Some(self.stage_max_attempts.to_string()),
                "How many times one stage may be re-run after lost map outputs before its job fails.",
            ),
            (
                "inline_result_max_rows",
                Some(self.inline_result_max_rows.to_string()),
                "Largest result, in rows, the scheduler returns inline (SHOW, EXPLAIN, DESCRIBE).",
            ),
            (
                "s3.endpoint",
                s3.endpoint.clone(),
                "S3 endpoint URL (default: AWS_ENDPOINT_URL, else AWS).",
            ),
            (
                "s3.region",
                s3.region.clone(),
                "S3 region (default: AWS_REGION).",
            ),
            (
                "s3.access_key_id",
                show(&s3.access_key_id),
                "S3 access key id (default: AWS_ACCESS_KEY_ID; shown masked).",
            ),
            (
                "s3.secret_access_key",
                show(&s3.secret_access_key),
                "S3 secret access key (default: AWS_SECRET_ACCESS_KEY; shown masked).",
            ),
            (
                "s3.session_token",
                show(&s3.session_token),
                "S3 session token (default: AWS_SESSION_TOKEN; shown masked).",
            ),
            (
                "s3.allow_http",
                s3.allow_http.map(|b| b.to_string()),
                "Allow plain-HTTP endpoints (default: AWS_ALLOW_HTTP).",
            ),
            (
                "s3.virtual_hosted_style",
                s3.virtual_hosted_style.map(|b| b.to_string()),
                "Virtual-hosted-style requests (default: AWS_VIRTUAL_HOSTED_STYLE_REQUEST, else path style).",
            ),
            (
                "s3.connect_timeout_secs",
                s3.connect_timeout_secs.map(|v| v.to_string()),
                "Seconds to wait for a connection to the store (default 5).",
            ),
            (
                "s3.request_timeout_secs",
                s3.request_timeout_secs.map(|v| v.to_string()),
                "Seconds one request may take (default 30).",
            ),
            (
                "s3.max_retries",
                s3.max_retries.map(|v| v.to_string()),
                "Retries of a failed request before giving up (default 3).",
            ),
        ]
    }

    /// The settings as `ember.*` keys with their real values, secrets
    /// included: what travels to executors with a job, never to be shown.
    pub fn exposed_entries(&self) -> Vec<(String, String)> {
        self.list(true)
            .into_iter()
            .filter_map(|(k, v, _)| v.map(|v| (format!("ember.{k}"), v)))
            .collect()
    }
}

impl ExtensionOptions for EmberOptions {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn cloned(&self) -> Box<dyn ExtensionOptions> {
        Box::new(self.clone())
    }

    fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let s3 = &mut self.s3;
        match key {
            "task_max_attempts" => self.task_max_attempts = parse(key, value)?,
            "stage_max_attempts" => self.stage_max_attempts = parse(key, value)?,
            "inline_result_max_rows" => self.inline_result_max_rows = parse(key, value)?,
            "s3.endpoint" => s3.endpoint = optional(key, value)?,
            "s3.region" => s3.region = optional(key, value)?,
            "s3.access_key_id" => s3.access_key_id = secret(value),
            "s3.secret_access_key" => s3.secret_access_key = secret(value),
            "s3.session_token" => s3.session_token = secret(value),
            "s3.allow_http" => s3.allow_http = optional(key, value)?,
            "s3.virtual_hosted_style" => s3.virtual_hosted_style = optional(key, value)?,
            "s3.connect_timeout_secs" => s3.connect_timeout_secs = optional(key, value)?,
            "s3.request_timeout_secs" => s3.request_timeout_secs = optional(key, value)?,
            "s3.max_retries" => s3.max_retries = optional(key, value)?,
            _ => {
                return Err(DataFusionError::Configuration(format!(
                    "unknown setting ember.{key}"
                )));
            }
        }
        Ok(())
    }

    /// What `SHOW` / `SHOW ALL` print: secrets masked.
    fn entries(&self) -> Vec<ConfigEntry> {
        self.list(false)
            .into_iter()
            .map(|(key, value, description)| ConfigEntry {
                key: key.to_string(),
                value,
                description,
            })
            .collect()
    }
}

/// A `SessionConfig` whose plans can be cut into stages.
///
/// * Dynamic filters are off: a filter a hash join pushes into a scan that
///   ends up in another stage would never be filled, and the scan would wait
///   for it forever.
/// * Uncorrelated scalar subqueries are planned as joins, not as a
///   `ScalarSubqueryExec` whose shared result slot cannot span stages.
/// * File-stream work stealing is off: DataFusion lets an idle partition read
///   files of its siblings, which in a single process keeps cores busy, but a
///   task runs one partition alone and would read every file, duplicating rows.
/// * Round-robin repartitioning is off: scans are already split into
///   `target_partitions` file groups, and every exchange costs a stage.
pub fn distributed_session_config(target_partitions: usize) -> SessionConfig {
    let mut config = SessionConfig::new()
        .with_target_partitions(target_partitions.max(1))
        .with_information_schema(true)
        .with_round_robin_repartition(false)
        .with_option_extension(EmberOptions::default());
    let opts = config.options_mut();
    opts.optimizer.enable_dynamic_filter_pushdown = false;
    opts.optimizer.enable_join_dynamic_filter_pushdown = false;
    opts.optimizer.enable_topk_dynamic_filter_pushdown = false;
    opts.optimizer.enable_aggregate_dynamic_filter_pushdown = false;
    opts.optimizer.enable_physical_uncorrelated_scalar_subquery = false;
    opts.execution.enable_file_stream_work_stealing = false;
    config
}

/// Reads Ember's options out of a session config.
pub fn ember_options(config: &SessionConfig) -> EmberOptions {
    config
        .options()
        .extensions
        .get::<EmberOptions>()
        .cloned()
        .unwrap_or_default()
}
