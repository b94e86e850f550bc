//! Session settings: Ember's own `ember.*` keys, and the DataFusion settings
//! every distributed session needs.
//!
//! `ember.*` keys are a DataFusion config extension, so `SET ember.key = v`,
//! `SHOW ember.key` and `SHOW ALL` work in any session like DataFusion's own
//! keys do.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::sync::LazyLock;

use datafusion::common::config::{ConfigEntry, ConfigExtension, ExtensionOptions};
use datafusion::error::{DataFusionError, Result};
use datafusion::prelude::SessionConfig;

/// What `SHOW` and logs print instead of a secret.
pub const MASK: &str = "****";

/// Does `text` (a statement) mention a secret setting: an `ember.s3.*`
/// credential or a table's `aws.*` credential option? Such text is never
/// kept where people can see it (shell history, job descriptions).
pub fn mentions_secret(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    [
        "access_key_id",
        "secret_access_key",
        "session_token",
        "aws.secret",
        "aws.token",
    ]
    .iter()
    .any(|k| lower.contains(k))
}

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

impl S3Settings {
    /// These settings with every field `over` sets replacing them.
    pub fn overlaid(&self, over: &S3Settings) -> S3Settings {
        fn pick<T: Clone>(over: &Option<T>, base: &Option<T>) -> Option<T> {
            over.clone().or_else(|| base.clone())
        }
        S3Settings {
            endpoint: pick(&over.endpoint, &self.endpoint),
            region: pick(&over.region, &self.region),
            access_key_id: pick(&over.access_key_id, &self.access_key_id),
            secret_access_key: pick(&over.secret_access_key, &self.secret_access_key),
            session_token: pick(&over.session_token, &self.session_token),
            allow_http: pick(&over.allow_http, &self.allow_http),
            virtual_hosted_style: pick(&over.virtual_hosted_style, &self.virtual_hosted_style),
            connect_timeout_secs: pick(&over.connect_timeout_secs, &self.connect_timeout_secs),
            request_timeout_secs: pick(&over.request_timeout_secs, &self.request_timeout_secs),
            max_retries: pick(&over.max_retries, &self.max_retries),
        }
    }

    /// Sets one field by its name (`region`, `secret_access_key`, ...).
    pub fn set(&mut self, field: &str, value: &str) -> Result<()> {
        let key = format!("s3.{field}");
        match field {
            "endpoint" => self.endpoint = optional(&key, value)?,
            "region" => self.region = optional(&key, value)?,
            "access_key_id" => self.access_key_id = secret(value),
            "secret_access_key" => self.secret_access_key = secret(value),
            "session_token" => self.session_token = secret(value),
            "allow_http" => self.allow_http = optional(&key, value)?,
            "virtual_hosted_style" => self.virtual_hosted_style = optional(&key, value)?,
            "connect_timeout_secs" => self.connect_timeout_secs = optional(&key, value)?,
            "request_timeout_secs" => self.request_timeout_secs = optional(&key, value)?,
            "max_retries" => self.max_retries = optional(&key, value)?,
            _ => {
                return Err(DataFusionError::Configuration(format!(
                    "unknown S3 setting {field:?} (endpoint, region, access_key_id, \
                     secret_access_key, session_token, allow_http, virtual_hosted_style, \
                     connect_timeout_secs, request_timeout_secs, max_retries)"
                )));
            }
        }
        Ok(())
    }

