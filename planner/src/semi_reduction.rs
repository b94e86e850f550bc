//! Semi and anti joins with a small build side, without shuffling the
//! probe side.
//!
//! `L LEFT SEMI JOIN R` and `L LEFT ANTI JOIN R` emit rows of `L`, the
//! side DataFusion collects when it is small, and whether a row of `L` is
//! emitted depends on every row of `R`. In one process every probe thread
//! marks one shared bitmap; separate tasks cannot, so [`crate::joins`]
//! partitions such joins: both sides are shuffled by the key. When `R` is
//! large (TPC-H q4: 3.8 M `lineitem` rows against 57 k orders; q22: 1.5 M
//! `orders` against 19 k customers) that shuffle is most of the query.
//!
//! With no join filter, whether a row of `L` matches depends only on its
//! key, so each task of `R` can find the keys it matches on its own:
//!
//! ```text
//!   HashJoin(Partitioned, LeftSemi|LeftAnti, on l = k)
//!     Repartition(hash l) ── L ──────────────────────┐ one stage, read twice:
//!     Repartition(hash k)                            │ hashed by the join,
//!       HashJoin(Partitioned, LeftSemi, on k = r)    │ whole in every task
//!         Projection(l as k) ── Replicate ── (same) ─┘ by the semi join
//!         R
//! ```
//!
//! Every task of `R` builds a table of all of `L`'s keys, probes it with its
//! rows and, at the end of its partition, sends on the keys of the rows of
//! `L` it matched, each row once, so at most `L`'s rows per task (a
//! `LeftSemi` join; [`ReplicateExec`] gives each task the whole broadcast,
//! so the join ends with the task's own partition). The last
//! join meets `L` with those. `L`'s stage is cut once ([`crate::stages`]
//! cuts a shared exchange once) and read both hashed and whole. Only where
//! the build side would be broadcast for an inner join anyway
//! (`joins::broadcast_pays`), and not for null-aware anti joins (`NOT IN`,
//! whose answer depends on NULLs in `R`, not only on matches).

use std::sync::Arc;

use datafusion::common::{JoinType, NullEquality};
use datafusion::error::Result;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::joins::{HashJoinExec, JoinOnRef, PartitionMode};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties, Partitioning};

use crate::joins::hash_partitioned;
use crate::replicate::ReplicateExec;

/// Can `join` be reduced (see the module)? Only `CollectLeft` semi and
/// anti joins without a filter, not null-aware.
pub fn applies(join: &HashJoinExec) -> bool {
    matches!(join.join_type(), JoinType::LeftSemi | JoinType::LeftAnti)
        && join.filter().is_none()
        && !join.null_aware
        && *join.partition_mode() == PartitionMode::CollectLeft
}

/// The reduced form of `join`, one that [`applies`], with `build` its
/// build side without the merge DataFusion put on it; `None` where the
/// build side need not be shuffled to meet the probe side. The caller
/// decides whether the build side is small enough.
pub fn reduce(
    join: &HashJoinExec,
    build: Arc<dyn ExecutionPlan>,
    partitions: usize,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let left_keys: Vec<Arc<dyn PhysicalExpr>> =
        join.on().iter().map(|(l, _)| Arc::clone(l)).collect();
    let shared = hash_partitioned(build, left_keys.clone(), partitions)?;
    if shared.downcast_ref::<RepartitionExec>().is_none() {
        // Already split by the key (an aggregate's output): reading it whole
        // would run its last operators twice; shuffling the probe side is
        // what is left to save, and the partitioned join does no more.
        return Ok(None);
    }
    // The broadcast keys and the matched keys alike are columns
    // `__ember_key_<i>`, the i-th of their schema.
    let key_columns = key_columns(left_keys.len());
    // Each probe task: the broadcast's rows its rows match, each once, as
    // their keys.
    let probe = Arc::clone(join.right());
    let everywhere = ReplicateExec::new(
        Arc::clone(&shared),
        probe.output_partitioning().partition_count(),
    );
    let matched = keyed_join(
        Arc::new(everywhere),
        join.on(),
        probe,
        JoinType::LeftSemi,
        PartitionMode::Partitioned,
        join.null_equality(),
    )?;
    let matched = Arc::new(RepartitionExec::try_new(
        matched,
        Partitioning::Hash(key_columns.clone(), partitions),
    )?);
    let reduced = join
        .builder()
        .with_partition_mode(PartitionMode::Partitioned)
        .with_on(left_keys.into_iter().zip(key_columns).collect())
        .with_new_children(vec![shared, matched])?
        .recompute_properties()
        .build_exec()?;
    Ok(Some(reduced))
}

/// The name of the `i`-th column of a broadcast of join keys.
fn key_name(i: usize) -> String {
    format!("__ember_key_{i}")
}

/// Columns `__ember_key_0..n`, in that order.
fn key_columns(n: usize) -> Vec<Arc<dyn PhysicalExpr>> {
    (0..n)
        .map(|i| Arc::new(Column::new(&key_name(i), i)) as Arc<dyn PhysicalExpr>)
        .collect()
}

/// The rows of `probe` that match some row of `broadcast` (one partition)
/// on `pairs` (expressions over `broadcast`, over `probe`): a right semi
/// join that collects only the broadcast's keys.
pub(crate) fn rows_matching(
    broadcast: Arc<dyn ExecutionPlan>,
    pairs: JoinOnRef<'_>,
    probe: Arc<dyn ExecutionPlan>,
    null_equality: NullEquality,
) -> Result<Arc<dyn ExecutionPlan>> {
    keyed_join(
        broadcast,
        pairs,
        probe,
        JoinType::RightSemi,
        PartitionMode::CollectLeft,
        null_equality,
    )
}

