//! Making joins that collect their build side safe to split into tasks.
//!
//! A `CollectLeft` hash join (and every nested-loop join) builds the whole
//! left side in each task and probes it with one partition of the right side.
//! For inner and right-preserving joins each task's output is independent and
//! the union is right. But joins that also emit *build-side* rows (left outer,
//! full, left semi/anti/mark) let the last probe partition of the process
//! emit the unmatched or matched left rows; DataFusion counts probe partitions
//! per process, and a task runs only one, so those rows would never be
//! emitted (or be emitted once per task).
//!
//! [`distribute_joins`] rewrites such joins before the plan is cut:
//! * hash joins become `Partitioned` joins over hash-repartitioned inputs, so
//!   each task owns a disjoint slice of both sides;
//! * null-aware anti joins (`NOT IN`), nested-loop joins and piecewise merge
//!   joins, which cannot be partitioned by key, get a single-partition probe
//!   side, so one task sees every probe row.
//!
//! It also decides which collected build sides are worth broadcasting. A
//! broadcast sends the build side to every task and each task hashes all of
//! it; a partitioned join shuffles both sides once. Build sides up to
//! [`SMALL_BUILD_ROWS`] rows and [`SMALL_BUILD_BYTES`] bytes are always
//! broadcast. Larger ones (up to the session's
//! `hash_join_single_partition_threshold*`) only while the probe side is
//! [`PROBE_PER_COPY`] times larger than the copies, estimated: a 2.3 M-row
//! build side is worth broadcasting to 2 tasks against 60 M `lineitem` rows
//! (TPC-H q5 at SF 10), not against the 1.8 M rows of q7 at SF 1, nor the
//! few rows of a semi join's output (q21).

use std::sync::Arc;

use datafusion::common::JoinType;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result;
use datafusion::physical_expr::{Distribution, PartitioningSatisfaction, PhysicalExpr};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::joins::{
    HashJoinExec, NestedLoopJoinExec, PartitionMode, PiecewiseMergeJoinExec,
};
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{
    ExecutionPlan, ExecutionPlanProperties, Partitioning, StatisticsArgs, StatisticsContext,
    replace_children_if_necessary,
};

/// Does this join type emit rows of the build (left) side?
fn emits_build_rows(join_type: &JoinType) -> bool {
    matches!(
        join_type,
        JoinType::Left
            | JoinType::Full
            | JoinType::LeftSemi
            | JoinType::LeftAnti
            | JoinType::LeftMark
    )
}

fn single_partition(plan: Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
    if plan.output_partitioning().partition_count() <= 1 {
        plan
    } else {
        Arc::new(CoalescePartitionsExec::new(plan))
    }
}

/// Strips the merge DataFusion put on a collected build side.
fn unmerged(plan: &Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
    match plan.downcast_ref::<CoalescePartitionsExec>() {
        Some(c) if c.fetch().is_none() => Arc::clone(c.input()),
        _ => Arc::clone(plan),
    }
}

/// `plan` split into `partitions` by the hash of `keys`: as it is when it
/// already is (e.g. an aggregate's output grouped by the keys), otherwise
/// through a repartition, which becomes a shuffle.
pub(crate) fn hash_partitioned(
    plan: Arc<dyn ExecutionPlan>,
    keys: Vec<Arc<dyn PhysicalExpr>>,
    partitions: usize,
) -> Result<Arc<dyn ExecutionPlan>> {
    let current = plan.output_partitioning();
    let required = Distribution::KeyPartitioned(keys.clone());
    if matches!(current, Partitioning::Hash(_, n) if *n == partitions)
        && current.satisfaction(&required, plan.equivalence_properties(), false)
            == PartitioningSatisfaction::Exact
    {
        return Ok(plan);
    }
    Ok(Arc::new(RepartitionExec::try_new(
        plan,
        Partitioning::Hash(keys, partitions),
    )?))
}

/// How [`distribute_joins`] distributes joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinOptions {
    /// The session's target partition count: how many ways the shuffles
    /// joins need split their inputs.
    pub partitions: usize,
    /// Semi and anti joins with a small build side find their matches
    /// where the probe side is, instead of shuffling it
    /// ([`crate::semi_reduction`]).
    pub reduce_semi_joins: bool,
}

impl From<usize> for JoinOptions {
    /// `partitions` with every rewrite on.
    fn from(partitions: usize) -> Self {
        Self {
            partitions,
            reduce_semi_joins: true,
        }
    }
}

