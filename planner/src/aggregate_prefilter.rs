//! An aggregate fed only the rows of groups a join can keep.
//!
//! A correlated subquery decorrelates into an aggregate over a whole table,
//! joined back by the group key: TPC-H q2 finds `min(ps_supplycost)` for
//! every part (160 k groups of European suppliers) to keep the few hundred
//! parts of the outer query; q17 averages `l_quantity` over all 6 M
//! `lineitem` rows (SF 1) for 200 k parts to keep about 200. Where the
//! aggregate is the right side of a join that drops unmatched right rows
//! (inner, left, left semi or anti, right semi) and the left side is small,
//! a group whose key is not among the left side's keys gives no output. So
//! the aggregate's input can first be cut to the rows whose group key is
//! among them, with the left side's keys broadcast:
//!
//! ```text
//!   HashJoin(on l = k)
//!     L ─ (collected, or its hash exchange) ───┐ one stage, read twice
//!     Aggregate(Final, group by k)             │
//!       Repartition(hash k)                    │
//!         Aggregate(Partial, group by k)       │
//!           HashJoin(CollectLeft, RightSemi, on l = k)  (new)
//!             Projection(l) ── L, whole ───────┘
//!             X
//! ```
//!
//! Each group keeps all of its rows or none (they share the key), so every
//! surviving group aggregates exactly what it did. The aggregate's stage
//! now waits for the left side's; in exchange, the aggregation, its shuffle
//! and the final aggregate see the matching groups only. Only where the
//! left side is estimated at most [`BROADCAST_ROWS`] rows and a quarter of
//! the aggregate's input (both known), and, when the join is partitioned,
//! where the left side has an exchange of its own to read whole (reading
//! an aggregate's output whole would run it twice).

use std::sync::Arc;

use datafusion::common::JoinType;
use datafusion::error::Result;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::{HashJoinExec, JoinOn, JoinOnRef, PartitionMode};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::{
    ExecutionPlan, ExecutionPlanProperties, Partitioning, StatisticsContext,
    replace_children_if_necessary,
};

use crate::config::BROADCAST_ROWS;
use crate::joins::estimated_rows;
use crate::semi_reduction::rows_matching;
use crate::stages::transform_up_shared;

/// Largest share of the aggregate's input rows the broadcast may have.
const MAX_SHARE: usize = 4;

/// Feeds every aggregate whose groups a join above keeps only when their
/// key is on the join's small left side the rows of those groups alone
/// (see the module).
pub fn prefilter_aggregates(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    let stats = StatisticsContext::new();
    // Found first, on the plan as it is: each aggregate to filter, by
    // pointer, with the broadcast and the key pairs.
    let mut found: Vec<Prefilter> = vec![];
    find(&plan, &stats, &mut found)?;
    // A broadcast that holds an aggregate to be filtered would change
    // before its new reader is made: left alone.
    let aggregates: Vec<_> = found.iter().map(|f| Arc::clone(&f.aggregate)).collect();
    found.retain(|f| !aggregates.iter().any(|a| contains(&f.broadcast, a)));
    if found.is_empty() {
        return Ok(plan);
    }
    // Then put in bottom-up; nothing above an aggregate changes before it is
    // reached, so the pointers found still match. (An aggregate found above
    // another one found changes with it and is left as it is.)
    transform_up_shared(plan, &mut |node| {
        let Some(p) = found.iter().find(|p| Arc::ptr_eq(&p.aggregate, &node)) else {
            return Ok(node);
        };
        let input = Arc::clone(node.children()[0]);
        let matching = rows_matching(Arc::clone(&p.broadcast), &p.pairs, input, p.null_equality)?;
        replace_children_if_necessary(node, vec![matching])
    })
}

/// One aggregate whose input is to be filtered.
struct Prefilter {
    aggregate: Arc<dyn ExecutionPlan>,
    /// The join's left side, whole (one partition).
    broadcast: Arc<dyn ExecutionPlan>,
    /// (key over the broadcast, group expression over the aggregate's input)
    pairs: JoinOn,
    null_equality: datafusion::common::NullEquality,
}

