//! Following a job and fetching its result from the executors over Arrow
//! Flight: whole ([`Fetcher::collect`]) or as a stream ([`ResultStream`]).
//!
//! Result partitions are fetched in order, straight from the executors that
//! hold them. A partition that cannot be fetched (its executor died) is
//! reported to the scheduler, which recomputes it; fetching then goes on
//! from that partition. A collected result takes each partition whole, so
//! it recovers at any point. A stream recovers a partition as long as none
//! of its rows were delivered yet; past that it cannot resume exactly (a
//! recomputed partition need not come back in the same order) and says so.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{FlightClient, Ticket};
use ember_proto::scheduler_service_client::SchedulerServiceClient;
use ember_proto::{
    CancelJobRequest, ExecuteRequest, JobState, JobStatus, ReleaseJobRequest, ResultLocation,
    ResultLostRequest, WatchJobRequest, execute_request, execute_response,
};
use futures::{Stream, StreamExt, TryStreamExt};
use tonic::transport::Channel;

use datafusion::error::DataFusionError;
use datafusion::execution::memory_pool::{MemoryPool, UnboundedMemoryPool};
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use ember_planner::ResultMerge;

use crate::context::{QueryResult, RunningJob, Submitted};
use crate::error::{EmberError, Result};

/// One result partition's batches, as they arrive.
type PartitionBatches = futures::stream::BoxStream<
    'static,
    std::result::Result<RecordBatch, arrow_flight::error::FlightError>,
>;

/// How many result partitions a collected result fetches at once.
const CONCURRENT_RESULT_FETCHES: usize = 4;

/// How many times one query's result fetch may lose a partition and wait
/// for it to be recomputed before the query fails.
const MAX_RESULT_RECOVERIES: usize = 8;

/// The client side of a job: the scheduler to ask, and Flight channels to
/// executors (by address, reused across queries).
#[derive(Clone)]
pub struct Fetcher {
    pub scheduler: SchedulerServiceClient<Channel>,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    max_message_size: usize,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fetcher")
    }
}

impl Fetcher {
    pub fn new(scheduler: SchedulerServiceClient<Channel>, max_message_size: usize) -> Self {
        Self {
            scheduler,
            channels: Arc::default(),
            max_message_size,
        }
    }

    /// Submits one statement or logical plan in `session_id`.
    pub async fn submit(
        &self,
        session_id: &str,
        query: execute_request::Query,
    ) -> Result<Submitted> {
        let response = self
            .scheduler
            .clone()
            .execute(ExecuteRequest {
                session_id: session_id.to_string(),
                query: Some(query),
                merges_results: true,
            })
            .await?
            .into_inner();
        match response.result {
            Some(execute_response::Result::Inline(inline)) => {
                let (schema, batches) = ember_planner::ipc_types::read_stream(&inline.ipc_stream)?;
                Ok(Submitted::Done(QueryResult {
                    schema,
                    batches,
                    has_result_set: inline.has_result_set,
                    job: None,
                }))
            }
            Some(execute_response::Result::Job(job)) => {
                let schema = ember_planner::codec::schema_from_bytes(&job.schema)
                    .map_err(|e| EmberError::Internal(e.to_string()))?;
                let merge = job
                    .merge
                    .map(|m| ResultMerge::from_proto(&m, &schema))
                    .transpose()
                    .map_err(|e| EmberError::Internal(e.to_string()))?;
                Ok(Submitted::Job(RunningJob {
                    job_id: job.job_id,
                    schema,
                    merge,
                }))
            }
            None => Err(EmberError::Internal(
                "empty response from the scheduler".into(),
            )),
        }
    }