/// Rewrites every join whose build-side output would be wrong when its probe
/// partitions run as separate tasks.
pub fn distribute_joins(
    plan: Arc<dyn ExecutionPlan>,
    options: impl Into<JoinOptions>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let mut options = options.into();
    options.partitions = options.partitions.max(1);
    plan.transform_up(|node| {
        let rewritten = if let Some(join) = node.downcast_ref::<HashJoinExec>() {
            rewrite_hash_join(join, options)?
        } else if let Some((join_type, left, right)) = collecting_join(&node)
            && emits_build_rows(&join_type)
            && right.output_partitioning().partition_count() > 1
        {
            let right = single_partition(Arc::clone(right));
            Some(replace_children_if_necessary(
                Arc::clone(&node),
                vec![Arc::clone(left), right],
            )?)
        } else {
            None
        };
        Ok(match rewritten {
            Some(plan) => Transformed::yes(plan),
            None => Transformed::no(node),
        })
    })
    .map(|t| t.data)
}

/// A join's type, left (build) and right (probe) input.
type JoinParts<'a> = (
    JoinType,
    &'a Arc<dyn ExecutionPlan>,
    &'a Arc<dyn ExecutionPlan>,
);

/// A join without keys to partition by that builds its whole left side in
/// every task.
fn collecting_join(node: &Arc<dyn ExecutionPlan>) -> Option<JoinParts<'_>> {
    if let Some(join) = node.downcast_ref::<NestedLoopJoinExec>() {
        return Some((*join.join_type(), join.left(), join.right()));
    }
    node.downcast_ref::<PiecewiseMergeJoinExec>()
        .map(|join| (join.join_type(), join.buffered(), join.streamed()))
}

/// Build sides this small (estimated rows and bytes) are always broadcast.
pub const SMALL_BUILD_ROWS: usize = 1 << 20;

/// See [`SMALL_BUILD_ROWS`].
pub const SMALL_BUILD_BYTES: usize = 32 << 20;

/// How many probe rows (and bytes) a copy of a build row must save to be
/// worth sending. A copy is fetched and hashed into every task's table; a
/// shuffled row is written, fetched and probed once. Measured on TPC-H
/// (2 tasks): q7 at SF 1 (1.5 M `orders` against 1.8 M `lineitem` rows)
/// took 0.35 s broadcast and 0.23 s partitioned, q5 at SF 10 (2.3 M
/// against 60 M) 1.8 s and 3.2 s.
pub const PROBE_PER_COPY: usize = 4;

/// DataFusion's estimate of the rows `plan` produces, if it has one.
pub(crate) fn estimated_rows(
    plan: &Arc<dyn ExecutionPlan>,
    stats: &StatisticsContext,
) -> Result<Option<usize>> {
    Ok(stats
        .compute(plan.as_ref(), &StatisticsArgs::new())?
        .num_rows
        .get_value()
        .copied())
}

/// Estimated size of a join input.
#[derive(Debug, Clone, Copy)]
struct Size {
    rows: Option<usize>,
    bytes: Option<usize>,
}

impl Size {
    /// From DataFusion's statistics; bytes from the rows and the schema's
    /// row width where DataFusion has no byte estimate (join outputs).
    fn of(plan: &Arc<dyn ExecutionPlan>, stats: &StatisticsContext) -> Result<Self> {
        let s = stats.compute(plan.as_ref(), &StatisticsArgs::new())?;
        let rows = s.num_rows.get_value().copied();
        let width = plan
            .schema()
            .fields()
            .iter()
            .map(|f| f.data_type().primitive_width().unwrap_or(24))
            .sum::<usize>();
        let bytes = s
            .total_byte_size
            .get_value()
            .copied()
            .or_else(|| rows.map(|r| r.saturating_mul(width)));
        Ok(Self { rows, bytes })
    }
}

/// Is broadcasting a collected build side of size `build` to `partitions`
/// tasks cheaper than shuffling it and the probe side? Each size known on
/// both sides must say so; nothing known keeps DataFusion's choice.
fn broadcast_pays(build: Size, probe: Size, partitions: usize) -> bool {
    let small = |value: Option<usize>, limit: usize| value.is_none_or(|v| v <= limit);
    if small(build.rows, SMALL_BUILD_ROWS) && small(build.bytes, SMALL_BUILD_BYTES) {
        return true;
    }
    let copies = partitions.saturating_sub(1).saturating_mul(PROBE_PER_COPY);
    let cheaper = |b: Option<usize>, p: Option<usize>| match (b, p) {
        (Some(b), Some(p)) => b.saturating_mul(copies) < p,
        _ => true,
    };
    cheaper(build.rows, probe.rows) && cheaper(build.bytes, probe.bytes)
}