    /// `(field, value)` of every field; secrets as they are when `expose`,
    /// masked otherwise.
    fn fields(&self, expose: bool) -> Vec<(&'static str, Option<String>)> {
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
            ("endpoint", self.endpoint.clone()),
            ("region", self.region.clone()),
            ("access_key_id", show(&self.access_key_id)),
            ("secret_access_key", show(&self.secret_access_key)),
            ("session_token", show(&self.session_token)),
            ("allow_http", self.allow_http.map(|b| b.to_string())),
            (
                "virtual_hosted_style",
                self.virtual_hosted_style.map(|b| b.to_string()),
            ),
            (
                "connect_timeout_secs",
                self.connect_timeout_secs.map(|v| v.to_string()),
            ),
            (
                "request_timeout_secs",
                self.request_timeout_secs.map(|v| v.to_string()),
            ),
            ("max_retries", self.max_retries.map(|v| v.to_string())),
        ]
    }
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
    /// Deal Parquet scans' row groups to partitions by rows
    /// ([`balance_scans`](crate::balance::balance_scans)).
    pub balance_scans: bool,
    /// Let the client merge a sorted result's partitions instead of a last
    /// stage on the cluster ([`ResultMerge`](crate::ResultMerge)).
    pub merge_on_client: bool,
    /// Run an uncorrelated scalar subquery that stands in a filter as a job
    /// beside the query's own (whose other stages run meanwhile), rather
    /// than before it ([`subquery_value`](crate::subquery_value)).
    pub concurrent_subqueries: bool,
    /// The scheduler finishes a scalar subquery's one-row aggregate from
    /// the partial rows of its tasks, instead of a last one-task stage
    /// ([`FinishHere`](crate::FinishHere)).
    pub finish_subqueries_here: bool,
    /// Semi and anti joins with a small build side find their matches
    /// where the probe side is, instead of shuffling it
    /// ([`semi_reduction`](crate::semi_reduction)).
    pub reduce_semi_joins: bool,
    /// A distinct aggregate over a small input shuffles once, by its outer
    /// group keys, instead of twice
    /// ([`distinct_exchange`](crate::distinct_exchange)).
    pub one_exchange_distinct: bool,
    /// A small file scan (no filter) that every task of a stage reads whole
    /// is read by each of them instead of by a stage of its own
    /// ([`small_scans`](crate::small_scans)).
    pub small_scans_in_task: bool,
    /// An aggregate under a broadcast join that keeps only matching groups
    /// aggregates only the rows of groups whose key is broadcast
    /// ([`aggregate_prefilter`](crate::aggregate_prefilter)).
    pub prefilter_aggregates: bool,
    /// A stage that only scans files of at most this many rows (by their
    /// statistics) runs as one task ([`one_task_scans`](crate::one_task_scans);
    /// 0: as many tasks as the scan has partitions).
    pub one_task_scan_max_rows: usize,
    /// A final result partition encoded in at most this many bytes travels
    /// with its task's report, through the scheduler, instead of being kept
    /// by its executor for the client to fetch (0: never).
    pub direct_result_max_bytes: u64,
    /// Object storage (`ember.s3.*`).
    pub s3: S3Settings,
    /// Per-bucket overrides (`ember.s3.bucket.<bucket>.<field>`), e.g. from
    /// a table's `OPTIONS ('aws.region' ...)`.
    pub s3_buckets: std::collections::BTreeMap<String, S3Settings>,
}

