//! Arrow Flight encoding of a stream of batches, written with arrow's IPC
//! writer directly.
//!
//! arrow-flight 59's `FlightDataEncoder` announces every `LargeList` column
//! as a `List` (its schema preparation rebuilds list fields with
//! `Field::new_list`) while sending the 64-bit offsets: readers then decode
//! empty or corrupt lists ("non-monotonic offset"). This encoder sends the
//! schema as it is, dictionaries as dictionaries (re-sent when they change),
//! and splits large batches so each message stays near
//! [`TARGET_MESSAGE_BYTES`].

use arrow::datatypes::SchemaRef;
use arrow::ipc::writer::{DictionaryTracker, IpcDataGenerator, IpcWriteContext, IpcWriteOptions};
use arrow::record_batch::RecordBatch;
use arrow_flight::FlightData;
use arrow_flight::error::FlightError;
use futures::{Stream, StreamExt, stream};

/// Batches larger than this are sent in row slices of about this size.
pub const TARGET_MESSAGE_BYTES: usize = 2 << 20;

/// The Flight messages for `schema` followed by `batches`.
pub fn encode(
    schema: SchemaRef,
    batches: impl Stream<Item = Result<RecordBatch, FlightError>> + Send + 'static,
) -> impl Stream<Item = Result<FlightData, FlightError>> + Send + 'static {
    let options = IpcWriteOptions::default();
    let generator = IpcDataGenerator::default();
    let mut tracker = DictionaryTracker::new(false);
    let mut context = IpcWriteContext::default();
    // Types IPC cannot write travel as types it can (see `ipc_types`).
    let schema = ember_planner::ipc_types::sendable_schema(&schema);
    let schema_message: FlightData = generator
        .schema_to_bytes_with_dictionary_tracker(&schema, &mut tracker, &options)
        .into();
    let messages = batches
        .map(move |batch| {
            let batch = match batch.and_then(|b| {
                ember_planner::ipc_types::sendable_batch(b).map_err(FlightError::Arrow)
            }) {
                Ok(batch) => batch,
                Err(e) => return vec![Err(e)],
            };
            let mut out = vec![];
            for slice in split(batch) {
                match generator.encode(&slice, &mut tracker, &options, &mut context) {
                    Ok((dictionaries, data)) => {
                        out.extend(dictionaries.into_iter().map(|d| Ok(d.into())));
                        out.push(Ok(data.into()));
                    }
                    Err(e) => {
                        out.push(Err(FlightError::Arrow(e)));
                        break;
                    }
                }
            }
            out
        })
        .flat_map(stream::iter);
    stream::once(async move { Ok(schema_message) }).chain(messages)
}

/// Row slices of `batch` of about [`TARGET_MESSAGE_BYTES`] each.
fn split(batch: RecordBatch) -> Vec<RecordBatch> {
    let bytes = ember_planner::shuffle::data_bytes(&batch);
    let rows = batch.num_rows();
    let pieces = bytes.div_ceil(TARGET_MESSAGE_BYTES).clamp(1, rows.max(1));
    if pieces == 1 {
        return vec![batch];
    }
    let per_piece = rows.div_ceil(pieces);
    (0..rows)
        .step_by(per_piece)
        .map(|start| batch.slice(start, per_piece.min(rows - start)))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, DictionaryArray, Int64Array, LargeListArray, StringArray};
    use arrow::buffer::OffsetBuffer;
    use arrow::datatypes::{Field, Int32Type};
    use arrow_flight::decode::FlightRecordBatchStream;
    use futures::TryStreamExt;

    use super::*;

    async fn round_trip(batch: RecordBatch) -> Vec<RecordBatch> {
        let messages = encode(batch.schema(), stream::iter(vec![Ok(batch)]));
        FlightRecordBatchStream::new_from_flight_data(messages)
            .try_collect()
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn large_lists_and_dictionaries_arrive_as_sent() {
        let values = Int64Array::from(vec![1, 2, 3, 4, 5]);
        let large = LargeListArray::new(
            Arc::new(Field::new("item", arrow::datatypes::DataType::Int64, true)),
            OffsetBuffer::new(vec![0i64, 2, 5].into()),
            Arc::new(values),
            None,
        );
        let dict: DictionaryArray<Int32Type> = vec!["a", "b", "a"][..2].iter().copied().collect();
        let batch = RecordBatch::try_from_iter(vec![
            ("l", Arc::new(large) as ArrayRef),
            ("d", Arc::new(dict) as ArrayRef),
        ])
        .unwrap();
        for sent in [batch.clone(), batch.slice(1, 1)] {
            let got = round_trip(sent.clone()).await;
            assert_eq!(got, vec![sent]);
        }
    }

    #[tokio::test]
    async fn big_batches_are_split_and_nothing_is_lost() {
        let strings: Vec<String> = (0..20_000).map(|i| format!("{i:0>200}")).collect();
        let batch = RecordBatch::try_from_iter(vec![(
            "s",
            Arc::new(StringArray::from(strings)) as ArrayRef,
        )])
        .unwrap();
        let got = round_trip(batch.clone()).await;
        assert!(got.len() > 1);
        assert_eq!(
            arrow::compute::concat_batches(&batch.schema(), &got).unwrap(),
            batch
        );
    }
}
