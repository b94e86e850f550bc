//! [`ResultMerge`]: the last merge of a sorted query, done by the client.
//!
//! A query that ends in `ORDER BY` ends, in DataFusion's plan, with a
//! `SortPreservingMergeExec` over partitions that are each sorted. Run on the
//! cluster, that merge is a stage of its own: one task that fetches every
//! partition, merges them and keeps the result, which the client then
//! fetches. The client merging the sorted partitions itself saves the
//! stage's launch, its task and report, and one Flight hop of the whole
//! result:
//!
//! ```text
//!   on the cluster                          handed to the client
//!
//!   client ◀── stage n: SortPreservingMerge   client: merge ◀──┬── partition 0
//!                 ◀── stage n-1 (sorted)                       └── partition 1
//!                                                                (stage n-1, final)
//! ```
//!
//! Only merges by plain columns are handed over: the client evaluates no
//! expression, so it never needs a function only the cluster has. The
//! merge's `fetch` (a `LIMIT`) travels with it; every partition already
//! holds at most that many rows (DataFusion's `TopK` below the merge).

use std::fmt::Write as _;
use std::sync::Arc;

use arrow::compute::SortOptions;
use arrow::datatypes::SchemaRef;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{LexOrdering, PhysicalSortExpr};
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet};
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::sorts::streaming_merge::StreamingMergeBuilder;

/// How a client merges a query's sorted result partitions into its result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultMerge {
    /// The sort key, most significant first.
    pub columns: Vec<SortColumn>,
    /// At most this many rows, when set.
    pub fetch: Option<usize>,
}

/// One column of a [`ResultMerge`]'s sort key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortColumn {
    /// The column's index in the result schema, and its name there.
    pub index: usize,
    pub name: String,
    pub descending: bool,
    pub nulls_first: bool,
}

