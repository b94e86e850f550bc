//! A stage that only scans a few rows runs as one task.
//!
//! DataFusion deals a scan's files to the session's partitions however
//! small the table, and every partition becomes a task: TPC-H's `nation`
//! filtered to one row, `region` to one, `supplier` to the 4 whose comment
//! matches a `LIKE` each get a stage of two tasks at SF 1. Every task is a
//! launch, a report and a slot held; where a stage's tasks take the only
//! free slots, the stages beside it (q16's `part` beside `supplier`) wait
//! for them. A scan of a few rows costs less than that split, so when the
//! exchange above such a stage is cut, the stage's scan is dealt one
//! partition holding all of its files:
//!
//! ```text
//!   CoalescePartitions                 CoalescePartitions
//!     Filter                             Reader(stage n, 1 map partition)
//!       Scan(files in 2 groups)  ──▶   stage n, 1 task: Writer
//!                                                         └ Filter
//!                                                             └ Scan(every file, 1 group)
//! ```
//!
//! Only stages whose plan is a chain of operators that keep partitions as
//! they are and ask nothing of them (filters, projections, partial
//! aggregates) over one file scan whose grouping means nothing (no declared
//! ordering or partitioning), of at most [`EmberOptions`]'s
//! `one_task_scan_max_rows` rows by file statistics. An exchange's output
//! does not depend on how many tasks wrote it: a hash exchange still writes
//! as many buckets, and a merge reads whatever partitions its stage has.
//!
//! [`EmberOptions`]: crate::config::EmberOptions

use std::sync::Arc;

use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::physical_plan::{
    Distribution, ExecutionPlan, ExecutionPlanProperties, StatisticsContext,
    replace_children_if_necessary,
};

use crate::balance::grouping_is_free;
use crate::joins::estimated_rows;

/// Default of `ember.one_task_scan_max_rows`: the most rows a stage's scan
/// may read for the stage to run as one task.
pub const ONE_TASK_SCAN_MAX_ROWS: usize = 64 << 10;

/// `input` (the input of an exchange, about to become a stage) with its scan
/// in one partition if it is a small scan under partition-wise operators
/// (see the module); `None` if it is not, or is in one partition already.
pub(crate) fn in_one_task(
    input: &Arc<dyn ExecutionPlan>,
    max_rows: usize,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    if max_rows == 0 || input.output_partitioning().partition_count() < 2 {
        return Ok(None);
    }
    if let Some(config) = small_scan(input, max_rows)? {
        return Ok(Some(whole(config)));
    }
    let [child] = input.children()[..] else {
        return Ok(None);
    };
    let partition_wise = child.output_partitioning().partition_count()
        == input.output_partitioning().partition_count()
        && matches!(
            input
                .input_distribution_requirements()
                .child_distribution(0),
            Some(Distribution::UnspecifiedDistribution)
        );
    if !partition_wise {
        return Ok(None);
    }
    let Some(child) = in_one_task(child, max_rows)? else {
        return Ok(None);
    };
    // An operator that makes its own partitions (a `ReplicateExec`) keeps
    // them over one input partition: its stage is left as it was.
    let node = replace_children_if_necessary(Arc::clone(input), vec![child])?;
    Ok((node.output_partitioning().partition_count() == 1).then_some(node))
}

/// The file scan config of `node` if it is a file scan whose files may be
/// grouped anew, with no limit, of at most `max_rows` rows by its
/// statistics.
pub(crate) fn small_scan(
    node: &Arc<dyn ExecutionPlan>,
    max_rows: usize,
) -> Result<Option<&FileScanConfig>> {
    let Some(config) = node
        .downcast_ref::<DataSourceExec>()
        .and_then(|s| s.data_source().downcast_ref::<FileScanConfig>())
    else {
        return Ok(None);
    };
    if config.limit.is_some() || !grouping_is_free(config) {
        return Ok(None);
    }
    let rows = estimated_rows(node, &StatisticsContext::new())?;
    Ok(rows.is_some_and(|r| r <= max_rows).then_some(config))
}

/// The scan of `config` with all of its files in one group.
pub(crate) fn whole(config: &FileScanConfig) -> Arc<dyn ExecutionPlan> {
    let files = config
        .file_groups
        .iter()
        .flat_map(|g| g.files().iter().cloned())
        .collect();
    let whole = FileScanConfigBuilder::from(config.clone())
        .with_file_groups(vec![FileGroup::new(files)])
        .build();
    DataSourceExec::from_data_source(whole)
}

#[cfg(test)]
mod tests {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;

    use super::*;
    use crate::CutOptions;
    use crate::test_util::{physical_plan, shown, small_and_big_tables, sorted_rows};