fn find(
    plan: &Arc<dyn ExecutionPlan>,
    stats: &StatisticsContext,
    found: &mut Vec<Prefilter>,
) -> Result<()> {
    if let Some(join) = plan.downcast_ref::<HashJoinExec>()
        && let Some(p) = prefilter(join, stats)?
        && !found
            .iter()
            .any(|f| Arc::ptr_eq(&f.aggregate, &p.aggregate))
    {
        found.push(p);
    }
    for child in plan.children() {
        find(child, stats, found)?;
    }
    Ok(())
}

/// The prefilter `join` allows, if any.
fn prefilter(join: &HashJoinExec, stats: &StatisticsContext) -> Result<Option<Prefilter>> {
    // Joins whose unmatched right rows give no output (a null-aware anti
    // join's answer depends on the NULLs of its right side).
    let drops_unmatched_right = matches!(
        join.join_type(),
        JoinType::Inner
            | JoinType::Left
            | JoinType::LeftSemi
            | JoinType::LeftAnti
            | JoinType::LeftMark
            | JoinType::RightSemi
    ) && !join.null_aware;
    if !drops_unmatched_right {
        return Ok(None);
    }
    // The left side whole, in one partition: collected already, or read
    // whole from the exchange that splits it (one stage, read twice).
    let broadcast: Arc<dyn ExecutionPlan> = match join.partition_mode() {
        PartitionMode::CollectLeft if join.left().output_partitioning().partition_count() == 1 => {
            Arc::clone(join.left())
        }
        PartitionMode::Partitioned
            if join
                .left()
                .downcast_ref::<RepartitionExec>()
                .is_some_and(|r| matches!(r.partitioning(), Partitioning::Hash(..))) =>
        {
            Arc::new(CoalescePartitionsExec::new(Arc::clone(join.left())))
        }
        _ => return Ok(None),
    };
    let mut aggregate: Option<Arc<dyn ExecutionPlan>> = None;
    let mut pairs = vec![];
    for (l, r) in join.on() {
        let Some(c) = r.downcast_ref::<Column>() else {
            continue;
        };
        let Some((agg, group)) = group_of(join.right(), c.index()) else {
            continue;
        };
        match &aggregate {
            Some(a) if !Arc::ptr_eq(a, &agg) => continue,
            _ => aggregate = Some(agg),
        }
        pairs.push((Arc::clone(l), group));
    }
    let Some(aggregate) = aggregate else {
        return Ok(None);
    };
    // Fed by these keys already (a semi join `semi_reduction` put there).
    if matched_already(aggregate.children()[0], &broadcast, &pairs) {
        return Ok(None);
    }
    let (Some(broadcast_rows), Some(input_rows)) = (
        estimated_rows(join.left(), stats)?,
        estimated_rows(aggregate.children()[0], stats)?,
    ) else {
        return Ok(None);
    };
    if broadcast_rows > BROADCAST_ROWS || broadcast_rows.saturating_mul(MAX_SHARE) > input_rows {
        return Ok(None);
    }
    Ok(Some(Prefilter {
        aggregate,
        broadcast,
        pairs,
        null_equality: join.null_equality(),
    }))
}

/// Column `index` of `plan` traced down to a group column of an aggregate:
/// that aggregate (the one over the raw rows: partial, or single) and its
/// group expression over its input. Only through operators that pass
/// columns and groups through whole (projections of plain columns,
/// exchanges, merges, sorts, filters without projection).
fn group_of(
    plan: &Arc<dyn ExecutionPlan>,
    index: usize,
) -> Option<(Arc<dyn ExecutionPlan>, Arc<dyn PhysicalExpr>)> {
    let mut plan = Arc::clone(plan);
    let mut index = index;
    loop {
        // A limit on the way keeps some groups of all: with fewer rows in,
        // it would keep others.
        if plan.fetch().is_some() {
            return None;
        }
        if let Some(p) = plan.downcast_ref::<ProjectionExec>() {
            index = p.expr().get(index)?.expr.downcast_ref::<Column>()?.index();
        } else if let Some(a) = plan.downcast_ref::<AggregateExec>() {
            let groups = a.group_expr();
            if !groups.is_single() || index >= groups.expr().len() || a.limit_options().is_some() {
                return None;
            }
            let group = &groups.expr()[index].0;
            match a.mode() {
                AggregateMode::Partial
                | AggregateMode::Single
                | AggregateMode::SinglePartitioned => {
                    return Some((Arc::clone(&plan), Arc::clone(group)));
                }
                AggregateMode::Final | AggregateMode::FinalPartitioned => {
                    index = group.downcast_ref::<Column>()?.index();
                }
                _ => return None,
            }
        } else {
            // Operators that pass every column through as it is.
            let passes = plan.downcast_ref::<RepartitionExec>().is_some()
                || plan.downcast_ref::<CoalescePartitionsExec>().is_some()
                || plan.downcast_ref::<SortExec>().is_some()
                || plan
                    .downcast_ref::<FilterExec>()
                    .is_some_and(|f| f.projection().is_none());
            if !passes {
                return None;
            }
        }
        plan = Arc::clone(plan.children().first()?);
    }
}

