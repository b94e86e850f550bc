//! Arrow types the IPC format cannot carry, carried anyway.
//!
//! arrow-ipc refuses a dictionary whose values are themselves a dictionary
//! (`Dictionary(Int32, Dictionary(UInt32, Utf8))`), a type DataFusion makes
//! and answers with (`arrow_cast`, string functions over such a column).
//! Everything Ember sends as IPC (Flight streams of shuffle and result
//! partitions, inline results, registered batches, schemas inside plans)
//! goes through here: such a column travels with its inner dictionary
//! decoded (`Dictionary(Int32, Utf8)`, the same values) and its field's real
//! type in the field's metadata ([`SENT_AS`]); the reader casts it back. A
//! schema without such a type is sent untouched, at no cost. An in-memory
//! table, whose batches travel inside the plan as IPC, is sent as a scan of
//! such batches under a projection casting them back
//! ([`sendable_memory_scan`]).

use std::collections::HashMap;
use std::io::Cursor;
use std::str::FromStr;
use std::sync::Arc;

use arrow::array::{RecordBatch, RecordBatchOptions};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, FieldRef, Fields, Schema, SchemaRef};
use arrow::error::Result;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::source::{DataSource, DataSourceExec};
use datafusion::error::Result as DFResult;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{CastExpr, Column};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::projection::ProjectionExec;

/// The field metadata key holding the type a column had before sending.
pub const SENT_AS: &str = "ember.sent_as";

