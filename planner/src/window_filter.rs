//! Window aggregates with `FILTER (WHERE ...)`, planned so they can travel.
//!
//! datafusion-proto 55 drops a window aggregate's filter, and DataFusion
//! keeps it private in the physical plan, so it cannot be carried beside the
//! operator (see `fidelity`). For an aggregate that skips NULL inputs,
//! `agg(x) FILTER (WHERE c)` is `agg(CASE WHEN c THEN x END)`: the rows the
//! filter drops become NULLs the aggregate skips. [`rewrite_window_filters`]
//! does that on the logical plan, keeping each expression's name; the
//! aggregates it does not know to skip NULLs keep their filter and are
//! refused with a clear error when the stage is encoded.

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result;
use datafusion::logical_expr::expr::{Alias, NullTreatment};
use datafusion::logical_expr::{Expr, LogicalPlan, Window, WindowFunctionDefinition, when};

/// Aggregates whose result ignores rows where any argument is NULL.
const SKIP_NULLS: &[&str] = &[
    "count",
    "sum",
    "avg",
    "mean",
    "min",
    "max",
    "bool_and",
    "bool_or",
    "bit_and",
    "bit_or",
    "bit_xor",
    "stddev",
    "stddev_samp",
    "stddev_pop",
    "var",
    "var_samp",
    "var_sample",
    "var_pop",
    "var_population",
    "median",
    "corr",
    "covar",
    "covar_samp",
    "covar_pop",
    "approx_distinct",
];

/// Aggregates that skip NULL inputs only with `IGNORE NULLS`.
const SKIP_NULLS_WHEN_IGNORING: &[&str] = &["first_value", "last_value"];

/// `plan` with every window aggregate `FILTER` that can be expressed in the
/// aggregate's arguments moved there.
pub fn rewrite_window_filters(plan: LogicalPlan) -> Result<LogicalPlan> {
    plan.transform_up(|node| {
        let LogicalPlan::Window(window) = node else {
            return Ok(Transformed::no(node));
        };
        if !window.window_expr.iter().any(rewritable) {
            return Ok(Transformed::no(LogicalPlan::Window(window)));
        }
        let exprs = window
            .window_expr
            .into_iter()
            .map(|expr| {
                if rewritable(&expr) {
                    without_filter(expr)
                } else {
                    expr
                }
            })
            .collect();
        Ok(Transformed::yes(LogicalPlan::Window(Window::try_new(
            exprs,
            window.input,
        )?)))
    })
    .map(|t| t.data)
}

/// Is `expr` a window aggregate with a filter this module can move?
fn rewritable(expr: &Expr) -> bool {
    let function = match expr {
        Expr::WindowFunction(f) => f,
        Expr::Alias(Alias { expr, .. }) => match expr.as_ref() {
            Expr::WindowFunction(f) => f,
            _ => return false,
        },
        _ => return false,
    };
    let WindowFunctionDefinition::AggregateUDF(udaf) = &function.fun else {
        return false;
    };
    let params = &function.params;
    let names = std::iter::once(udaf.name()).chain(udaf.aliases().iter().map(String::as_str));
    let skips_nulls = names.into_iter().any(|name| {
        SKIP_NULLS.contains(&name)
            || (SKIP_NULLS_WHEN_IGNORING.contains(&name)
                && params.null_treatment == Some(NullTreatment::IgnoreNulls))
    });
    params.filter.is_some() && skips_nulls && !params.args.is_empty()
}

/// `expr` (a [`rewritable`] one) with its filter moved into its arguments,
/// under its old name.
fn without_filter(expr: Expr) -> Expr {
    let name = expr.schema_name().to_string();
    let (mut function, alias) = match expr {
        Expr::WindowFunction(f) => (f, None),
        Expr::Alias(Alias {
            expr,
            relation,
            name,
            ..
        }) => match *expr {
            Expr::WindowFunction(f) => (f, Some((relation, name))),
            _ => unreachable!("rewritable() accepts only window functions"),
        },
        _ => unreachable!("rewritable() accepts only window functions"),
    };
    let filter = function
        .params
        .filter
        .take()
        .expect("rewritable() requires a filter");
    function.params.args = std::mem::take(&mut function.params.args)
        .into_iter()
        .map(|arg| {
            when(filter.as_ref().clone(), arg)
                .end()
                .expect("CASE with one WHEN and no ELSE")
        })
        .collect();
    let rewritten = Expr::WindowFunction(function);
    match alias {
        Some((relation, name)) => rewritten.alias_qualified(relation, name),
        None => rewritten.alias(name),
    }
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::SessionContext;

    use super::*;

    /// The rewritten plan gives DataFusion's own answers, with the same
    /// names, and leaves no filter on the aggregates it knows.
    #[tokio::test]
    async fn filtered_window_aggregates_answer_as_with_the_filter() {
        let ctx = SessionContext::new();
        let sql = "SELECT x, \
             count(*) FILTER (WHERE x > 1) OVER () AS c, \
             sum(x) FILTER (WHERE x % 2 = 1) OVER (ORDER BY x), \
             avg(x) FILTER (WHERE NULL) OVER (), \
             max(x) FILTER (WHERE x < 3) OVER (ORDER BY x ROWS BETWEEN 1 PRECEDING AND CURRENT ROW), \
             array_agg(x) FILTER (WHERE x > 2) OVER () \
             FROM (VALUES (1), (2), (3), (NULL)) AS t(x) ORDER BY x";
        let df = ctx.sql(sql).await.unwrap();
        let plan = df.logical_plan().clone();
        let expected = df.collect().await.unwrap();

        let rewritten = rewrite_window_filters(plan.clone()).unwrap();
        assert_eq!(rewritten.schema(), plan.schema());
        let mut filters = 0;
        rewritten
            .apply(|node| {
                if let LogicalPlan::Window(w) = node {
                    for e in &w.window_expr {
                        if let Expr::WindowFunction(f) = e.clone().unalias()
                            && f.params.filter.is_some()
                        {
                            filters += 1;
                        }
                    }
                }
                Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
            })
            .unwrap();
        assert_eq!(filters, 1, "only array_agg keeps its filter:\n{rewritten}");

        let got = ctx
            .execute_logical_plan(rewritten)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(
            arrow::util::pretty::pretty_format_batches(&got)
                .unwrap()
                .to_string(),
            arrow::util::pretty::pretty_format_batches(&expected)
                .unwrap()
                .to_string()
        );
    }
}
