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

use std::sync::Arc;

use datafusion::common::JoinType;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::joins::{
    HashJoinExec, NestedLoopJoinExec, PartitionMode, PiecewiseMergeJoinExec,
};
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{
    ExecutionPlan, ExecutionPlanProperties, Partitioning, replace_children_if_necessary,
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

/// Rewrites every join whose build-side output would be wrong when its probe
/// partitions run as separate tasks. `partitions` is the session's target
/// partition count.
pub fn distribute_joins(
    plan: Arc<dyn ExecutionPlan>,
    partitions: usize,
) -> Result<Arc<dyn ExecutionPlan>> {
    let partitions = partitions.max(1);
    plan.transform_up(|node| {
        let rewritten = if let Some(join) = node.downcast_ref::<HashJoinExec>() {
            rewrite_hash_join(join, partitions)?
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

fn rewrite_hash_join(
    join: &HashJoinExec,
    partitions: usize,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let unsafe_when_split = *join.partition_mode() == PartitionMode::CollectLeft
        && emits_build_rows(join.join_type())
        && join.right().output_partitioning().partition_count() > 1;
    if !unsafe_when_split {
        return Ok(None);
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
        let left: Arc<dyn ExecutionPlan> = Arc::new(RepartitionExec::try_new(
            unmerged(join.left()),
            Partitioning::Hash(left_keys, partitions),
        )?);
        let right: Arc<dyn ExecutionPlan> = Arc::new(RepartitionExec::try_new(
            Arc::clone(join.right()),
            Partitioning::Hash(right_keys, partitions),
        )?);
        join.builder()
            .with_partition_mode(PartitionMode::Partitioned)
            .with_new_children(vec![left, right])?
    };
    Ok(Some(builder.recompute_properties().build_exec()?))
}
