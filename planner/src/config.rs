//! Session settings: Ember's own `ember.*` keys, and the DataFusion settings
//! every distributed session needs.
//!
//! `ember.*` keys are a DataFusion config extension, so `SET ember.key = v`,
//! `SHOW ember.key` and `SHOW ALL` work in any session like DataFusion's own
//! keys do.

use datafusion::common::config::ConfigExtension;
use datafusion::common::extensions_options;
use datafusion::prelude::SessionConfig;

extensions_options! {
    /// Ember's per-session settings (`ember.*`).
    pub struct EmberOptions {
        /// How many times one task may be attempted before its job fails.
        pub task_max_attempts: usize, default = 4

        /// How many times one stage may be re-run after lost map outputs
        /// before its job fails.
        pub stage_max_attempts: usize, default = 4

        /// Largest result, in rows, the scheduler returns inline for
        /// statements it answers itself (SHOW, EXPLAIN, DESCRIBE).
        pub inline_result_max_rows: usize, default = 100000
    }
}

impl ConfigExtension for EmberOptions {
    const PREFIX: &'static str = "ember";
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