impl ResultMerge {
    /// The merge `merge` does, if it sorts by plain columns only.
    pub fn of(merge: &SortPreservingMergeExec) -> Option<Self> {
        let columns = merge
            .expr()
            .iter()
            .map(|e| {
                let column = e.expr.downcast_ref::<Column>()?;
                Some(SortColumn {
                    index: column.index(),
                    name: column.name().to_string(),
                    descending: e.options.descending,
                    nulls_first: e.options.nulls_first,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        (!columns.is_empty()).then_some(Self {
            columns,
            fetch: merge.fetch(),
        })
    }

    pub fn to_proto(&self) -> ember_proto::ResultMerge {
        ember_proto::ResultMerge {
            columns: self
                .columns
                .iter()
                .map(|c| ember_proto::SortColumn {
                    index: c.index as u32,
                    name: c.name.clone(),
                    descending: c.descending,
                    nulls_first: c.nulls_first,
                })
                .collect(),
            fetch: self.fetch.map(|f| f as u64),
        }
    }

    /// The merge a scheduler sent for a result of `schema`; an error if it
    /// names a column the schema does not have.
    pub fn from_proto(merge: &ember_proto::ResultMerge, schema: &SchemaRef) -> Result<Self> {
        let columns = merge
            .columns
            .iter()
            .map(|c| {
                let index = c.index as usize;
                match schema.fields().get(index) {
                    Some(f) if f.name() == &c.name => Ok(SortColumn {
                        index,
                        name: c.name.clone(),
                        descending: c.descending,
                        nulls_first: c.nulls_first,
                    }),
                    _ => Err(DataFusionError::Plan(format!(
                        "the result merge sorts by column {} ({}), which the result schema \
                         does not have at that index",
                        c.index, c.name
                    ))),
                }
            })
            .collect::<Result<Vec<_>>>()?;
        if columns.is_empty() {
            return Err(DataFusionError::Plan(
                "a result merge with no sort column".into(),
            ));
        }
        Ok(Self {
            columns,
            fetch: merge
                .fetch
                .map(|f| usize::try_from(f).unwrap_or(usize::MAX)),
        })
    }

    /// The sort key as DataFusion's ordering (an error for a merge without
    /// columns, which [`of`](Self::of) and [`from_proto`](Self::from_proto)
    /// never build).
    pub fn ordering(&self) -> Result<LexOrdering> {
        let exprs = self.columns.iter().map(|c| {
            PhysicalSortExpr::new(
                Arc::new(Column::new(&c.name, c.index)),
                SortOptions {
                    descending: c.descending,
                    nulls_first: c.nulls_first,
                },
            )
        });
        LexOrdering::new(exprs)
            .ok_or_else(|| DataFusionError::Plan("a result merge with no sort column".into()))
    }

    /// One sorted stream of `streams` (each sorted by this merge's key, each
    /// of `schema`), cut at `fetch` rows.
    pub fn merge(
        &self,
        schema: SchemaRef,
        streams: Vec<SendableRecordBatchStream>,
        batch_size: usize,
        pool: &Arc<dyn MemoryPool>,
    ) -> Result<SendableRecordBatchStream> {
        let metrics = ExecutionPlanMetricsSet::new();
        StreamingMergeBuilder::new()
            .with_streams(streams)
            .with_schema(schema)
            .with_expressions(&self.ordering()?)
            .with_metrics(BaselineMetrics::new(&metrics, 0))
            .with_batch_size(batch_size)
            .with_fetch(self.fetch)
            .with_reservation(MemoryConsumer::new("ResultMerge").register(pool))
            .build()
    }

    /// One line for `EXPLAIN`.
    pub fn display(&self) -> String {
        let mut out = String::from("SortPreservingMerge on the client: [");
        for (i, c) in self.columns.iter().enumerate() {
            let _ = write!(
                out,
                "{}{}@{} {}{}",
                if i > 0 { ", " } else { "" },
                c.name,
                c.index,
                if c.descending { "DESC" } else { "ASC" },
                if c.nulls_first {
                    " NULLS FIRST"
                } else {
                    " NULLS LAST"
                },
            );
        }
        out.push(']');
        if let Some(fetch) = self.fetch {
            let _ = write!(out, ", fetch={fetch}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::execution::memory_pool::UnboundedMemoryPool;
    use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
    use futures::TryStreamExt;

    use super::*;

    fn batch(schema: &SchemaRef, keys: &[i64], names: &[&str]) -> RecordBatch {
        RecordBatch::try_new(
            Arc::clone(schema),
            vec![
                Arc::new(Int64Array::from(keys.to_vec())) as ArrayRef,
                Arc::new(StringArray::from(names.to_vec())),
            ],
        )
        .unwrap()
    }

    #[tokio::test]
    async fn sorted_partitions_merge_into_one_sorted_result_cut_at_fetch() {
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("name", DataType::Utf8, false),
        ]));
        let merge = ResultMerge {
            columns: vec![SortColumn {
                index: 0,
                name: "k".into(),
                descending: true,
                nulls_first: false,
            }],
            fetch: Some(4),
        };
        let wire = merge.to_proto();
        let merge = ResultMerge::from_proto(&wire, &schema).unwrap();
        let partitions = [
            vec![
                batch(&schema, &[9, 5], &["a", "b"]),
                batch(&schema, &[2], &["c"]),
            ],
            vec![batch(&schema, &[8, 7, 1], &["d", "e", "f"])],
        ];
        let streams = partitions
            .into_iter()
            .map(|batches| {
                Box::pin(RecordBatchStreamAdapter::new(
                    Arc::clone(&schema),
                    futures::stream::iter(batches.into_iter().map(Ok)),
                )) as SendableRecordBatchStream
            })
            .collect();
        let pool: Arc<dyn MemoryPool> = Arc::new(UnboundedMemoryPool::default());
        let out: Vec<RecordBatch> = merge
            .merge(Arc::clone(&schema), streams, 8192, &pool)
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        let keys: Vec<i64> = out
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .values()
                    .to_vec()
            })
            .collect();
        assert_eq!(keys, [9, 8, 7, 5]);
        assert_eq!(
            merge.display(),
            "SortPreservingMerge on the client: [k@0 DESC NULLS LAST], fetch=4"
        );
    }

    #[test]
    fn a_merge_naming_a_column_the_result_lacks_is_refused() {
        let schema: SchemaRef =
            Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)]));
        let wire = ember_proto::ResultMerge {
            columns: vec![ember_proto::SortColumn {
                index: 1,
                name: "k".into(),
                descending: false,
                nulls_first: false,
            }],
            fetch: None,
        };
        let e = ResultMerge::from_proto(&wire, &schema).unwrap_err();
        assert!(e.to_string().contains("does not have"), "{e}");
    }
}