fn rewrite_hash_join(
    join: &HashJoinExec,
    options: JoinOptions,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let partitions = options.partitions;
    if *join.partition_mode() != PartitionMode::CollectLeft
        || join.right().output_partitioning().partition_count() <= 1
    {
        return Ok(None);
    }
    let reducible = options.reduce_semi_joins && crate::semi_reduction::applies(join);
    if !emits_build_rows(join.join_type()) || reducible {
        let stats = StatisticsContext::new();
        let build = Size::of(join.left(), &stats)?;
        let probe = Size::of(join.right(), &stats)?;
        if broadcast_pays(build, probe, partitions) {
            if !reducible {
                return Ok(None);
            }
            if let Some(reduced) =
                crate::semi_reduction::reduce(join, unmerged(join.left()), partitions)?
            {
                return Ok(Some(reduced));
            }
        }
    }
    let builder = if join.null_aware {
        // NOT IN needs every probe row in one place to see a NULL.
        join.builder().with_new_children(vec![
            Arc::clone(join.left()),
            single_partition(Arc::clone(join.right())),
        ])?
    } else {
        let left_keys = join.on().iter().map(|(l, _)| Arc::clone(l)).collect();
        let right_keys = join.on().iter().map(|(_, r)| Arc::clone(r)).collect();
        let left = hash_partitioned(unmerged(join.left()), left_keys, partitions)?;
        let right = hash_partitioned(Arc::clone(join.right()), right_keys, partitions)?;
        join.builder()
            .with_partition_mode(PartitionMode::Partitioned)
            .with_new_children(vec![left, right])?
    };
    Ok(Some(builder.recompute_properties().build_exec()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sized(rows: Option<usize>, bytes: Option<usize>) -> Size {
        Size { rows, bytes }
    }

    #[test]
    fn large_build_sides_are_broadcast_only_against_larger_probe_sides() {
        let m = 1 << 20;
        // Small build sides always go, whatever the probe side.
        assert!(broadcast_pays(
            sized(Some(m), Some(m)),
            sized(Some(10), None),
            8
        ));
        // TPC-H q5 at SF 10: 2.3 M rows of 16 bytes against 60 M lineitem
        // rows of 48.
        let build = sized(Some(2_300_000), Some(2_300_000 * 16));
        let lineitem = sized(Some(60_000_000), Some(60_000_000 * 48));
        assert!(broadcast_pays(build, lineitem, 2));
        // ... but not to 32 tasks, nor against a probe side not much larger
        // (q7 at SF 1), nor a small one (q21).
        assert!(!broadcast_pays(build, lineitem, 32));
        assert!(!broadcast_pays(build, sized(Some(2_300_000 * 3), None), 2));
        assert!(!broadcast_pays(build, sized(Some(500_000), None), 2));
        // Wide build rows against narrow probe rows (q18 at SF 1).
        let wide = sized(Some(1_500_000), Some(1_500_000 * 60));
        assert!(!broadcast_pays(
            wide,
            sized(Some(6_500_000), Some(6_500_000 * 24)),
            2
        ));
        // What is known on one side only does not count; nothing known keeps
        // the broadcast.
        let build = sized(None, Some(100 * m));
        assert!(!broadcast_pays(build, sized(Some(m), Some(200 * m)), 2));
        assert!(broadcast_pays(build, sized(Some(m), Some(500 * m)), 2));
        assert!(broadcast_pays(build, sized(None, None), 2));
        // One task: nothing to copy.
        assert!(broadcast_pays(build, sized(None, Some(m)), 1));
    }

    /// A left join collecting a small table, probed by an aggregate's
    /// output: partitioned for its unmatched rows, and the aggregate's
    /// output, already split by the key, is not split again.
    #[tokio::test]
    async fn a_side_already_partitioned_on_the_keys_is_not_shuffled_again() {
        use arrow::array::{ArrayRef, Int32Array, RecordBatch};
        use datafusion::datasource::MemTable;
        use datafusion::physical_plan::displayable;
        use datafusion::prelude::SessionContext;

        let ctx = SessionContext::new_with_config(crate::config::distributed_session_config(2));
        let batch = |a: Vec<i32>| {
            RecordBatch::try_from_iter([("a", Arc::new(Int32Array::from(a)) as ArrayRef)]).unwrap()
        };
        let big = MemTable::try_new(
            batch(vec![]).schema(),
            vec![
                vec![batch((0..100).collect())],
                vec![batch((50..150).collect())],
            ],
        )
        .unwrap();
        let small =
            MemTable::try_new(batch(vec![]).schema(), vec![vec![batch(vec![7, 500])]]).unwrap();
        ctx.register_table("big", Arc::new(big)).unwrap();
        ctx.register_table("small", Arc::new(small)).unwrap();
        let sql = "SELECT s.a, r.c FROM small s LEFT JOIN \
                   (SELECT a, count(*) AS c FROM big GROUP BY a) r ON s.a = r.a";
        let physical = || crate::test_util::physical_plan(&ctx, sql);
        let shipped = distribute_joins(physical().await, 2).unwrap();
        let text = displayable(shipped.as_ref()).indent(false).to_string();
        assert!(text.contains("mode=Partitioned, join_type=Left"), "{text}");
        // One repartition for the small side, one under the aggregate.
        assert_eq!(
            text.matches("RepartitionExec: partitioning=Hash").count(),
            2,
            "{text}"
        );
        // Against a fresh plan: the shipped one shares the original's operators.
        let rows = crate::test_util::sorted_rows;
        assert_eq!(
            rows(&ctx, shipped).await,
            rows(&ctx, physical().await).await
        );
    }
}
