//! [`TaskShuffle`]: this executor's implementation of the planner's
//! [`ShuffleService`] for one task attempt. The task's map output goes into
//! the store under the attempt's key; map outputs of this executor are read
//! straight from the store, the others are streamed from their owner over
//! Arrow Flight. Any failure to read becomes a typed [`FetchFailedError`]
//! naming the attempt whose output could not be read.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::datatypes::SchemaRef;
use arrow_flight::FlightClient;
use arrow_flight::Ticket;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use datafusion::error::{DataFusionError, Result};
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use ember_planner::{FetchFailedError, MapOutputLocation, MapOutputSink, ShuffleService};
use futures::TryStreamExt;
use parking_lot::Mutex;
use prost::Message;
use tonic::transport::Channel;

use crate::store::ShuffleStore;

/// Flight channels to other executors, one per address, shared by all tasks.
#[derive(Debug, Default)]
pub struct PeerChannels {
    channels: Mutex<HashMap<String, Channel>>,
    max_message_size: usize,
}

impl PeerChannels {
    pub fn new(max_message_size: usize) -> Self {
        Self {
            channels: Mutex::new(HashMap::new()),
            max_message_size,
        }
    }

    pub fn client(&self, address: &str) -> Result<FlightClient> {
        let channel = {
            let mut channels = self.channels.lock();
            match channels.get(address) {
                Some(c) => c.clone(),
                None => {
                    let c = ember_proto::data_endpoint(address)
                        .map_err(|e| DataFusionError::External(Box::new(e)))?
                        .connect_lazy();
                    channels.insert(address.to_string(), c.clone());
                    c
                }
            }
        };
        let inner = FlightServiceClient::new(channel)
            .max_decoding_message_size(self.max_message_size)
            .max_encoding_message_size(self.max_message_size);
        Ok(FlightClient::new_from_inner(inner))
    }
}

/// Shuffle counters of one task: buckets read, and their bytes (as Arrow
/// in memory).
#[derive(Debug, Default)]
pub struct FetchCounters {
    pub local: AtomicU64,
    pub remote: AtomicU64,
    pub local_bytes: Arc<AtomicU64>,
    pub remote_bytes: Arc<AtomicU64>,
}

/// `stream`, adding the size of each batch to `bytes`.
fn counted(stream: SendableRecordBatchStream, bytes: &Arc<AtomicU64>) -> SendableRecordBatchStream {
    let bytes = Arc::clone(bytes);
    let schema = stream.schema();
    Box::pin(RecordBatchStreamAdapter::new(
        schema,
        stream.inspect_ok(move |b| {
            bytes.fetch_add(
                ember_planner::shuffle::data_bytes(b) as u64,
                Ordering::Relaxed,
            );
        }),
    ))
}

/// The shuffle service of one running task.
#[derive(Debug)]
pub struct TaskShuffle {
    pub executor_id: String,
    pub job_id: String,
    pub job_token: String,
    /// The attempt this task runs as: the key of its map output.
    pub attempt: u64,
    /// Map output locations of every stage this task reads.
    pub inputs: HashMap<u32, Vec<MapOutputLocation>>,
    pub store: Arc<ShuffleStore>,
    pub peers: Arc<PeerChannels>,
    pub counters: Arc<FetchCounters>,
}

impl ShuffleService for TaskShuffle {
    fn create_sink(
        &self,
        stage_id: u32,
        map_partition: u32,
        buckets: usize,
        schema: SchemaRef,
    ) -> Result<Box<dyn MapOutputSink>> {
        Ok(Box::new(self.store.sink(
            &self.job_id,
            (stage_id, map_partition, self.attempt),
            buckets,
            schema,
        )))
    }

    fn fetch(
        &self,
        stage_id: u32,
        map_partition: u32,
        bucket: u32,
        schema: SchemaRef,
    ) -> Result<SendableRecordBatchStream> {
        let location = self
            .inputs
            .get(&stage_id)
            .and_then(|locs| locs.iter().find(|l| l.map_partition == map_partition))
            .ok_or_else(|| {
                DataFusionError::Internal(format!(
                    "no location for stage {stage_id} map partition {map_partition}"
                ))
            })?
            .clone();
        let owner = location.executor_id.clone();
        let map_attempt = location.attempt;
        let failed = move |message: String, unreachable: bool| FetchFailedError {
            executor_id: owner.clone(),
            map_stage: stage_id,
            map_partition,
            map_attempt,
            unreachable,
            message,
        };

        if location.executor_id == self.executor_id {
            self.counters.local.fetch_add(1, Ordering::Relaxed);
            let output = self
                .store
                .open_job(
                    &self.job_id,
                    &self.job_token,
                    (stage_id, map_partition, map_attempt),
                )
                .map_err(|e| DataFusionError::from(failed(e.to_string(), false)))?;
            return output
                .stream(bucket)
                .map(|s| counted(s, &self.counters.local_bytes))
                .map_err(|e| DataFusionError::from(failed(e.to_string(), false)));
        }

        self.counters.remote.fetch_add(1, Ordering::Relaxed);
        let ticket = ember_proto::FetchTicket {
            job_id: self.job_id.clone(),
            job_token: self.job_token.clone(),
            stage_id,
            map_partition,
            bucket,
            attempt: map_attempt,
            result: false,
        };
        let mut client = self.peers.client(&location.address)?;
        let expected = Arc::clone(&schema);
        let failed_remote = failed.clone();
        let stream = futures::stream::once(async move {
            client
                .do_get(Ticket::new(ticket.encode_to_vec()))
                .await
                .map_err(|e| DataFusionError::from(failed(e.to_string(), is_unreachable(&e))))
        })
        .map_ok(move |batches| {
            let failed = failed_remote.clone();
            batches
                .map_err(move |e| DataFusionError::from(failed(e.to_string(), is_unreachable(&e))))
        })
        .try_flatten()
        .and_then(move |batch| {
            // A type IPC cannot carry arrives as one it can (`ipc_types`).
            let batch = ember_planner::ipc_types::restored_batch(batch, &expected)
                .map_err(DataFusionError::from);
            futures::future::ready(batch)
        });
        Ok(counted(
            Box::pin(RecordBatchStreamAdapter::new(schema, stream)),
            &self.counters.remote_bytes,
        ))
    }
}

/// Did the owner fail to answer at all (refused or broken connection), as
/// opposed to answering with an error of its own?
fn is_unreachable(e: &FlightError) -> bool {
    match e {
        FlightError::Tonic(status) => matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
        ),
        _ => false,
    }
}
