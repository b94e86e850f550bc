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
//!     L ─ (collected, replicated or its hash exchange) ─┐ one stage,
//!     Aggregate(Final, group by k)                      │ read twice
//!       Repartition(hash k)                             │
//!         Aggregate(Partial, group by k)                │
//!           HashJoin(CollectLeft, RightSemi, on l = k)  │ (new)
//!             Projection(l) ── L, whole ────────────────┘
//!             X
//! ```
//!
//! Each group keeps all of its rows or none (they share the key), so every
//! surviving group aggregates exactly what it did. The aggregate's stage
//! now waits for the left side's; in exchange, the aggregation, its shuffle
//! and the final aggregate see the matching groups only. Only where the
//! left side has at most [`BROADCAST_ROWS`] rows and a quarter of the
//! aggregate's (estimated) input, and, when the join is partitioned, where
//! the left side has an exchange of its own to read whole (reading an
//! aggregate's output whole would run it twice). A left side whose size is
//! known exactly decides now; one whose size is an estimate (a filter's, a
//! join's: DataFusion puts q17's join of `lineitem` with one brand's parts
//! at 12 M rows at SF 10, 60 k in fact) gets both forms under a
//! [`ChoiceExec`], decided from the rows its stage writes (`crate::choice`).

use std::sync::Arc;

use datafusion::common::JoinType;
use datafusion::common::stats::Precision;
use datafusion::error::Result;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::{HashJoinExec, JoinOn, PartitionMode};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::{
    ExecutionPlan, ExecutionPlanProperties, Partitioning, StatisticsArgs, StatisticsContext,
    replace_children_if_necessary,
};

use crate::choice::ChoiceExec;
use crate::config::BROADCAST_ROWS;
use crate::joins::estimated_rows;
use crate::replicate::whole_once;
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
        let matching = rows_matching(
            Arc::clone(&p.broadcast),
            &p.pairs,
            Arc::clone(&input),
            p.null_equality,
        )?;
        let input = match p.when {
            None => matching,
            Some(e) => Arc::new(ChoiceExec::try_new(matching, input, e.max_rows, e.small)?),
        };
        replace_children_if_necessary(node, vec![input])
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
    /// Set where the left side's size is an estimate: the choice is made
    /// again from its stage's rows.
    when: Option<Estimate>,
}

#[derive(Debug, Clone, Copy)]
struct Estimate {
    max_rows: u64,
    small: bool,
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
    // The left side whole, in one partition: collected already, whole in
    // every partition already (`crate::replicate`), or read whole from the
    // exchange that splits it (one stage, read twice).
    let broadcast: Arc<dyn ExecutionPlan> = match join.partition_mode() {
        PartitionMode::CollectLeft if join.left().output_partitioning().partition_count() == 1 => {
            Arc::clone(join.left())
        }
        PartitionMode::Partitioned => match whole_once(join.left())? {
            Some(whole) => whole,
            None if join
                .left()
                .downcast_ref::<RepartitionExec>()
                .is_some_and(|r| matches!(r.partitioning(), Partitioning::Hash(..))) =>
            {
                Arc::new(CoalescePartitionsExec::new(Arc::clone(join.left())))
            }
            None => return Ok(None),
        },
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
    let Some(input_rows) = estimated_rows(aggregate.children()[0], stats)? else {
        return Ok(None);
    };
    let max_rows = BROADCAST_ROWS.min(input_rows / MAX_SHARE);
    // Known exactly, the left side's size decides now; estimated, it is
    // decided again from the rows its stage writes (see `crate::choice`).
    let (estimated_small, exact) = match stats
        .compute(broadcast.as_ref(), &StatisticsArgs::new())?
        .num_rows
    {
        Precision::Exact(rows) => (rows <= max_rows, true),
        Precision::Inexact(rows) => (rows <= max_rows, false),
        Precision::Absent => (false, false),
    };
    if max_rows == 0 || (exact && !estimated_small) {
        return Ok(None);
    }
    Ok(Some(Prefilter {
        aggregate,
        broadcast,
        pairs,
        null_equality: join.null_equality(),
        when: (!exact).then_some(Estimate {
            max_rows: max_rows as u64,
            small: estimated_small,
        }),
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
    use crate::test_util::{
        int_table, physical_plan, replicated_inputs_collected, shown, sorted_rows as rows,
    };

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
            let filtered =
                replicated_inputs_collected(&ctx, reset_plan_states(filtered).unwrap()).await;
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
    async fn an_estimated_left_side_is_decided_by_the_rows_its_stage_writes() {
        let ctx = context();
        // Filtered, the left side's size is an estimate.
        let sql = "SELECT s.k, t.n FROM small s JOIN (SELECT k, count(*) AS n FROM big GROUP BY k) t ON s.k = t.k WHERE s.v < 3";
        let distributed = distribute_joins(physical_plan(&ctx, sql).await, 2).unwrap();
        let filtered = prefilter_aggregates(distributed).unwrap();
        assert!(
            shown(&filtered).contains("ChoiceExec"),
            "{}",
            shown(&filtered)
        );
        // Either form answers as DataFusion's own plan.
        let expected = rows(&ctx, physical_plan(&ctx, sql).await).await;
        for small in [true, false] {
            let plan =
                reset_plan_states(crate::choice::take(Arc::clone(&filtered), small)).unwrap();
            assert_eq!(rows(&ctx, plan).await, expected, "small: {small}");
        }
        // Cut, the aggregate's stage has both forms; the rewritten one reads
        // the left side's stage, which the stage waits for either way.
        let dag = StageDag::cut(physical_plan(&ctx, sql).await, 2).unwrap();
        let text = dag.display(false);
        let (stage, adaptive) = dag
            .stages()
            .iter()
            .find_map(|s| s.adaptive.as_ref().map(|a| (s, a)))
            .unwrap_or_else(|| panic!("{text}"));
        // At most a quarter of the aggregate's 2,000 input rows.
        assert_eq!(adaptive.max_rows, 500, "{text}");
        assert!(stage.inputs.contains(&adaptive.decided_by), "{text}");
        let semis = |p: &Arc<dyn ExecutionPlan>| shown(p).matches("join_type=RightSemi").count();
        assert_eq!(semis(&adaptive.plan), semis(&stage.plan) + 1, "{text}");
        let mut read = std::collections::BTreeSet::new();
        crate::choice::reader_stages(&stage.plan, &mut read);
        assert!(!read.contains(&adaptive.decided_by), "{text}");
        assert!(
            text.contains(&format!(
                "if stage {} writes at most 500 rows, each task runs instead:",
                adaptive.decided_by
            )),
            "{text}"
        );
        assert!(!text.contains("ChoiceExec"), "{text}");
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