/// Whether `input` is already cut to the rows matching `pairs` against
/// `broadcast`: a collected right semi join on the same keys of the same
/// left side, read whole.
fn matched_already(
    input: &Arc<dyn ExecutionPlan>,
    broadcast: &Arc<dyn ExecutionPlan>,
    pairs: JoinOnRef<'_>,
) -> bool {
    let Some(semi) = input.downcast_ref::<HashJoinExec>() else {
        return false;
    };
    let Some(keys) = semi.left().downcast_ref::<ProjectionExec>() else {
        return false;
    };
    let same_side = |a: &Arc<dyn ExecutionPlan>, b: &Arc<dyn ExecutionPlan>| {
        Arc::ptr_eq(a, b)
            || (a.downcast_ref::<CoalescePartitionsExec>().is_some()
                && b.downcast_ref::<CoalescePartitionsExec>().is_some()
                && Arc::ptr_eq(a.children()[0], b.children()[0]))
    };
    *semi.join_type() == JoinType::RightSemi
        && semi.partition_mode() == &PartitionMode::CollectLeft
        && same_side(keys.input(), broadcast)
        && semi.on().len() == pairs.len()
        && semi.on().iter().zip(pairs).all(|((k, r), (l, group))| {
            r.as_ref() == group.as_ref()
                && k.downcast_ref::<Column>()
                    .and_then(|k| keys.expr().get(k.index()))
                    .is_some_and(|key| key.expr.as_ref() == l.as_ref())
        })
}

/// Whether `node` is `plan` or below it.
fn contains(plan: &Arc<dyn ExecutionPlan>, node: &Arc<dyn ExecutionPlan>) -> bool {
    Arc::ptr_eq(plan, node) || plan.children().into_iter().any(|c| contains(c, node))
}

#[cfg(test)]
mod tests {
    use datafusion::physical_plan::execution_plan::reset_plan_states;
    use datafusion::prelude::SessionContext;

    use crate::StageDag;
    use crate::joins::distribute_joins;
    use crate::test_util::{int_table, physical_plan, shown, sorted_rows as rows};

    use super::*;

    /// `big` (k, v): 2,000 rows of 500 keys; `small` (k, v): 6 rows, keys
    /// among them, one absent from `big`, and a NULL.
    fn context() -> SessionContext {
        let ctx = SessionContext::new_with_config(crate::config::distributed_session_config(2));
        // Each partition as (k, v) rows.
        let table = |partitions: Vec<Vec<(Option<i32>, Option<i32>)>>| {
            let columns = |rows: Vec<(Option<i32>, Option<i32>)>| {
                let (k, v): (Vec<_>, Vec<_>) = rows.into_iter().unzip();
                vec![k, v]
            };
            int_table(&["k", "v"], partitions.into_iter().map(columns).collect())
        };
        let big = table(vec![
            (0..1000).map(|i| (Some(i % 500), Some(i % 7))).collect(),
            (1000..2000)
                .map(|i| (Some(i % 500), Some(i % 11)))
                .collect(),
        ]);
        let small = table(vec![
            vec![(Some(3), Some(0)), (Some(7), Some(1)), (None, Some(0))],
            vec![
                (Some(499), Some(0)),
                (Some(900), Some(2)),
                (Some(10), Some(3)),
            ],
        ]);
        ctx.register_table("big", big).unwrap();
        ctx.register_table("small", small).unwrap();
        ctx
    }