/// `schema` as IPC can write it: the same `Arc` when it already can.
pub fn sendable_schema(schema: &SchemaRef) -> SchemaRef {
    if !schema
        .fields()
        .iter()
        .any(|f| sendable(f.data_type()).is_some())
    {
        return Arc::clone(schema);
    }
    let fields: Fields = schema
        .fields()
        .iter()
        .map(|f| match sendable(f.data_type()) {
            None => Arc::clone(f),
            Some(data_type) => {
                let mut metadata = f.metadata().clone();
                metadata.insert(SENT_AS.to_string(), f.data_type().to_string());
                Arc::new(
                    f.as_ref()
                        .clone()
                        .with_data_type(data_type)
                        .with_metadata(metadata),
                )
            }
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// `batch` as IPC can write it: itself unless a column's type cannot be
/// written (its own schema decides, nullability included).
pub fn sendable_batch(batch: RecordBatch) -> Result<RecordBatch> {
    let sent = sendable_schema(batch.schema_ref());
    if Arc::ptr_eq(&sent, batch.schema_ref()) {
        return Ok(batch);
    }
    cast_to_schema(&batch, &sent)
}

/// The schema that was sent as `received`, metadata of ours removed.
pub fn restored_schema(received: &SchemaRef) -> Result<SchemaRef> {
    if !received
        .fields()
        .iter()
        .any(|f| f.metadata().contains_key(SENT_AS))
    {
        return Ok(Arc::clone(received));
    }
    let fields = received
        .fields()
        .iter()
        .map(|f| {
            let Some(sent_as) = f.metadata().get(SENT_AS) else {
                return Ok(Arc::clone(f));
            };
            let data_type = DataType::from_str(sent_as)?;
            let metadata: HashMap<_, _> = f
                .metadata()
                .iter()
                .filter(|(k, _)| k.as_str() != SENT_AS)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            Ok(Arc::new(
                f.as_ref()
                    .clone()
                    .with_data_type(data_type)
                    .with_metadata(metadata),
            ))
        })
        .collect::<Result<Fields>>()?;
    Ok(Arc::new(Schema::new_with_metadata(
        fields,
        received.metadata().clone(),
    )))
}

/// `batch`, as received, with the column types of `schema` (the reader's
/// own, or [`restored_schema`]); names and nullability stay the batch's.
pub fn restored_batch(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let same_types = batch
        .schema_ref()
        .fields()
        .iter()
        .zip(schema.fields())
        .all(|(a, b)| a.data_type() == b.data_type());
    if same_types {
        return Ok(batch);
    }
    let fields: Fields = batch
        .schema_ref()
        .fields()
        .iter()
        .zip(schema.fields())
        .map(|(got, want)| -> FieldRef {
            let mut metadata = got.metadata().clone();
            metadata.remove(SENT_AS);
            Arc::new(
                got.as_ref()
                    .clone()
                    .with_data_type(want.data_type().clone())
                    .with_metadata(metadata),
            )
        })
        .collect();
    let target = Arc::new(Schema::new_with_metadata(
        fields,
        batch.schema_ref().metadata().clone(),
    ));
    cast_to_schema(&batch, &target)
}

/// An IPC stream of `batches`, written as [`sendable_schema`] says.
pub fn write_stream<'a>(
    schema: &SchemaRef,
    batches: impl IntoIterator<Item = &'a RecordBatch>,
) -> Result<Vec<u8>> {
    let sent = sendable_schema(schema);
    let mut buf = Vec::new();
    let mut writer = StreamWriter::try_new(&mut buf, &sent)?;
    for batch in batches {
        writer.write(&sendable_batch(batch.clone())?)?;
    }
    writer.finish()?;
    drop(writer);
    Ok(buf)
}

/// The schema and batches of a stream [`write_stream`] wrote, restored.
pub fn read_stream(bytes: &[u8]) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let reader = StreamReader::try_new(Cursor::new(bytes), None)?;
    let schema = restored_schema(&reader.schema())?;
    let batches = reader
        .map(|batch| restored_batch(batch?, &schema))
        .collect::<Result<Vec<_>>>()?;
    Ok((schema, batches))
}

/// A scan of in-memory batches IPC cannot write, as a scan of batches it
/// can under a projection that casts them back (`None`: `plan` is no such
/// scan). The scan's own projection is applied to the batches first.
pub fn sendable_memory_scan(
    plan: &Arc<dyn ExecutionPlan>,
) -> DFResult<Option<Arc<dyn ExecutionPlan>>> {
    let Some(memory) = plan
        .downcast_ref::<DataSourceExec>()
        .and_then(|exec| exec.data_source().downcast_ref::<MemorySourceConfig>())
    else {
        return Ok(None);
    };
    let schema = plan.schema();
    if !schema
        .fields()
        .iter()
        .any(|f| sendable(f.data_type()).is_some())
    {
        return Ok(None);
    }
    let sent: SchemaRef = Arc::new(Schema::new_with_metadata(
        schema
            .fields()
            .iter()
            .map(|f| match sendable(f.data_type()) {
                Some(data_type) => retyped(f, data_type),
                None => Arc::clone(f),
            })
            .collect::<Fields>(),
        schema.metadata().clone(),
    ));
    let partitions = memory
        .partitions()
        .iter()
        .map(|batches| {
            batches
                .iter()
                .map(|batch| {
                    let batch = match memory.projection() {
                        Some(projection) => batch.project(projection)?,
                        None => batch.clone(),
                    };
                    cast_to_schema(&batch, &sent)
                })
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<Vec<_>>>()?;
    let scan = MemorySourceConfig::try_new(&partitions, Arc::clone(&sent), None)?
        .with_limit(memory.fetch())
        .with_show_sizes(memory.show_sizes())
        .try_with_sort_information(memory.sort_information().to_vec())?;
    let exprs = schema.fields().iter().enumerate().map(|(i, f)| {
        let column = Arc::new(Column::new(f.name(), i)) as Arc<dyn PhysicalExpr>;
        let expr = if sent.field(i).data_type() == f.data_type() {
            column
        } else {
            Arc::new(CastExpr::new(column, f.data_type().clone(), None)) as Arc<dyn PhysicalExpr>
        };
        (expr, f.name().clone())
    });
    let scan = DataSourceExec::from_data_source(scan);
    Ok(Some(Arc::new(ProjectionExec::try_new(exprs, scan)?)))
}

/// The type IPC can write for `data_type` (`None`: `data_type` itself): each
/// dictionary of dictionaries becomes a dictionary of the inner values.
fn sendable(data_type: &DataType) -> Option<DataType> {
    let field = |f: &FieldRef| sendable(f.data_type()).map(|t| retyped(f, t));
    match data_type {
        DataType::Dictionary(key, values) => match values.as_ref() {
            DataType::Dictionary(_, inner) => Some(DataType::Dictionary(
                key.clone(),
                Box::new(sendable(inner).unwrap_or_else(|| inner.as_ref().clone())),
            )),
            other => sendable(other).map(|v| DataType::Dictionary(key.clone(), Box::new(v))),
        },
        DataType::List(f) => field(f).map(DataType::List),
        DataType::LargeList(f) => field(f).map(DataType::LargeList),
        DataType::FixedSizeList(f, n) => field(f).map(|f| DataType::FixedSizeList(f, *n)),
        DataType::Map(f, sorted) => field(f).map(|f| DataType::Map(f, *sorted)),
        DataType::Struct(fields) => {
            if !fields.iter().any(|f| sendable(f.data_type()).is_some()) {
                return None;
            }
            Some(DataType::Struct(
                fields
                    .iter()
                    .map(|f| field(f).unwrap_or_else(|| Arc::clone(f)))
                    .collect(),
            ))
        }
        _ => None,
    }
}

fn retyped(field: &FieldRef, data_type: DataType) -> FieldRef {
    Arc::new(field.as_ref().clone().with_data_type(data_type))
}

/// `batch`'s columns cast to the types of `schema`, which it then has
/// (names, nullability and metadata included; the client's `conform` too).
pub fn cast_to_schema(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field): (_, &Arc<Field>)| {
            if column.data_type() == field.data_type() {
                Ok(Arc::clone(column))
            } else {
                cast(column, field.data_type())
            }
        })
        .collect::<Result<Vec<_>>>()?;
    RecordBatch::try_new_with_options(
        Arc::clone(schema),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    use arrow::array::{Array, ArrayRef, DictionaryArray, Int64Array, StringArray};
    use arrow::datatypes::{Int32Type, UInt32Type};

    /// A column of `Dictionary(Int32, Dictionary(UInt32, Utf8))`.
    fn nested_dictionary() -> ArrayRef {
        let inner: DictionaryArray<UInt32Type> = vec![Some("b"), None, Some("a"), Some("b")]
            .into_iter()
            .collect();
        let keys = arrow::array::Int32Array::from(vec![0, 1, 2, 3, 0]);
        Arc::new(DictionaryArray::<Int32Type>::try_new(keys, Arc::new(inner)).unwrap())
    }

    #[test]
    fn a_dictionary_of_dictionaries_travels_and_comes_back_as_it_was() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("d", nested_dictionary().data_type().clone(), true),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3, 4, 5])),
                nested_dictionary(),
            ],
        )
        .unwrap();
        // What arrow-ipc refuses on its own.
        let mut refused = Vec::new();
        assert!(StreamWriter::try_new(&mut refused, &schema).is_err());

        let bytes = write_stream(&schema, [&batch]).unwrap();
        let (got_schema, got) = read_stream(&bytes).unwrap();
        assert_eq!(got_schema, schema);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].schema(), schema);
        let values = arrow::compute::cast(got[0].column(1), &DataType::Utf8).unwrap();
        let values = values.as_any().downcast_ref::<StringArray>().unwrap();
        let values: Vec<_> = values.iter().collect();
        assert_eq!(values, [Some("b"), None, Some("a"), Some("b"), Some("b")]);
    }

    #[test]
    fn other_schemas_are_sent_untouched() {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "d",
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            true,
        )]));
        assert!(Arc::ptr_eq(&sendable_schema(&schema), &schema));
        assert!(Arc::ptr_eq(&restored_schema(&schema).unwrap(), &schema));
    }

    #[test]
    fn nested_inside_a_list_or_struct_is_sent_too() {
        let nested = nested_dictionary().data_type().clone();
        let list = DataType::List(Arc::new(Field::new("item", nested.clone(), true)));
        let strukt = DataType::Struct(vec![Field::new("s", nested, true)].into());
        for data_type in [list, strukt] {
            let sent = sendable(&data_type).expect("changed");
            assert!(!format!("{sent}").contains("Dictionary(UInt32"), "{sent}");
        }
    }
}