    /// Follows `job_id` until it ends; the status once it succeeded.
    pub async fn wait(
        &self,
        job_id: &str,
        progress: &mut impl FnMut(&JobStatus),
    ) -> Result<JobStatus> {
        let lost = |e: tonic::Status| {
            EmberError::Cluster(format!(
                "lost the scheduler while job {job_id} ran ({}); the job was lost with it",
                e.message()
            ))
        };
        let mut stream = self
            .scheduler
            .clone()
            .watch_job(WatchJobRequest {
                job_id: job_id.to_string(),
            })
            .await?
            .into_inner();
        while let Some(status) = stream.message().await.map_err(lost)? {
            progress(&status);
            match JobState::try_from(status.state).unwrap_or(JobState::Unspecified) {
                JobState::Succeeded => return Ok(status),
                JobState::Failed => return Err(EmberError::JobFailed(status.error)),
                JobState::Cancelled => return Err(EmberError::Cancelled),
                _ => {}
            }
        }
        Err(EmberError::Cluster(format!(
            "the scheduler stopped reporting on job {job_id}"
        )))
    }

    /// Follows the job and collects its whole result, partition by
    /// partition, recovering lost partitions.
    pub async fn collect(
        &self,
        job_id: &str,
        progress: &mut impl FnMut(&JobStatus),
    ) -> Result<(JobStatus, Vec<Vec<RecordBatch>>)> {
        let mut status = self.wait(job_id, progress).await?;
        let mut batches = vec![];
        let mut next = 0;
        let mut recoveries = 0;
        loop {
            match self.collect_from(&status, next, &mut batches).await {
                Ok(()) => return Ok((status, batches)),
                Err((partition, e)) => {
                    recoveries += 1;
                    if recoveries > MAX_RESULT_RECOVERIES {
                        return Err(e);
                    }
                    status = self
                        .recover(job_id, &status, partition, e, progress)
                        .await?;
                    next = partition;
                }
            }
        }
    }

    /// Fetches the final partitions from `from` on, in order, into
    /// `batches`. A partition is added whole or not at all; on failure,
    /// returns the partition that failed.
    async fn collect_from(
        &self,
        status: &JobStatus,
        from: u32,
        batches: &mut Vec<Vec<RecordBatch>>,
    ) -> Result<(), (u32, EmberError)> {
        // A few partitions are fetched at once (each from its own executor,
        // most often), and taken in order.
        let mut parts = futures::stream::iter(sorted_results(status, from))
            .map(|r| async move {
                let part = async {
                    self.open(&r)
                        .await?
                        .try_collect::<Vec<RecordBatch>>()
                        .await
                        .map_err(|e| fetch_error(&r, e.to_string()))
                };
                (part.await, r)
            })
            .buffered(CONCURRENT_RESULT_FETCHES);
        while let Some((part, r)) = parts.next().await {
            match part {
                Ok(part) => batches.push(part.into_iter().filter(|b| b.num_rows() > 0).collect()),
                Err(e) => {
                    self.forget_channel(&r.flight_address);
                    return Err((r.partition, e));
                }
            }
        }
        Ok(())
    }

    /// Opens one result partition: the batches that came with the job's
    /// status, or a Flight stream from the executor holding them.
    async fn open(&self, r: &ResultLocation) -> Result<PartitionBatches> {
        if !r.direct_result.is_empty() {
            let (_, batches) =
                ember_planner::ipc_types::read_stream(&r.direct_result).map_err(|e| {
                    EmberError::Internal(format!("a result sent with the job's status: {e}"))
                })?;
            return Ok(futures::stream::iter(batches.into_iter().map(Ok)).boxed());
        }
        let channel = self
            .flight_channel(&r.flight_address)
            .await
            .map_err(|e| fetch_error(r, e))?;
        let inner =
            FlightServiceClient::new(channel).max_decoding_message_size(self.max_message_size);
        let stream = FlightClient::new_from_inner(inner)
            .do_get(Ticket::new(r.ticket.clone()))
            .await
            .map_err(|e| fetch_error(r, e.to_string()))?;
        Ok(stream.boxed())
    }

