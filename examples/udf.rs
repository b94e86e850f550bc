//! User-defined functions: a scalar UDF (`net_price`) and an aggregate UDF
//! (`spread`: max minus min), used from SQL and from a DataFrame.
//!
//! Executors run the functions, so they must be built with them; the
//! scheduler plans queries that call them, so it needs them too. This one
//! program is all three roles:
//!
//! ```sh
//! cargo run --example udf                        # an embedded cluster with the functions
//! cargo run --example udf -- scheduler --bind 127.0.0.1:50050
//! cargo run --example udf -- executor --scheduler http://127.0.0.1:50050
//! ```
//!
//! The last two are the `ember-scheduler` / `ember-executor` command lines
//! (same flags) with the functions added, built with
//! `ember_scheduler::SchedulerBuilder` and `ember_executor::ExecutorBuilder`.

use std::process::ExitCode;
use std::sync::Arc;

use ember::arrow::array::{ArrayRef, Float64Array, RecordBatch};
use ember::arrow::datatypes::{DataType, Field, Schema};
use ember::datafusion::common::{ScalarValue, cast::as_float64_array};
use ember::datafusion::logical_expr::{Accumulator, AggregateUDF, ColumnarValue};
use ember::prelude::*;

/// `net_price(price, discount) = price * (1 - discount)`.
fn net_price() -> ScalarUDF {
    create_udf(
        "net_price",
        vec![DataType::Float64, DataType::Float64],
        DataType::Float64,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let price = as_float64_array(&arrays[0])?;
            let discount = as_float64_array(&arrays[1])?;
            let net: Float64Array = price
                .iter()
                .zip(discount.iter())
                .map(|(p, d)| Some(p? * (1.0 - d?)))
                .collect();
            Ok(ColumnarValue::Array(Arc::new(net)))
        }),
    )
}

/// `spread(x) = max(x) - min(x)`.
fn spread() -> AggregateUDF {
    create_udaf(
        "spread",
        vec![DataType::Float64],
        Arc::new(DataType::Float64),
        Volatility::Immutable,
        Arc::new(|_| Ok(Box::new(Spread::default()))),
        Arc::new(vec![DataType::Float64, DataType::Float64]),
    )
}

#[derive(Debug, Default)]
struct Spread {
    min: Option<f64>,
    max: Option<f64>,
}

impl Spread {
    fn add(&mut self, values: &Float64Array) {
        for v in values.iter().flatten() {
            self.min = Some(self.min.map_or(v, |m| m.min(v)));
            self.max = Some(self.max.map_or(v, |m| m.max(v)));
        }
    }
}

impl Accumulator for Spread {
    fn update_batch(&mut self, values: &[ArrayRef]) -> ember::datafusion::error::Result<()> {
        self.add(as_float64_array(&values[0])?);
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> ember::datafusion::error::Result<()> {
        self.add(as_float64_array(&states[0])?);
        self.add(as_float64_array(&states[1])?);
        Ok(())
    }

    fn state(&mut self) -> ember::datafusion::error::Result<Vec<ScalarValue>> {
        Ok(vec![
            ScalarValue::Float64(self.min),
            ScalarValue::Float64(self.max),
        ])
    }

    fn evaluate(&mut self) -> ember::datafusion::error::Result<ScalarValue> {
        Ok(ScalarValue::Float64(
            self.max.zip(self.min).map(|(a, b)| a - b),
        ))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args();
    let program = args.next().unwrap_or_default();
    match args.next().as_deref() {
        Some("scheduler") => {
            ember_scheduler::SchedulerBuilder::new()
                .with_udf(net_price())
                .with_udaf(spread())
                .run_with_args(std::iter::once(program).chain(args))
                .await
        }
        Some("executor") => {
            ember_executor::ExecutorBuilder::new()
                .with_udf(net_price())
                .with_udaf(spread())
                .run_with_args(std::iter::once(program).chain(args))
                .await
        }
        None => match demo().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("udf: {e}");
                ExitCode::FAILURE
            }
        },
        Some(other) => {
            eprintln!("udf: unknown role {other:?} (scheduler, executor, or nothing for the demo)");
            ExitCode::FAILURE
        }
    }
}

async fn demo() -> ember::Result<()> {
    let options = StandaloneOptions::default()
        .with_udf(net_price())
        .with_udaf(spread());
    let ctx = EmberContext::standalone_with(options).await?;
    let schema = Arc::new(Schema::new(vec![
        Field::new("item", DataType::Utf8, false),
        Field::new("price", DataType::Float64, false),
        Field::new("discount", DataType::Float64, false),
    ]));
    let items = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(ember::arrow::array::StringArray::from(vec![
                "a", "b", "a", "b",
            ])),
            Arc::new(Float64Array::from(vec![100.0, 80.0, 120.0, 20.0])),
            Arc::new(Float64Array::from(vec![0.1, 0.0, 0.5, 0.25])),
        ],
    )?;
    ctx.register_batch("items", items).await?;

    // From SQL ...
    ctx.sql("SELECT item, sum(net_price(price, discount)) AS net, spread(price) AS spread FROM items GROUP BY item ORDER BY item")
        .await?
        .show()
        .await?;
    // ... and from a DataFrame.
    ctx.table("items")
        .await?
        .select(vec![
            col("item"),
            net_price()
                .call(vec![col("price"), col("discount")])
                .alias("net"),
        ])?
        .show()
        .await?;
    Ok(())
}
