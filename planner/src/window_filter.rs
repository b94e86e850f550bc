//! Window aggregates with `FILTER (WHERE ...)`, planned so they can travel.
//!
//! datafusion-proto 55 drops a window aggregate's filter, and DataFusion
//! keeps it private in the physical plan, so it cannot be carried beside the
//! operator (see `fidelity`). For an aggregate that skips NULL inputs,
//! `agg(x) FILTER (WHERE c)` is `agg(CASE WHEN c THEN x END)`: the rows the
//! filter drops become NULLs the aggregate skips. [`rewrite_window_filters`]
//! does that on the logical plan, keeping each expression's name. An
//! aggregate that keeps NULLs (`array_agg`, `first_value` without `IGNORE
//! NULLS`) keeps its filter, evaluated below the window into a column of its
//! own ([`FILTER_COLUMN`]`<n>`): a filter that is a named column is
//! something the encoding can carry (`fidelity` finds it by that name).

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, TableReference};
use datafusion::error::Result;
use datafusion::logical_expr::expr::{Alias, NullTreatment, WindowFunction};
use datafusion::logical_expr::{
    Expr, LogicalPlan, LogicalPlanBuilder, Window, WindowFunctionDefinition, when,
};

/// The name prefix of the columns that hold the filters of window
/// aggregates that keep NULLs.
pub const FILTER_COLUMN: &str = "__ember_window_filter_";

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
/// aggregate's arguments moved there, and every other one made a column.
pub fn rewrite_window_filters(plan: LogicalPlan) -> Result<LogicalPlan> {
    let mut columns = 0;
    plan.transform_up(|node| {
        let LogicalPlan::Window(window) = node else {
            return Ok(Transformed::no(node));
        };
        if !window.window_expr.iter().any(|e| filter_of(e).is_some()) {
            return Ok(Transformed::no(LogicalPlan::Window(window)));
        }
        let schema = Arc::clone(&window.schema);
        let mut filters = vec![];
        let exprs = window
            .window_expr
            .into_iter()
            .map(|expr| {
                if rewritable(&expr) {
                    without_filter(expr)
                } else if let Some(filter) = filter_of(&expr) {
                    let name = format!("{FILTER_COLUMN}{columns}");
                    columns += 1;
                    filters.push(filter.clone().alias(&name));
                    with_filter(expr, Expr::Column(Column::from_name(name)))
                } else {
                    expr
                }
            })
            .collect();
        if filters.is_empty() {
            return Ok(Transformed::yes(LogicalPlan::Window(Window::try_new(
                exprs,
                window.input,
            )?)));
        }
        // The filters as columns below the window, dropped again above it.
        let input = window
            .input
            .schema()
            .columns()
            .into_iter()
            .map(Expr::Column);
        let input = LogicalPlanBuilder::from(window.input.as_ref().clone())
            .project(input.chain(filters))?
            .build()?;
        let window = LogicalPlan::Window(Window::try_new(exprs, Arc::new(input))?);
        let plan = LogicalPlanBuilder::from(window)
            .project(schema.columns().into_iter().map(Expr::Column))?
            .build()?;
        Ok(Transformed::yes(plan))
    })
    .map(|t| t.data)
}

/// The window function of `expr` (itself or under an alias).
fn window_function(expr: &Expr) -> Option<&WindowFunction> {
    match expr {
        Expr::WindowFunction(f) => Some(f),
        Expr::Alias(Alias { expr, .. }) => match expr.as_ref() {
            Expr::WindowFunction(f) => Some(f),
            _ => None,
        },
        _ => None,
    }
}

/// The filter of a window aggregate, if it has one.
fn filter_of(expr: &Expr) -> Option<&Expr> {
    let function = window_function(expr)?;
    if !matches!(function.fun, WindowFunctionDefinition::AggregateUDF(_)) {
        return None;
    }
    function.params.filter.as_deref()
}

/// `expr` (a window aggregate with a filter) filtered by `filter` instead,
/// under its old name.
fn with_filter(expr: Expr, filter: Expr) -> Expr {
    let name = expr.schema_name().to_string();
    let (mut function, alias) = split_alias(expr);
    function.params.filter = Some(Box::new(filter));
    rename(Expr::WindowFunction(function), alias, name)
}

/// The alias over a window function (its qualifier and name), if any.
type AliasOf = Option<(Option<TableReference>, String)>;

/// A window function expression and the alias over it.
fn split_alias(expr: Expr) -> (Box<WindowFunction>, AliasOf) {
    match expr {
        Expr::WindowFunction(f) => (f, None),
        Expr::Alias(Alias {
            expr,
            relation,
            name,
            ..
        }) => match *expr {
            Expr::WindowFunction(f) => (f, Some((relation, name))),
            _ => unreachable!("only window functions are rewritten"),
        },
        _ => unreachable!("only window functions are rewritten"),
    }
}

/// `expr` named as before its rewrite: its alias, or its old name.
fn rename(expr: Expr, alias: AliasOf, name: String) -> Expr {
    match alias {
        Some((relation, name)) => expr.alias_qualified(relation, name),
        None => expr.alias(name),
    }
}

/// Is `expr` a window aggregate with a filter this module can move?
fn rewritable(expr: &Expr) -> bool {
    let Some(function) = window_function(expr) else {
        return false;
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
    let (mut function, alias) = split_alias(expr);
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
    rename(Expr::WindowFunction(function), alias, name)
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
        assert!(
            rewritten
                .to_string()
                .contains(&format!("FILTER (WHERE {FILTER_COLUMN}0)")),
            "array_agg's filter is a column:\n{rewritten}"
        );

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