    /// Partition `partition` of `status` could not be fetched (`error`): asks
    /// the scheduler to recompute it and waits until it exists again, from a
    /// new attempt.
    async fn recover(
        &self,
        job_id: &str,
        status: &JobStatus,
        partition: u32,
        error: EmberError,
        progress: &mut impl FnMut(&JobStatus),
    ) -> Result<JobStatus> {
        let Some(lost) = status.results.iter().find(|r| r.partition == partition) else {
            return Err(error);
        };
        if !lost.direct_result.is_empty() {
            // It came with the status and did not decode: no executor holds
            // it, so there is nothing to recompute.
            return Err(error);
        }
        tracing::warn!(job = job_id, partition, error = %error, "result partition lost; asking the cluster to recompute it");
        self.scheduler
            .clone()
            .result_lost(ResultLostRequest {
                job_id: job_id.to_string(),
                partition,
                attempt: lost.attempt,
                message: error.to_string(),
            })
            .await?;
        for _ in 0..500 {
            let status = self.wait(job_id, progress).await?;
            if status
                .results
                .iter()
                .any(|r| r.partition == partition && r.attempt != lost.attempt)
            {
                return Ok(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(error)
    }

    pub async fn cancel(&self, job_id: &str) -> Result<bool> {
        Ok(self
            .scheduler
            .clone()
            .cancel_job(CancelJobRequest {
                job_id: job_id.to_string(),
            })
            .await?
            .into_inner()
            .cancelled)
    }

    /// Frees the job's data on the executors.
    pub async fn release(&self, job_id: &str) {
        let _ = self
            .scheduler
            .clone()
            .release_job(ReleaseJobRequest {
                job_id: job_id.to_string(),
            })
            .await;
    }

    async fn flight_channel(&self, address: &str) -> Result<Channel, String> {
        if let Some(c) = self.channels().get(address) {
            return Ok(c.clone());
        }
        let channel = ember_proto::data_endpoint(address)
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| crate::context::transport_message(&e))?;
        self.channels().insert(address.to_string(), channel.clone());
        Ok(channel)
    }

    /// The executor may be gone: do not keep its channel.
    fn forget_channel(&self, address: &str) {
        self.channels().remove(address);
    }

    fn channels(&self) -> std::sync::MutexGuard<'_, HashMap<String, Channel>> {
        // A poisoned cache is still a valid cache.
        self.channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn fetch_error(r: &ResultLocation, message: String) -> EmberError {
    EmberError::Fetch {
        executor: r.executor_id.clone(),
        message,
    }
}

fn sorted_results(status: &JobStatus, from: u32) -> Vec<ResultLocation> {
    let mut results: Vec<ResultLocation> = status
        .results
        .iter()
        .filter(|r| r.partition >= from)
        .cloned()
        .collect();
    results.sort_by_key(|r| r.partition);
    results
}

/// A query's result as a stream of record batches, fetched from the
/// executors as it is read: the client holds a few batches at a time,
/// whatever the result's size.
///
/// Dropping the stream before its end cancels the job on the cluster; in
/// every case the job's data is freed on the executors.
pub struct ResultStream {
    schema: SchemaRef,
    inner: Pin<Box<dyn Stream<Item = Result<RecordBatch>> + Send>>,
    _job: Option<JobGuard>,
}

impl std::fmt::Debug for ResultStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResultStream")
            .field("schema", &self.schema)
            .finish()
    }
}

impl ResultStream {
    /// The schema of every batch.
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// A result the scheduler answered itself.
    pub(crate) fn ready(schema: SchemaRef, batches: Vec<RecordBatch>) -> Self {
        Self {
            schema,
            inner: Box::pin(futures::stream::iter(batches.into_iter().map(Ok))),
            _job: None,
        }
    }

