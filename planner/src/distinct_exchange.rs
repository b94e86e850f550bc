//! A `count(DISTINCT x) … GROUP BY g` in one exchange instead of two.
//!
//! DataFusion plans a distinct aggregate as two aggregates: the inner one
//! groups by `(g, x)` to find the distinct values, the outer one by `g` to
//! count them, each split into a partial and a final part around an
//! exchange. Cut into stages, that is two shuffles and two stage barriers
//! (TPC-H q16: the second moves 35 k partial counts to run a 5 ms stage).
//! When the inner exchange hashes by `g` alone, rows with equal `(g, x)`
//! still meet (they have equal `g`), and every group of the outer
//! aggregate is already whole in one partition, so the outer aggregate
//! runs in one step where the inner one ends:
//!
//! ```text
//!   Aggregate(FinalPartitioned, g)            Aggregate(SinglePartitioned, g)
//!     Repartition(hash g)                       Aggregate(FinalPartitioned, g, x)
//!       Aggregate(Partial, g)           ──▶       Repartition(hash g)
//!         Aggregate(FinalPartitioned, g, x)         Aggregate(Partial, g, x)
//!           Repartition(hash g, x)
//!             Aggregate(Partial, g, x)
//! ```
//!
//! Hashing by fewer keys spreads rows less evenly: with few distinct `g`,
//! a few tasks get most of the rows. So only where the inner aggregate's
//! input is estimated small (at most [`MAX_ROWS`] rows): there a stage's
//! fixed cost is a large part of its time, and the worst skew costs
//! little. An input of unknown size keeps both exchanges.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::error::Result;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{
    ExecutionPlan, Partitioning, StatisticsContext, replace_children_if_necessary,
};

use crate::joins::estimated_rows;
use crate::stages::transform_up_shared;

/// Largest estimated input, in rows, of a distinct aggregate planned with
/// one exchange.
pub const MAX_ROWS: usize = 1 << 20;

/// Plans every distinct aggregate of `plan` whose input is small with one
/// exchange (see the module).
pub fn one_exchange_distinct(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    let stats = StatisticsContext::new();
    transform_up_shared(
        plan,
        &mut |node| Ok(rewrite(&node, &stats)?.unwrap_or(node)),
    )
}

/// The aggregate with its two exchanges of one if `node` is the outer
/// final aggregate of a distinct aggregate that qualifies.
fn rewrite(
    node: &Arc<dyn ExecutionPlan>,
    stats: &StatisticsContext,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some(outer_final) = aggregate(node, AggregateMode::FinalPartitioned) else {
        return Ok(None);
    };
    let Some((outer_shuffle, partitions)) = hashed(outer_final.input()) else {
        return Ok(None);
    };
    let Some(outer_partial) = aggregate(outer_shuffle.input(), AggregateMode::Partial) else {
        return Ok(None);
    };
    let Some(inner_final) = aggregate(outer_partial.input(), AggregateMode::FinalPartitioned)
    else {
        return Ok(None);
    };
    let Some((inner_shuffle, inner_partitions)) = hashed(inner_final.input()) else {
        return Ok(None);
    };
    if inner_partitions != partitions || !inner_final.aggr_expr().is_empty() {
        return Ok(None);
    }
    // The outer keys: group columns of the inner aggregate, named by their
    // place in its output, which is their place in the inner exchange's
    // input too (a partial aggregate's group columns come first, in order).
    let inner_groups = inner_final.group_expr().expr().len();
    let shuffled = inner_shuffle.input();
    let mut keys: Vec<Arc<dyn PhysicalExpr>> = vec![];
    for (expr, _) in outer_partial.group_expr().expr() {
        match expr.downcast_ref::<Column>() {
            Some(c) if c.index() < inner_groups => keys.push(Arc::new(Column::new(
                shuffled.schema().field(c.index()).name(),
                c.index(),
            ))),
            _ => return Ok(None),
        }
    }
    if keys.is_empty() || keys.len() == inner_groups {
        return Ok(None);
    }
    let Some(inner_partial) = shuffled.downcast_ref::<AggregateExec>() else {
        return Ok(None);
    };
    let rows = estimated_rows(inner_partial.input(), stats)?;
    if rows.is_none_or(|r| r > MAX_ROWS) {
        return Ok(None);
    }

    let shuffle = Arc::new(RepartitionExec::try_new(
        Arc::clone(shuffled),
        Partitioning::Hash(keys, partitions),
    )?);
    let inner = replace_children_if_necessary(Arc::clone(outer_partial.input()), vec![shuffle])?;
    let single = AggregateExec::try_new(
        AggregateMode::SinglePartitioned,
        outer_partial.group_expr().clone(),
        outer_partial.aggr_expr().to_vec(),
        outer_partial.filter_expr().to_vec(),
        inner,
        outer_partial.input_schema(),
    )?
    .with_limit_options(outer_final.limit_options());
    // The same columns out, or nothing changes.
    let columns = |schema: SchemaRef| {
        schema
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().clone()))
            .collect::<Vec<_>>()
    };
    let same = columns(node.schema()) == columns(single.schema());
    Ok(same.then(|| Arc::new(single) as Arc<dyn ExecutionPlan>))
}