/// A `join_type` join of `broadcast`'s keys, columns `__ember_key_<i>` (the
/// left side), with `probe` on `pairs`.
fn keyed_join(
    broadcast: Arc<dyn ExecutionPlan>,
    pairs: JoinOnRef<'_>,
    probe: Arc<dyn ExecutionPlan>,
    join_type: JoinType,
    mode: PartitionMode,
    null_equality: NullEquality,
) -> Result<Arc<dyn ExecutionPlan>> {
    let keys = ProjectionExec::try_new(
        pairs
            .iter()
            .enumerate()
            .map(|(i, (l, _))| (Arc::clone(l), key_name(i))),
        broadcast,
    )?;
    let on = key_columns(pairs.len())
        .into_iter()
        .zip(pairs)
        .map(|(k, (_, r))| (k, Arc::clone(r)))
        .collect();
    Ok(Arc::new(HashJoinExec::try_new(
        Arc::new(keys),
        probe,
        on,
        None,
        &join_type,
        None,
        mode,
        null_equality,
        false,
    )?))
}

#[cfg(test)]
mod tests {
    use datafusion::physical_plan::execution_plan::reset_plan_states;
    use datafusion::prelude::SessionContext;

    use crate::StageDag;
    use crate::joins::{JoinOptions, distribute_joins};
    use crate::test_util::{int_table, replicated_inputs_collected, shown, sorted_rows as rows};

    use super::*;

    fn context() -> SessionContext {
        let ctx = SessionContext::new_with_config(crate::config::distributed_session_config(2));
        let table = |partitions: Vec<Vec<Option<i32>>>| {
            int_table(&["a"], partitions.into_iter().map(|a| vec![a]).collect())
        };
        // Probe rows in two partitions, repeated keys and NULLs on both sides.
        let big = table(vec![
            (0..200).map(|i| Some(i % 60)).chain([None]).collect(),
            (100..300).map(|i| Some(i % 90)).collect(),
        ]);
        let small = table(vec![
            vec![Some(5), Some(5), Some(70), None],
            vec![Some(95), Some(-1), Some(89)],
        ]);
        ctx.register_table("big", big).unwrap();
        ctx.register_table("small", small).unwrap();
        ctx
    }

    #[tokio::test]
    async fn semi_and_anti_joins_match_where_the_probe_side_is_and_answer_the_same() {
        let ctx = context();
        for sql in [
            "SELECT a FROM small s WHERE EXISTS (SELECT 1 FROM big b WHERE b.a = s.a)",
            "SELECT a FROM small s WHERE NOT EXISTS (SELECT 1 FROM big b WHERE b.a = s.a)",
            "SELECT a FROM small WHERE a IN (SELECT a + 1 FROM big)",
        ] {
            let physical = || crate::test_util::physical_plan(&ctx, sql);
            let original = physical().await;
            let shipped = distribute_joins(Arc::clone(&original), 2).unwrap();
            let text = shown(&shipped);
            assert!(
                text.contains("mode=Partitioned, join_type=LeftSemi")
                    && text.contains("ReplicateExec")
                    && text.matches("mode=Partitioned, join_type=Left").count() == 2,
                "{sql}\n{text}"
            );
            // Run in one process, every task's part of each operator: the
            // same rows as DataFusion's own plan. (The shared exchange is
            // copied first, and the broadcast collected: in one process
            // each of an exchange's partitions can be read once.)
            let shipped =
                replicated_inputs_collected(&ctx, reset_plan_states(shipped).unwrap()).await;
            assert_eq!(
                rows(&ctx, shipped).await,
                rows(&ctx, original).await,
                "{sql}"
            );

            // Cut, the build side is one stage read by two: the matching
            // stage (whole) and the join's (hashed).
            let dag = StageDag::cut(physical().await, 2).unwrap();
            let readers: Vec<_> = dag
                .stages()
                .iter()
                .filter(|s| s.inputs.contains(&0))
                .map(|s| s.id)
                .collect();
            assert_eq!(readers.len(), 2, "{sql}\n{}", dag.display(false));

            // Off: both sides shuffled, as before.
            let off = JoinOptions {
                partitions: 2,
                reduce_semi_joins: false,
            };
            let text = shown(&distribute_joins(physical().await, off).unwrap());
            assert!(!text.contains("ReplicateExec"), "{sql}\n{text}");
        }
    }

    #[tokio::test]
    async fn not_in_and_joins_with_a_filter_are_left_to_the_partitioned_join() {
        let ctx = context();
        for sql in [
            // NULL-aware: a NULL anywhere in `big` empties the answer.
            "SELECT a FROM small WHERE a NOT IN (SELECT a FROM big)",
            "SELECT a FROM small s WHERE EXISTS (SELECT 1 FROM big b WHERE b.a = s.a AND b.a <> s.a + 1)",
        ] {
            let original = crate::test_util::physical_plan(&ctx, sql).await;
            let shipped = distribute_joins(Arc::clone(&original), 2).unwrap();
            let text = shown(&shipped);
            assert!(!text.contains("ReplicateExec"), "{sql}\n{text}");
            assert_eq!(
                rows(&ctx, shipped).await,
                rows(&ctx, original).await,
                "{sql}"
            );
        }
    }
}