    /// Follows `job` and streams its result.
    pub(crate) fn job(fetcher: Fetcher, job: RunningJob) -> Self {
        let RunningJob {
            job_id,
            schema,
            merge,
        } = job;
        let finished = Arc::new(AtomicBool::new(false));
        let recovery = Recovery {
            fetcher: fetcher.clone(),
            job_id: job_id.clone(),
            status: None,
            recoveries: 0,
        };
        let inner: Pin<Box<dyn Stream<Item = Result<RecordBatch>> + Send>> = match merge {
            None => Box::pin(futures::stream::try_unfold(
                StreamState {
                    recovery,
                    next: 0,
                    current: None,
                    delivered: 0,
                    finished: Arc::clone(&finished),
                    schema: Arc::clone(&schema),
                },
                StreamState::next_batch,
            )),
            Some(merge) => Box::pin(futures::stream::try_unfold(
                MergeState {
                    recovery,
                    merge,
                    merged: None,
                    delivered: 0,
                    finished: Arc::clone(&finished),
                    schema: Arc::clone(&schema),
                },
                MergeState::next_batch,
            )),
        };
        Self {
            schema,
            inner,
            _job: Some(JobGuard {
                fetcher,
                job_id,
                finished,
            }),
        }
    }
}

impl Stream for ResultStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

/// Cancels an unfinished job and frees its data when the stream goes away.
struct JobGuard {
    fetcher: Fetcher,
    job_id: String,
    finished: Arc<AtomicBool>,
}

impl Drop for JobGuard {
    fn drop(&mut self) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let fetcher = self.fetcher.clone();
        let job_id = std::mem::take(&mut self.job_id);
        let finished = self.finished.load(Ordering::SeqCst);
        handle.spawn(async move {
            if !finished {
                let _ = fetcher.cancel(&job_id).await;
            }
            fetcher.release(&job_id).await;
        });
    }
}

/// What a result stream needs to have a lost partition recomputed: the
/// job's last status, and how many times it already did.
struct Recovery {
    fetcher: Fetcher,
    job_id: String,
    status: Option<JobStatus>,
    recoveries: usize,
}

impl Recovery {
    /// The job's status once it succeeded (waited for the first time).
    async fn status(&mut self) -> Result<&JobStatus> {
        if self.status.is_none() {
            let status = self.fetcher.wait(&self.job_id, &mut |_| {}).await?;
            self.status = Some(status);
        }
        self.status
            .as_ref()
            .ok_or_else(|| EmberError::Internal("no job status".into()))
    }

    /// Partition `partition` could not be fetched (`error`): has it
    /// recomputed, within the bound on recoveries.
    async fn recover(&mut self, partition: u32, error: EmberError) -> Result<()> {
        self.recoveries += 1;
        let Some(status) = self
            .status
            .as_ref()
            .filter(|_| self.recoveries <= MAX_RESULT_RECOVERIES)
        else {
            return Err(error);
        };
        let status = self
            .fetcher
            .recover(&self.job_id, status, partition, error, &mut |_| {})
            .await?;
        self.status = Some(status);
        Ok(())
    }
}

/// Streams the result partitions one after the other.
struct StreamState {
    recovery: Recovery,
    /// The partition being read (or to open next).
    next: u32,
    current: Option<(ResultLocation, PartitionBatches)>,
    /// Rows of the current partition already handed out.
    delivered: usize,
    finished: Arc<AtomicBool>,
    /// The schema the client was told; every batch is given it.
    schema: SchemaRef,
}

