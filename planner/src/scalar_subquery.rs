//! Uncorrelated scalar subqueries that could return more than one row.
//!
//! Ember plans uncorrelated scalar subqueries as joins (a
//! `ScalarSubqueryExec`'s result cannot reach expressions in other stages;
//! see `config`). A join repeats each outer row once per subquery row, where
//! DataFusion fails with "Scalar subquery returned more than one row".
//! [`check_scalar_subqueries`] gives every such subquery whose plan does not
//! bound it to one row a check: `count(*) OVER ()` of its rows, and a filter
//! ([`SINGLE_ROW`]) that fails the query past one. A subquery of one row
//! (an aggregate without `GROUP BY`, `LIMIT 1`, ...) is left as it is.

use std::sync::{Arc, LazyLock};

use arrow::array::{Array, BooleanArray, Int64Array};
use arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{exec_err, internal_err};
use datafusion::error::Result;
use datafusion::functions_aggregate::count::count_udaf;
use datafusion::logical_expr::expr::WindowFunction;
use datafusion::logical_expr::logical_plan::FetchType;
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, LogicalPlanBuilder, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Subquery, Volatility, WindowFunctionDefinition, col, lit,
};

/// The name of the check: executors resolve it through `EmberCodec`.
pub const SINGLE_ROW: &str = "ember_scalar_subquery_single_row";

const ROWS: &str = "__ember_scalar_subquery_rows";

/// The check, `true` for a count of at most one row, an error otherwise.
pub fn single_row_udf() -> Arc<ScalarUDF> {
    static UDF: LazyLock<Arc<ScalarUDF>> =
        LazyLock::new(|| Arc::new(ScalarUDF::new_from_impl(SingleRow::new())));
    Arc::clone(&UDF)
}

/// `plan` with a one-row check on every uncorrelated scalar subquery (at
/// any depth) that could return more.
pub fn check_scalar_subqueries(plan: LogicalPlan) -> Result<LogicalPlan> {
    plan.transform_up_with_subqueries(|node| {
        node.map_expressions(|expr| {
            expr.transform_up(|e| match e {
                Expr::ScalarSubquery(subquery)
                    if subquery.outer_ref_columns.is_empty()
                        && !at_most_one_row(&subquery.subquery) =>
                {
                    Ok(Transformed::yes(Expr::ScalarSubquery(checked(subquery)?)))
                }
                other => Ok(Transformed::no(other)),
            })
        })
    })
    .map(|t| t.data)
}

/// `subquery` failing past one row, with its columns as they were.
fn checked(subquery: Subquery) -> Result<Subquery> {
    let plan = subquery.subquery.as_ref().clone();
    let columns: Vec<Expr> = plan
        .schema()
        .columns()
        .into_iter()
        .map(Expr::Column)
        .collect();
    let rows = Expr::from(WindowFunction::new(
        WindowFunctionDefinition::AggregateUDF(count_udaf()),
        vec![lit(1i64)],
    ))
    .alias(ROWS);
    let checked = LogicalPlanBuilder::from(plan)
        .window(vec![rows])?
        .filter(single_row_udf().call(vec![col(ROWS)]))?
        .project(columns)?
        .build()?;
    Ok(subquery.with_plan(Arc::new(checked)))
}

/// Does the plan's shape bound it to at most one row?
fn at_most_one_row(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::Aggregate(aggregate) => aggregate.group_expr.is_empty(),
        LogicalPlan::Limit(limit) => {
            matches!(limit.get_fetch_type(), Ok(FetchType::Literal(Some(n))) if n <= 1)
                || at_most_one_row(&limit.input)
        }
        LogicalPlan::EmptyRelation(_) => true,
        LogicalPlan::Values(values) => values.values.len() <= 1,
        LogicalPlan::Projection(_)
        | LogicalPlan::SubqueryAlias(_)
        | LogicalPlan::Sort(_)
        | LogicalPlan::Filter(_) => plan.inputs().into_iter().all(at_most_one_row),
        _ => false,
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct SingleRow {
    signature: Signature,
}

impl SingleRow {
    fn new() -> Self {
        Self {
            signature: Signature::exact(vec![DataType::Int64], Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for SingleRow {
    fn name(&self) -> &str {
        SINGLE_ROW
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [rows] = args.args.as_slice() else {
            return internal_err!("{SINGLE_ROW} takes one argument");
        };
        let rows = rows.to_array(args.number_rows)?;
        let Some(rows) = rows.as_any().downcast_ref::<Int64Array>() else {
            return internal_err!("{SINGLE_ROW} takes a row count");
        };
        if rows.iter().flatten().any(|n| n > 1) {
            return exec_err!("Scalar subquery returned more than one row");
        }
        Ok(ColumnarValue::Array(Arc::new(BooleanArray::from(vec![
            true;
            rows.len()
        ]))))
    }
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::SessionContext;

    use super::*;

    async fn run(ctx: &SessionContext, sql: &str) -> Result<Vec<arrow::array::RecordBatch>> {
        let plan = ctx.state().create_logical_plan(sql).await?;
        let plan = check_scalar_subqueries(plan)?;
        // Planned as Ember plans them: as joins.
        ctx.execute_logical_plan(plan).await?.collect().await
    }

    #[tokio::test]
    async fn a_scalar_subquery_of_several_rows_fails_as_in_datafusion() {
        let ctx = SessionContext::new();
        ctx.sql("SET datafusion.optimizer.enable_physical_uncorrelated_scalar_subquery = false")
            .await
            .unwrap();
        ctx.sql("CREATE TABLE v (x INT) AS VALUES (1), (2), (3)")
            .await
            .unwrap();

        let e = run(&ctx, "SELECT x + (SELECT x FROM v WHERE x > 1) FROM v")
            .await
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("Scalar subquery returned more than one row"),
            "{e}"
        );
        // Without the check, the join answers 6 rows.
        let unchecked = ctx
            .sql("SELECT x + (SELECT x FROM v WHERE x > 1) FROM v")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(unchecked.iter().map(|b| b.num_rows()).sum::<usize>(), 6);

        // One row, none, or an aggregate: answered.
        for (sql, rows) in [
            ("SELECT x + (SELECT x FROM v WHERE x = 2) FROM v", 3),
            ("SELECT x + (SELECT x FROM v WHERE x > 5) FROM v", 3),
            ("SELECT x FROM v WHERE x > (SELECT avg(x) FROM v)", 1),
        ] {
            let got = run(&ctx, sql).await.unwrap();
            assert_eq!(
                got.iter().map(|b| b.num_rows()).sum::<usize>(),
                rows,
                "{sql}"
            );
        }
        let plan = ctx
            .state()
            .create_logical_plan("SELECT (SELECT max(x) FROM v)")
            .await
            .unwrap();
        assert_eq!(check_scalar_subqueries(plan.clone()).unwrap(), plan);
    }
}
