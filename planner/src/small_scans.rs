//! A small table that every task reads whole, read by each task itself.
//!
//! A join's build side that is only a scan (TPC-H q2 and q11: `supplier`'s
//! 10 k rows, no filter) is collected whole by every join task. Cut as
//! usual, the scan is a stage of its own: its tasks read the files, write
//! them out pass-through, and every join task fetches all of it, after a
//! barrier and one more launch. When the table is small, reading its files
//! in each join task costs less than that stage:
//!
//! ```text
//!   HashJoin(CollectLeft)                  HashJoin(CollectLeft)
//!     Coalesce                               Coalesce
//!       Scan(files in 2 groups)    ──▶         Scan(every file, 1 group)
//!     probe                                  probe
//! ```
//!
//! Only a bare scan (no filter above it, whose cost every task would then
//! pay: q16's `LIKE` on `supplier.s_comment` took longer in each task than
//! the stage it saved) of at most [`MAX_ROWS_READ`] rows read by all tasks
//! together, its size known from file statistics.

use std::sync::Arc;

use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::{
    ExecutionPlan, ExecutionPlanProperties, StatisticsContext, replace_children_if_necessary,
};

use crate::balance::grouping_is_free;
use crate::joins::estimated_rows;
use crate::stages::transform_up_shared;

/// Most rows a small scan may cost all the tasks that read it together
/// (its rows times `partitions`, the most tasks that read it).
pub const MAX_ROWS_READ: usize = 128 << 10;

/// Turns every merge straight over a small bare file scan into a merge over
/// one partition of the whole scan (see the module), for plans whose
/// stages run in at most `partitions` tasks.
pub fn read_small_scans_in_task(
    plan: Arc<dyn ExecutionPlan>,
    partitions: usize,
) -> Result<Arc<dyn ExecutionPlan>> {
    let stats = StatisticsContext::new();
    transform_up_shared(plan, &mut |node| {
        let Some(merge) = node.downcast_ref::<CoalescePartitionsExec>() else {
            return Ok(node);
        };
        let scan = merge.input();
        let Some(config) = scan
            .downcast_ref::<DataSourceExec>()
            .and_then(|s| s.data_source().downcast_ref::<FileScanConfig>())
        else {
            return Ok(node);
        };
        if scan.output_partitioning().partition_count() < 2
            || config.limit.is_some()
            || !grouping_is_free(config)
        {
            return Ok(node);
        }
        let rows = estimated_rows(scan, &stats)?;
        if rows.is_none_or(|r| r.saturating_mul(partitions.max(1)) > MAX_ROWS_READ) {
            return Ok(node);
        }
        let files = config
            .file_groups
            .iter()
            .flat_map(|g| g.files().iter().cloned())
            .collect();
        let whole = FileScanConfigBuilder::from(config.clone())
            .with_file_groups(vec![FileGroup::new(files)])
            .build();
        let whole = DataSourceExec::from_data_source(whole) as Arc<dyn ExecutionPlan>;
        replace_children_if_necessary(node, vec![whole])
    })
}

#[cfg(test)]
mod tests {
    use arrow::array::{Int64Array, RecordBatch, StringArray};
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::prelude::{ParquetReadOptions, SessionContext};

    use super::*;
    use crate::config::distributed_session_config;
    use crate::test_util::{physical_plan, shown, sorted_rows};

    /// `files` Parquet files of `rows` rows each: `k` (0.. across the
    /// files) and `name`.
    fn write_table(dir: &std::path::Path, files: i64, rows: i64) {
        std::fs::create_dir_all(dir).unwrap();
        for f in 0..files {
            let k = Int64Array::from_iter_values(f * rows..(f + 1) * rows);
            let name =
                StringArray::from_iter_values((0..rows).map(|i| format!("n{}", f * rows + i)));
            let batch = RecordBatch::try_from_iter([
                ("k", Arc::new(k) as _),
                ("name", Arc::new(name) as _),
            ])
            .unwrap();
            let file = std::fs::File::create(dir.join(format!("part-{f}.parquet"))).unwrap();
            let mut writer = ArrowWriter::try_new(file, batch.schema(), None).unwrap();
            writer.write(&batch).unwrap();
            writer.close().unwrap();
        }
    }

    async fn context(dir: &std::path::Path) -> SessionContext {
        write_table(&dir.join("small"), 4, 100);
        write_table(&dir.join("big"), 4, 5_000);
        let ctx = SessionContext::new_with_config(distributed_session_config(2));
        for t in ["small", "big"] {
            let path = dir.join(t);
            ctx.register_parquet(t, path.to_str().unwrap(), ParquetReadOptions::default())
                .await
                .unwrap();
        }
        ctx
    }

    #[tokio::test]
    async fn a_small_bare_scan_is_read_whole_in_each_task_with_the_same_answer() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(dir.path()).await;
        let sql = "SELECT b.k, s.name FROM big b JOIN small s ON b.k % 400 = s.k";
        let original = physical_plan(&ctx, sql).await;
        let rewritten = read_small_scans_in_task(Arc::clone(&original), 2).unwrap();
        let text = shown(&rewritten);
        assert!(text.contains("CollectLeft"), "{text}");
        assert!(text.contains("file_groups={1 group"), "{text}");
        // Cut with the rewrite off, the scan is a stage; on, it is not.
        let off = crate::CutOptions {
            small_scans_in_task: false,
            ..2.into()
        };
        let stages = |options: crate::CutOptions| {
            crate::StageDag::cut(Arc::clone(&original), options)
                .unwrap()
                .stages()
                .len()
        };
        assert_eq!((stages(off), stages(2.into())), (2, 1), "{text}");
        assert_eq!(
            sorted_rows(&ctx, rewritten).await,
            sorted_rows(&ctx, original).await
        );
    }

    #[tokio::test]
    async fn filtered_or_larger_scans_keep_their_stage() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(dir.path()).await;
        for (sql, partitions) in [
            // A filter every task would evaluate.
            (
                "SELECT b.k, s.name FROM big b JOIN small s ON b.k % 400 = s.k WHERE s.name LIKE '%1%'",
                2,
            ),
            // 400 rows read by 1,000 tasks: more than MAX_ROWS_READ.
            (
                "SELECT b.k, s.name FROM big b JOIN small s ON b.k % 400 = s.k",
                1_000,
            ),
        ] {
            let original = physical_plan(&ctx, sql).await;
            let rewritten = read_small_scans_in_task(Arc::clone(&original), partitions).unwrap();
            assert_eq!(shown(&rewritten), shown(&original), "{sql}");
        }
    }

    #[tokio::test]
    async fn a_scan_standing_in_two_places_stays_one_node() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(dir.path()).await;
        let original = physical_plan(
            &ctx,
            "SELECT b.k, s.name FROM big b JOIN small s ON b.k % 400 = s.k",
        )
        .await;
        let join = original
            .downcast_ref::<datafusion::physical_plan::joins::HashJoinExec>()
            .expect("a hash join at the root");
        // The merged small side twice, as one node (an exchange
        // `semi_reduction` reads both whole and hashed stands so).
        let merged = Arc::clone(join.left());
        let union =
            datafusion::physical_plan::union::UnionExec::try_new(vec![Arc::clone(&merged), merged])
                .unwrap();
        let rewritten = read_small_scans_in_task(union, 2).unwrap();
        let children = rewritten.children();
        assert!(
            shown(children[0]).contains("file_groups={1 group"),
            "{}",
            shown(&rewritten)
        );
        assert!(
            Arc::ptr_eq(children[0], children[1]),
            "{}",
            shown(&rewritten)
        );
    }
}