impl StreamState {
    async fn next_batch(mut self) -> Result<Option<(RecordBatch, Self)>> {
        loop {
            if let Some((location, stream)) = &mut self.current {
                match stream.next().await {
                    Some(Ok(batch)) if batch.num_rows() == 0 => continue,
                    Some(Ok(batch)) => {
                        self.delivered += batch.num_rows();
                        let batch = conform(batch, &self.schema)?;
                        return Ok(Some((batch, self)));
                    }
                    Some(Err(e)) => {
                        let location = location.clone();
                        self.current = None;
                        let fetcher = &self.recovery.fetcher;
                        fetcher.forget_channel(&location.flight_address);
                        let error = fetch_error(&location, e.to_string());
                        if self.delivered > 0 {
                            return Err(cannot_resume(&location, self.delivered, &e));
                        }
                        self.recovery.recover(location.partition, error).await?;
                        continue;
                    }
                    None => {
                        self.current = None;
                        self.next += 1;
                        continue;
                    }
                }
            }
            let status = self.recovery.status().await?;
            let Some(location) = sorted_results(status, self.next).into_iter().next() else {
                self.finished.store(true, Ordering::SeqCst);
                return Ok(None);
            };
            self.next = location.partition;
            self.delivered = 0;
            match self.recovery.fetcher.open(&location).await {
                Ok(stream) => self.current = Some((location, stream)),
                Err(e) => {
                    self.recovery
                        .fetcher
                        .forget_channel(&location.flight_address);
                    self.recovery.recover(location.partition, e).await?;
                }
            }
        }
    }
}

/// Streams the result partitions merged into one sorted stream (see
/// [`ResultMerge`]): every partition is open at once. A partition lost
/// before any row was handed out is recomputed and the merge starts over;
/// past that, as with partitions read in order, the stream cannot resume.
struct MergeState {
    recovery: Recovery,
    merge: ResultMerge,
    merged: Option<SendableRecordBatchStream>,
    /// Rows already handed out.
    delivered: usize,
    finished: Arc<AtomicBool>,
    schema: SchemaRef,
}

/// A result partition that failed while being merged, as the merge's error.
#[derive(Debug)]
struct LostPartition {
    location: ResultLocation,
    error: EmberError,
}

impl std::fmt::Display for LostPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "result partition {}: {}",
            self.location.partition, self.error
        )
    }
}

impl std::error::Error for LostPartition {}

impl MergeState {
    async fn next_batch(mut self) -> Result<Option<(RecordBatch, Self)>> {
        loop {
            if let Some(merged) = &mut self.merged {
                match merged.next().await {
                    Some(Ok(batch)) if batch.num_rows() == 0 => continue,
                    Some(Ok(batch)) => {
                        self.delivered += batch.num_rows();
                        return Ok(Some((batch, self)));
                    }
                    Some(Err(e)) => {
                        self.merged = None;
                        let lost = match e.find_root() {
                            DataFusionError::External(inner) => {
                                inner.downcast_ref::<LostPartition>()
                            }
                            _ => None,
                        };
                        let Some(lost) = lost else {
                            return Err(merge_failed(e));
                        };
                        let location = lost.location.clone();
                        self.recovery
                            .fetcher
                            .forget_channel(&location.flight_address);
                        if self.delivered > 0 {
                            return Err(cannot_resume(&location, self.delivered, &lost.error));
                        }
                        let error = fetch_error(&location, lost.error.to_string());
                        self.recovery.recover(location.partition, error).await?;
                        continue;
                    }
                    None => {
                        self.finished.store(true, Ordering::SeqCst);
                        return Ok(None);
                    }
                }
            }
            let locations = sorted_results(self.recovery.status().await?, 0);
            let fetcher = &self.recovery.fetcher;
            // Every partition is opened at once: the merge needs them all.
            let opened = futures::future::join_all(locations.into_iter().map(|location| async {
                let stream = fetcher.open(&location).await;
                (stream, location)
            }))
            .await;
            let mut streams = Vec::with_capacity(opened.len());
            let mut recomputed = false;
            for (stream, location) in opened {
                match stream {
                    Ok(stream) => streams.push(partition_stream(location, stream, &self.schema)),
                    Err(e) => {
                        self.recovery
                            .fetcher
                            .forget_channel(&location.flight_address);
                        self.recovery.recover(location.partition, e).await?;
                        recomputed = true;
                        break;
                    }
                }
            }
            if recomputed {
                // Open them all again, from the status that has it back.
                continue;
            }
            self.merged = Some(merge_streams(&self.merge, &self.schema, streams)?);
        }
    }
}