    #[tokio::test]
    async fn an_aggregate_joined_back_by_its_key_aggregates_the_matching_rows_alone() {
        let ctx = context();
        for sql in [
            // q2's shape: a correlated min, decorrelated into an aggregate
            // joined by (key, value).
            "SELECT s.k FROM small s WHERE s.v = (SELECT min(b.v) FROM big b WHERE b.k = s.k)",
            // q17's: a correlated average compared with.
            "SELECT s.k, s.v FROM small s WHERE s.v < (SELECT avg(b.v) FROM big b WHERE b.k = s.k)",
            // A plain join with a grouped subquery.
            "SELECT s.k, t.n FROM small s JOIN (SELECT k, count(*) AS n FROM big GROUP BY k) t ON s.k = t.k",
        ] {
            let physical = || physical_plan(&ctx, sql);
            let original = physical().await;
            let distributed = distribute_joins(Arc::clone(&original), 2).unwrap();
            let filtered = prefilter_aggregates(Arc::clone(&distributed)).unwrap();
            let text = shown(&filtered);
            let semis = |text: &str| text.matches("join_type=RightSemi").count();
            assert_eq!(
                semis(&text),
                semis(&shown(&distributed)) + 1,
                "{sql}\n{text}"
            );
            // The new semi join sits right under the aggregate of the raw
            // rows (one with aggregate functions: not the distinct keys a
            // reduced semi join finds).
            let lines: Vec<&str> = text.lines().collect();
            assert!(
                lines.windows(2).any(|w| {
                    (w[0].contains("AggregateExec: mode=Partial")
                        || w[0].contains("AggregateExec: mode=Single"))
                        && !w[0].contains("aggr=[]")
                        && w[1].contains("join_type=RightSemi")
                }),
                "{sql}\n{text}"
            );
            let filtered = reset_plan_states(filtered).unwrap();
            assert_eq!(
                rows(&ctx, filtered).await,
                rows(&ctx, original).await,
                "{sql}"
            );
            // Cut, the aggregate's stage reads the broadcast's.
            let on = StageDag::cut(physical().await, 2).unwrap();
            let off = StageDag::cut(
                physical().await,
                crate::CutOptions {
                    prefilter_aggregates: false,
                    ..2.into()
                },
            )
            .unwrap();
            let edges =
                |dag: &StageDag| -> usize { dag.stages().iter().map(|s| s.inputs.len()).sum() };
            assert_eq!(
                on.stages().len(),
                off.stages().len(),
                "{sql}\n{}\n{}",
                on.display(false),
                off.display(false)
            );
            assert_eq!(
                edges(&on),
                edges(&off) + 1,
                "{sql}\n{}\n{}",
                on.display(false),
                off.display(false)
            );
        }
    }

    #[tokio::test]
    async fn joins_that_keep_unmatched_groups_or_a_broadcast_too_large_are_left_alone() {
        let ctx = context();
        for sql in [
            // A right join keeps every group of the aggregate's side.
            "SELECT s.k, t.n FROM small s RIGHT JOIN (SELECT k, count(*) AS n FROM big GROUP BY k) t ON s.k = t.k",
            // The top groups of all are not the top groups of those kept.
            "SELECT s.k, t.n FROM small s JOIN (SELECT k, count(*) AS n FROM big GROUP BY k ORDER BY n DESC, k LIMIT 5) t ON s.k = t.k",
            // The broadcast (all of big) is not a quarter of the input.
            "SELECT a.k FROM big a JOIN (SELECT k, count(*) AS n FROM big GROUP BY k) t ON a.k = t.k",
            // The distinct keys a reduced anti join finds are cut to the
            // left side's keys already.
            "SELECT s.k FROM small s WHERE NOT EXISTS (SELECT 1 FROM big b WHERE b.k = s.k)",
        ] {
            let original = physical_plan(&ctx, sql).await;
            let distributed = distribute_joins(Arc::clone(&original), 2).unwrap();
            let filtered = prefilter_aggregates(Arc::clone(&distributed)).unwrap();
            assert!(
                Arc::ptr_eq(&filtered, &distributed),
                "{sql}\n{}",
                shown(&filtered)
            );
        }
    }
}