impl Default for EmberOptions {
    fn default() -> Self {
        Self {
            task_max_attempts: 4,
            stage_max_attempts: 4,
            inline_result_max_rows: 100_000,
            balance_scans: true,
            merge_on_client: true,
            concurrent_subqueries: true,
            finish_subqueries_here: true,
            reduce_semi_joins: true,
            one_exchange_distinct: true,
            small_scans_in_task: true,
            prefilter_aggregates: true,
            one_task_scan_max_rows: crate::one_task_scans::ONE_TASK_SCAN_MAX_ROWS,
            direct_result_max_bytes: 64 << 10,
            s3: S3Settings::default(),
            s3_buckets: Default::default(),
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
    fn list(&self, expose: bool) -> Vec<(String, Option<String>, &'static str)> {
        let mut out = vec![
            (
                "task_max_attempts".to_string(),
                Some(self.task_max_attempts.to_string()),
                "How many times one task may be attempted before its job fails.",
            ),
            (
                "stage_max_attempts".to_string(),
                Some(self.stage_max_attempts.to_string()),
                "How many times one stage may be re-run after lost map outputs before its job fails.",
            ),
            (
                "inline_result_max_rows".to_string(),
                Some(self.inline_result_max_rows.to_string()),
                "Largest result, in rows, the scheduler returns inline (SHOW, EXPLAIN, DESCRIBE).",
            ),
            (
                "balance_scans".to_string(),
                Some(self.balance_scans.to_string()),
                "Split Parquet scans among tasks by rows, in whole row groups, instead of by bytes.",
            ),
            (
                "merge_on_client".to_string(),
                Some(self.merge_on_client.to_string()),
                "The client merges a sorted result's partitions, instead of a last stage on the cluster.",
            ),
            (
                "concurrent_subqueries".to_string(),
                Some(self.concurrent_subqueries.to_string()),
                "Run a scalar subquery that filters a query beside the query's job, not before it.",
            ),
            (
                "finish_subqueries_here".to_string(),
                Some(self.finish_subqueries_here.to_string()),
                "The scheduler finishes a scalar subquery's aggregate from its tasks' partial rows, instead of a last one-task stage.",
            ),
            (
                "reduce_semi_joins".to_string(),
                Some(self.reduce_semi_joins.to_string()),
                "Semi and anti joins with a small build side match where the probe side is, instead of shuffling it.",
            ),
            (
                "one_exchange_distinct".to_string(),
                Some(self.one_exchange_distinct.to_string()),
                "A distinct aggregate (count(DISTINCT x) GROUP BY g) over at most 1 Mi estimated rows shuffles once, by g, instead of twice.",
            ),
            (
                "small_scans_in_task".to_string(),
                Some(self.small_scans_in_task.to_string()),
                "A small file scan (no filter, at most 128 Ki rows read by all tasks together) that every task reads whole is read by each task, not by a stage of its own.",
            ),
            (
                "prefilter_aggregates".to_string(),
                Some(self.prefilter_aggregates.to_string()),
                "An aggregate joined back by its group key to a broadcast at most a quarter of its input (a decorrelated subquery) aggregates only the rows whose key is broadcast; a broadcast whose size is estimated is measured when its stage ends.",
            ),
            (
                "one_task_scan_max_rows".to_string(),
                Some(self.one_task_scan_max_rows.to_string()),
                "A stage that only scans files of at most this many rows (file statistics; filters and projections above the scan allowed) runs as one task (0: one task per scan partition).",
            ),
            (
                "direct_result_max_bytes".to_string(),
                Some(self.direct_result_max_bytes.to_string()),
                "A result partition of at most this many bytes (Arrow IPC) reaches the client with its task's report instead of a fetch from its executor, and outlives it (0: never).",
            ),
        ];
        for (field, value) in self.s3.fields(expose) {
            out.push((format!("s3.{field}"), value, s3_description(field)));
        }
        for (bucket, settings) in &self.s3_buckets {
            for (field, value) in settings.fields(expose) {
                if value.is_some() {
                    out.push((
                        format!("s3.bucket.{bucket}.{field}"),
                        value,
                        "An S3 setting for one bucket (e.g. from a table's OPTIONS).",
                    ));
                }
            }
        }
        out
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

fn s3_description(field: &str) -> &'static str {
    match field {
        "endpoint" => "S3 endpoint URL (default: AWS_ENDPOINT_URL, else AWS).",
        "region" => "S3 region (default: AWS_REGION).",
        "access_key_id" => "S3 access key id (default: AWS_ACCESS_KEY_ID; shown masked).",
        "secret_access_key" => {
            "S3 secret access key (default: AWS_SECRET_ACCESS_KEY; shown masked)."
        }
        "session_token" => "S3 session token (default: AWS_SESSION_TOKEN; shown masked).",
        "allow_http" => "Allow plain-HTTP endpoints (default: AWS_ALLOW_HTTP).",
        "virtual_hosted_style" => {
            "Virtual-hosted-style requests (default: AWS_VIRTUAL_HOSTED_STYLE_REQUEST, else path style)."
        }
        "connect_timeout_secs" => "Seconds to wait for a connection to the store (default 5).",
        "request_timeout_secs" => "Seconds one request may take (default 30).",
        "max_retries" => "Retries of a failed request before giving up (default 3).",
        _ => "",
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
        match key {
            "task_max_attempts" => self.task_max_attempts = parse(key, value)?,
            "stage_max_attempts" => self.stage_max_attempts = parse(key, value)?,
            "inline_result_max_rows" => self.inline_result_max_rows = parse(key, value)?,
            "balance_scans" => self.balance_scans = parse(key, value)?,
            "merge_on_client" => self.merge_on_client = parse(key, value)?,
            "concurrent_subqueries" => self.concurrent_subqueries = parse(key, value)?,
            "finish_subqueries_here" => self.finish_subqueries_here = parse(key, value)?,
            "reduce_semi_joins" => self.reduce_semi_joins = parse(key, value)?,
            "one_exchange_distinct" => self.one_exchange_distinct = parse(key, value)?,
            "small_scans_in_task" => self.small_scans_in_task = parse(key, value)?,
            "prefilter_aggregates" => self.prefilter_aggregates = parse(key, value)?,
            "one_task_scan_max_rows" => self.one_task_scan_max_rows = parse(key, value)?,
            "direct_result_max_bytes" => self.direct_result_max_bytes = parse(key, value)?,
            _ if key.starts_with("s3.bucket.") => {
                let rest = &key["s3.bucket.".len()..];
                let (bucket, field) = rest.rsplit_once('.').ok_or_else(|| {
                    DataFusionError::Configuration(format!(
                        "ember.{key}: expected ember.s3.bucket.<bucket>.<setting>"
                    ))
                })?;
                self.s3_buckets
                    .entry(bucket.to_string())
                    .or_default()
                    .set(field, value)?;
            }
            _ if key.starts_with("s3.") => self.s3.set(&key[3..], value)?,
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
                // DataFusion lists an extension's entries under the names
                // they give, and `SHOW` finds them by those names.
                key: format!("{}.{key}", Self::PREFIX),
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
///   `ScalarSubqueryExec` whose shared result slot cannot span stages (the
///   scheduler runs those of SQL statements first, as jobs of their own,
///   and plans the statement with their values).
/// * File-stream work stealing is off: DataFusion lets an idle partition read
///   files of its siblings, which in a single process keeps cores busy, but a
///   task runs one partition alone and would read every file, duplicating rows.
/// * Round-robin repartitioning is off: scans are already split into
///   `target_partitions` file groups, and every exchange costs a stage.
/// * A join's build side may be collected (broadcast to every task) up to
///   [`BROADCAST_ROWS`] rows or [`BROADCAST_BYTES`] bytes (estimated), not
///   DataFusion's 128 Ki rows / 1 MiB: in one process the alternative, a
///   partitioned join, costs an in-memory repartition, but on a cluster it
///   shuffles both sides, the large one included. Past 1 Mi rows the
///   planner keeps the broadcast only where it moves less than the shuffle
///   would ([`crate::joins`]).
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
    opts.optimizer.hash_join_single_partition_threshold_rows = BROADCAST_ROWS;
    opts.optimizer.hash_join_single_partition_threshold = BROADCAST_BYTES;
    config
}

/// Largest estimated build side, in rows, a distributed join broadcasts.
pub const BROADCAST_ROWS: usize = 4 << 20;

/// Largest estimated build side, in bytes, a distributed join broadcasts.
pub const BROADCAST_BYTES: usize = 128 << 20;

/// The DataFusion settings [`distributed_session_config`] fixes, each with
/// its value and why any other cannot run distributed.
const PINNED: &[(&str, &str, &str)] = &[
    (
        "datafusion.optimizer.enable_dynamic_filter_pushdown",
        "false",
        "a filter pushed into a scan of another stage would never be filled",
    ),
    (
        "datafusion.optimizer.enable_join_dynamic_filter_pushdown",
        "false",
        "a filter a join pushes into a scan of another stage would never be filled",
    ),
    (
        "datafusion.optimizer.enable_topk_dynamic_filter_pushdown",
        "false",
        "a filter a top-k pushes into a scan of another stage would never be filled",
    ),
    (
        "datafusion.optimizer.enable_aggregate_dynamic_filter_pushdown",
        "false",
        "a filter an aggregate pushes into a scan of another stage would never be filled",
    ),
    (
        "datafusion.optimizer.enable_physical_uncorrelated_scalar_subquery",
        "false",
        "Ember plans uncorrelated scalar subqueries as joins; a ScalarSubqueryExec's \
         result cannot reach expressions in other stages",
    ),
    (
        "datafusion.execution.enable_file_stream_work_stealing",
        "false",
        "a task runs one partition alone and would also read its siblings' files, \
         returning their rows twice",
    ),
];

/// Whether a session may set `key` to `value`: the settings
/// [`distributed_session_config`] fixes keep their value (`Err` says why).
pub fn check_setting(key: &str, value: &str) -> std::result::Result<(), String> {
    match pinned(key) {
        Some((key, fixed, why)) if !value.trim().eq_ignore_ascii_case(fixed) => {
            Err(format!("Ember keeps {key} = {fixed}: {why}"))
        }
        _ => Ok(()),
    }
}

/// Is `key` one of the settings Ember fixes (`RESET` leaves it as it is)?
pub fn is_pinned(key: &str) -> bool {
    pinned(key).is_some()
}

/// The entry of [`PINNED`] for `key` (any case, surrounding blanks ignored).
fn pinned(key: &str) -> Option<&'static (&'static str, &'static str, &'static str)> {
    let key = key.trim();
    PINNED
        .iter()
        .find(|(pinned, _, _)| pinned.eq_ignore_ascii_case(key))
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

/// The configuration a task starts from, before its job's settings.
pub fn task_base_config() -> SessionConfig {
    SessionConfig::new().with_option_extension(EmberOptions::default())
}

/// The settings a task applies to [`task_base_config`] to run as `config`
/// says: every `datafusion.*` and `ember.*` value that differs from the
/// base's (a launch carries these, not all two hundred).
pub fn task_settings(config: &SessionConfig) -> HashMap<String, String> {
    static BASE: LazyLock<HashMap<String, String>> =
        LazyLock::new(|| all_settings(&task_base_config()));
    all_settings(config)
        .into_iter()
        .filter(|(key, value)| BASE.get(key) != Some(value))
        .collect()
}

/// Every set `datafusion.*` and `ember.*` value of `config` (Ember's
/// secrets included: executors need them; they are never logged or shown).
fn all_settings(config: &SessionConfig) -> HashMap<String, String> {
    let ember = ember_options(config).exposed_entries();
    config
        .options()
        .entries()
        .into_iter()
        .filter(|e| e.key.starts_with("datafusion."))
        .filter_map(|e| e.value.map(|v| (e.key, v)))
        .chain(ember)
        .collect()
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::SessionContext;

    use super::*;

    #[test]
    fn a_task_applying_the_settings_that_differ_gets_the_sessions_config() {
        let mut session = distributed_session_config(3);
        for (key, value) in [
            ("ember.prefilter_aggregates", "false"),
            ("ember.s3.region", "eu-west-9"),
            ("datafusion.execution.batch_size", "1234"),
            (
                "datafusion.optimizer.enable_dynamic_filter_pushdown",
                "false",
            ),
        ] {
            session.options_mut().set(key, value).unwrap();
        }
        let settings = task_settings(&session);
        // Only what differs travels (the session's partitions, the four
        // above, and the other values `distributed_session_config` sets).
        assert!(settings.len() < 40, "{settings:?}");
        assert_eq!(settings["ember.s3.region"], "eu-west-9");
        assert_eq!(settings["datafusion.execution.target_partitions"], "3");
        let mut task = task_base_config();
        for (key, value) in &settings {
            task.options_mut().set(key, value).unwrap();
        }
        assert_eq!(all_settings(&task), all_settings(&session));
        assert!(task_settings(&task_base_config()).is_empty());
    }

    #[tokio::test]
    async fn ember_settings_show_under_their_names() {
        let ctx = SessionContext::new_with_config(distributed_session_config(2));
        ctx.sql("SET ember.task_max_attempts = 7").await.unwrap();
        let shown = ctx
            .sql("SHOW ember.task_max_attempts")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let text = arrow::util::pretty::pretty_format_batches(&shown)
            .unwrap()
            .to_string();
        assert!(text.contains("| ember.task_max_attempts | 7 "), "{text}");
    }

    #[test]
    fn fixed_settings_keep_their_values() {
        let key = "datafusion.execution.enable_file_stream_work_stealing";
        assert!(check_setting(key, "false").is_ok());
        assert!(check_setting(&key.to_uppercase(), " FALSE ").is_ok());
        let e = check_setting(key, "true").unwrap_err();
        assert!(
            e.starts_with(&format!("Ember keeps {key} = false: ")),
            "{e}"
        );
        assert!(check_setting("datafusion.execution.batch_size", "100").is_ok());
        assert!(is_pinned(key) && !is_pinned("datafusion.execution.batch_size"));
    }
}