/// `plan` as an aggregate in `mode` with one grouping set.
fn aggregate(plan: &Arc<dyn ExecutionPlan>, mode: AggregateMode) -> Option<&AggregateExec> {
    plan.downcast_ref::<AggregateExec>()
        .filter(|a| *a.mode() == mode && a.group_expr().is_single())
}

/// `plan` as a hash exchange, with its partition count.
fn hashed(plan: &Arc<dyn ExecutionPlan>) -> Option<(&RepartitionExec, usize)> {
    let exchange = plan.downcast_ref::<RepartitionExec>()?;
    match exchange.partitioning() {
        Partitioning::Hash(_, n) => Some((exchange, *n)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{ArrayRef, Int32Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::prelude::SessionContext;

    use super::*;
    use crate::test_util::{physical_plan, shown, sorted_rows};

    fn context() -> SessionContext {
        let ctx = SessionContext::new_with_config(crate::config::distributed_session_config(2));
        let schema = Arc::new(Schema::new(vec![
            Field::new("g", DataType::Int32, true),
            Field::new("h", DataType::Utf8, true),
            Field::new("x", DataType::Int32, true),
        ]));
        // Two partitions; repeated values, NULLs in keys and values alike.
        let partition = |from: i32, to: i32| {
            let g = Int32Array::from_iter((from..to).map(|i| (i % 11 != 0).then_some(i % 7)));
            let h =
                StringArray::from_iter((from..to).map(|i| Some(["a", "bb", "c"][i as usize % 3])));
            let x = Int32Array::from_iter((from..to).map(|i| (i % 13 != 0).then_some(i % 50)));
            let columns = vec![Arc::new(g) as ArrayRef, Arc::new(h), Arc::new(x)];
            vec![RecordBatch::try_new(Arc::clone(&schema), columns).unwrap()]
        };
        let table = MemTable::try_new(
            Arc::clone(&schema),
            vec![partition(0, 400), partition(300, 900)],
        )
        .unwrap();
        ctx.register_table("t", Arc::new(table)).unwrap();
        ctx
    }

    #[tokio::test]
    async fn small_distinct_aggregates_shuffle_once_and_answer_the_same() {
        let ctx = context();
        for sql in [
            "SELECT g, count(DISTINCT x) FROM t GROUP BY g",
            "SELECT g, h, count(DISTINCT x) AS c FROM t GROUP BY g, h ORDER BY c DESC, g, h",
            "SELECT h, count(DISTINCT x) AS c FROM t WHERE g > 1 GROUP BY h HAVING count(DISTINCT x) > 3",
        ] {
            let original = physical_plan(&ctx, sql).await;
            let rewritten = one_exchange_distinct(Arc::clone(&original)).unwrap();
            let text = shown(&rewritten);
            assert_eq!(text.matches("RepartitionExec").count(), 1, "{sql}\n{text}");
            assert!(text.contains("mode=SinglePartitioned"), "{sql}\n{text}");
            assert_eq!(
                sorted_rows(&ctx, rewritten).await,
                sorted_rows(&ctx, original).await,
                "{sql}"
            );
        }
    }

    #[tokio::test]
    async fn large_or_ungrouped_distinct_aggregates_keep_both_exchanges() {
        let ctx = context();
        for sql in [
            // More rows than MAX_ROWS.
            "SELECT v % 7 AS g, count(DISTINCT v) FROM generate_series(1, 2000000) AS s(v) GROUP BY v % 7",
            // No outer key: nothing to hash by.
            "SELECT count(DISTINCT x) FROM t",
            // Not a distinct aggregate, or one DataFusion plans in one aggregate.
            "SELECT g, count(x) FROM t GROUP BY g",
            "SELECT h, sum(DISTINCT x), count(DISTINCT x) FROM t GROUP BY h",
        ] {
            let original = physical_plan(&ctx, sql).await;
            let rewritten = one_exchange_distinct(Arc::clone(&original)).unwrap();
            assert_eq!(shown(&rewritten), shown(&original), "{sql}");
        }
    }
}