    /// Each stage's plan and task count, with scans of at most `max_rows`
    /// rows in one task.
    fn stages(plan: &Arc<dyn ExecutionPlan>, max_rows: usize) -> Vec<(String, usize)> {
        let options = CutOptions {
            one_task_scan_max_rows: max_rows,
            ..2.into()
        };
        crate::StageDag::cut(Arc::clone(plan), options)
            .unwrap()
            .stages()
            .iter()
            .map(|s| (shown(&s.plan), s.partitions))
            .collect()
    }

    /// The task counts of the stages that scan `table`.
    fn tasks_scanning(stages: &[(String, usize)], table: &str) -> Vec<usize> {
        let files = format!("{table}/part-0.parquet");
        stages
            .iter()
            .filter(|(plan, _)| plan.contains(&files))
            .map(|(_, tasks)| *tasks)
            .collect()
    }

    #[tokio::test]
    async fn a_filtered_small_build_side_is_one_task_with_the_same_answer() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = small_and_big_tables(dir.path()).await;
        let sql = "SELECT b.k, s.name FROM big b JOIN small s ON b.k % 400 = s.k \
                   WHERE s.name LIKE '%1%'";
        let plan = physical_plan(&ctx, sql).await;
        let on = stages(&plan, ONE_TASK_SCAN_MAX_ROWS);
        assert_eq!(tasks_scanning(&on, "small"), vec![1], "{on:#?}");
        assert_eq!(tasks_scanning(&on, "big"), vec![2], "{on:#?}");
        let off = stages(&plan, 0);
        assert_eq!(tasks_scanning(&off, "small"), vec![2], "{off:#?}");

        // The build side's merge over its scan in one partition answers
        // the same.
        let rewritten = Arc::clone(&plan)
            .transform_up(|node| {
                let Some(merge) = node.downcast_ref::<CoalescePartitionsExec>() else {
                    return Ok(Transformed::no(node));
                };
                let input = in_one_task(merge.input(), ONE_TASK_SCAN_MAX_ROWS)?
                    .expect("the filtered small scan in one partition");
                assert_eq!(input.output_partitioning().partition_count(), 1);
                Ok(Transformed::yes(replace_children_if_necessary(
                    node,
                    vec![input],
                )?))
            })
            .unwrap()
            .data;
        assert_ne!(shown(&rewritten), shown(&plan));
        assert_eq!(
            sorted_rows(&ctx, rewritten).await,
            sorted_rows(&ctx, plan).await
        );
    }

    #[tokio::test]
    async fn a_small_scan_under_a_hash_exchange_is_one_task_writing_every_bucket() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = small_and_big_tables(dir.path()).await;
        let plan = physical_plan(&ctx, "SELECT name, count(*) FROM small GROUP BY name").await;
        let on = stages(&plan, ONE_TASK_SCAN_MAX_ROWS);
        let scan = on
            .iter()
            .find(|(plan, _)| plan.contains("small/part-0.parquet"))
            .expect("a stage scanning small");
        assert_eq!(scan.1, 1, "{on:#?}");
        assert!(scan.0.contains("AggregateExec: mode=Partial"), "{on:#?}");
        assert!(
            scan.0.contains("hash([name@0], 2)"),
            "2 buckets still: {on:#?}"
        );
    }

    #[tokio::test]
    async fn an_operator_that_makes_its_own_partitions_keeps_its_stage() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = small_and_big_tables(dir.path()).await;
        let scan = physical_plan(&ctx, "SELECT k FROM small").await;
        assert_eq!(scan.output_partitioning().partition_count(), 2);
        assert!(
            in_one_task(&scan, ONE_TASK_SCAN_MAX_ROWS)
                .unwrap()
                .is_some()
        );
        let replicated: Arc<dyn ExecutionPlan> =
            Arc::new(crate::replicate::ReplicateExec::new(scan, 2));
        assert!(
            in_one_task(&replicated, ONE_TASK_SCAN_MAX_ROWS)
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn larger_scans_and_stages_that_read_other_stages_keep_their_tasks() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = small_and_big_tables(dir.path()).await;
        // 20,000 rows of `big` over 1,000.
        let plan = physical_plan(&ctx, "SELECT name, count(*) FROM big GROUP BY name").await;
        let on = stages(&plan, 1_000);
        assert_eq!(tasks_scanning(&on, "big"), vec![2], "{on:#?}");
        // The final aggregate's stage reads a shuffle, not a scan.
        assert!(on.iter().all(|(_, tasks)| *tasks == 2), "{on:#?}");
    }
}
