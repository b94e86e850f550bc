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

use datafusion::error::Result;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::{
    ExecutionPlan, ExecutionPlanProperties, replace_children_if_necessary,
};

use crate::one_task_scans::{small_scan, whole};
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
    transform_up_shared(plan, &mut |node| {
        let Some(merge) = node.downcast_ref::<CoalescePartitionsExec>() else {
            return Ok(node);
        };
        let scan = merge.input();
        if scan.output_partitioning().partition_count() < 2 {
            return Ok(node);
        }
        // At most MAX_ROWS_READ rows over all the tasks that read it.
        let Some(config) = small_scan(scan, MAX_ROWS_READ / partitions.max(1))? else {
            return Ok(node);
        };
        let whole = whole(config);
        replace_children_if_necessary(node, vec![whole])
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{physical_plan, shown, small_and_big_tables, sorted_rows};

    #[tokio::test]
    async fn a_small_bare_scan_is_read_whole_in_each_task_with_the_same_answer() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = small_and_big_tables(dir.path()).await;
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
        let ctx = small_and_big_tables(dir.path()).await;
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
        let ctx = small_and_big_tables(dir.path()).await;
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