/// Rows per batch of a merged result.
const MERGE_BATCH_ROWS: usize = 8192;

/// `streams` (each sorted, each of `schema`) merged into one sorted stream.
/// The merge's buffers are accounted to a pool of its own: the client holds
/// a few batches per partition, whatever the result's size.
fn merge_streams(
    merge: &ResultMerge,
    schema: &SchemaRef,
    streams: Vec<SendableRecordBatchStream>,
) -> Result<SendableRecordBatchStream> {
    let pool: Arc<dyn MemoryPool> = Arc::new(UnboundedMemoryPool::default());
    merge
        .merge(Arc::clone(schema), streams, MERGE_BATCH_ROWS, &pool)
        .map_err(merge_failed)
}

fn merge_failed(e: DataFusionError) -> EmberError {
    EmberError::Internal(format!("merging the result: {e}"))
}

/// `batch` given the announced `schema`, as a merge input's item.
fn conformed(batch: RecordBatch, schema: &SchemaRef) -> datafusion::error::Result<RecordBatch> {
    conform(batch, schema).map_err(|e| DataFusionError::External(Box::new(e)))
}

/// One result partition as an input of the merge: its batches given the
/// announced schema; a failure names the partition.
fn partition_stream(
    location: ResultLocation,
    stream: PartitionBatches,
    schema: &SchemaRef,
) -> SendableRecordBatchStream {
    let announced = Arc::clone(schema);
    let batches = stream.map(move |item| {
        let lost = |error: EmberError| {
            DataFusionError::External(Box::new(LostPartition {
                location: location.clone(),
                error,
            }))
        };
        match item {
            Ok(batch) => conformed(batch, &announced),
            Err(e) => Err(lost(fetch_error(&location, e.to_string()))),
        }
    });
    Box::pin(RecordBatchStreamAdapter::new(Arc::clone(schema), batches))
}

/// Whole result partitions merged into one sorted result (see
/// [`ResultMerge`]), each batch given the announced `schema`.
pub(crate) async fn merge_partitions(
    merge: &ResultMerge,
    schema: &SchemaRef,
    partitions: Vec<Vec<RecordBatch>>,
) -> Result<Vec<RecordBatch>> {
    let streams = partitions
        .into_iter()
        .map(|batches| {
            let announced = Arc::clone(schema);
            let batches = batches.into_iter().map(move |b| conformed(b, &announced));
            Box::pin(RecordBatchStreamAdapter::new(
                Arc::clone(schema),
                futures::stream::iter(batches),
            )) as SendableRecordBatchStream
        })
        .collect();
    merge_streams(merge, schema, streams)?
        .try_collect()
        .await
        .map_err(merge_failed)
}

fn cannot_resume(
    location: &ResultLocation,
    delivered: usize,
    e: &dyn std::fmt::Display,
) -> EmberError {
    EmberError::Fetch {
        executor: location.executor_id.clone(),
        message: format!(
            "result partition {} was lost after {delivered} rows were delivered; \
             a stream cannot resume it exactly, run the query again ({e})",
            location.partition
        ),
    }
}

/// Gives `batch` the schema the client was told. An operator may mark a
/// column nullable where the plan's schema says it is not (or the other way
/// round), or name a nested field differently; the values are the same, and
/// a client that trusts the announced schema must get it. A batch whose values
/// do not fit it is an error, never passed on.
pub(crate) fn conform(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if batch.schema_ref() == schema {
        return Ok(batch);
    }
    let misfit = |e: arrow::error::ArrowError| {
        EmberError::Internal(format!(
            "a result batch does not fit the query's schema ({e}): batch {:?}, query {:?}",
            batch.schema(),
            schema
        ))
    };
    ember_planner::ipc_types::cast_to_schema(&batch, schema).map_err(misfit)
}
