//! The shuffle store: every map output this executor produced, bucket by
//! bucket, until the scheduler says the job is done.
//!
//! Map outputs stay in memory as Arrow batches, reserved from the executor's
//! one memory pool (the pool DataFusion's operators reserve from, sized by
//! `--memory`), while everything the pool holds stays under the shuffle
//! budget (`--shuffle-memory`, three quarters of the pool by default): shuffle
//! data uses memory operators leave idle, operators always find the rest,
//! and the two together never exceed `--memory`. A map task that would push
//! past the budget, or that the pool refuses, spills:
//! all of its buckets go into one Arrow IPC file under `<work-dir>/job-<id>/`
//! (one open file per task however many buckets, opened only when needed),
//! with an index of which batches belong to which bucket; a reader seeks to
//! its bucket's batches.
//!
//! Outputs are keyed by (stage, map partition, attempt), and spill files are
//! named after the attempt: a re-run of a map task never overwrites or
//! truncates what a reader of an earlier attempt may still be streaming.
//! Files are named from ids the store generated itself; nothing a client
//! sends ever becomes a path.
//!
//! Jobs are registered with a secret token when their first task arrives;
//! [`ShuffleStore::open_job`] refuses a token that does not match, so the
//! Flight port serves a job's data only to the job's own tasks and client.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::FileReader;
use arrow::ipc::writer::FileWriter;
use arrow::record_batch::RecordBatch;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool, MemoryReservation};
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use ember_planner::{MapOutputSink, MapOutputStats};
use parking_lot::Mutex;

/// Why a bucket could not be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("unknown job {0}")]
    UnknownJob(String),
    #[error("wrong token for job {0}")]
    WrongToken(String),
    #[error("job {job} has no output for stage {stage} map partition {map} attempt {attempt}")]
    MissingOutput {
        job: String,
        stage: u32,
        map: u32,
        attempt: u64,
    },
    #[error("map output has {buckets} buckets, bucket {bucket} requested")]
    NoSuchBucket { bucket: u32, buckets: usize },
}

/// Which output: (stage, map partition, attempt).
pub type OutputKey = (u32, u32, u64);

#[derive(Debug)]
enum Buckets {
    Memory(Vec<Vec<RecordBatch>>),
    /// One IPC file; `index[b]` lists the file's batch numbers of bucket `b`.
    Spilled {
        path: PathBuf,
        index: Vec<Vec<usize>>,
    },
}

/// One finished map task's output.
#[derive(Debug)]
pub struct MapOutput {
    schema: SchemaRef,
    buckets: Buckets,
    memory_bytes: u64,
}

impl MapOutput {
    /// Streams one bucket, batch by batch.
    pub fn stream(&self, bucket: u32) -> Result<SendableRecordBatchStream, StoreError> {
        let count = match &self.buckets {
            Buckets::Memory(b) => b.len(),
            Buckets::Spilled { index, .. } => index.len(),
        };
        if bucket as usize >= count {
            return Err(StoreError::NoSuchBucket {
                bucket,
                buckets: count,
            });
        }
        let schema = Arc::clone(&self.schema);
        Ok(match &self.buckets {
            Buckets::Memory(buckets) => Box::pin(RecordBatchStreamAdapter::new(
                schema,
                futures::stream::iter(buckets[bucket as usize].clone().into_iter().map(Ok)),
            )),
            Buckets::Spilled { path, index } => {
                spilled_stream(schema, path.clone(), index[bucket as usize].clone())
            }
        })
    }
}

/// Reads the batches `batches` of an IPC file on a blocking thread, handing
/// them over a small channel so at most a couple are in memory at once.
fn spilled_stream(
    schema: SchemaRef,
    path: PathBuf,
    batches: Vec<usize>,
) -> SendableRecordBatchStream {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<RecordBatch>>(2);
    tokio::task::spawn_blocking(move || {
        let mut reader = match File::open(&path)
            .map_err(DataFusionError::from)
            .and_then(|f| Ok(FileReader::try_new(BufReader::new(f), None)?))
        {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        };
        for i in batches {
            let batch = reader.set_index(i).and_then(|_| {
                reader.next().unwrap_or_else(|| {
                    Err(arrow::error::ArrowError::IpcError(format!(
                        "spill file {} ends before batch {i}",
                        path.display()
                    )))
                })
            });
            let failed = batch.is_err();
            if tx
                .blocking_send(batch.map_err(DataFusionError::from))
                .is_err()
                || failed
            {
                return;
            }
        }
    });
    Box::pin(RecordBatchStreamAdapter::new(
        schema,
        tokio_stream::wrappers::ReceiverStream::new(rx),
    ))
}

#[derive(Debug)]
struct JobData {
    token: String,
    outputs: HashMap<OutputKey, Arc<MapOutput>>,
}

/// All map outputs of this executor.
#[derive(Debug)]
pub struct ShuffleStore {
    work_dir: PathBuf,
    budget: u64,
    pool: Arc<dyn MemoryPool>,
    /// The store's share of `pool`: the bytes of every in-memory output.
    reservation: Mutex<MemoryReservation>,
    spilled_bytes: AtomicU64,
    jobs: Mutex<HashMap<String, JobData>>,
}

impl ShuffleStore {
    /// A store keeping outputs in memory from `pool` while everything `pool`
    /// holds stays under `budget` bytes.
    pub fn new(work_dir: PathBuf, budget: u64, pool: Arc<dyn MemoryPool>) -> Self {
        let reservation = MemoryConsumer::new(crate::memory::STORE_CONSUMER).register(&pool);
        Self {
            work_dir,
            budget,
            pool,
            reservation: Mutex::new(reservation),
            spilled_bytes: AtomicU64::new(0),
            jobs: Mutex::new(HashMap::new()),
        }
    }

    /// Bytes of shuffle data held in memory now.
    pub fn memory_used(&self) -> u64 {
        self.reservation.lock().size() as u64
    }

    /// Bytes written to spill files since start.
    pub fn spilled_bytes(&self) -> u64 {
        self.spilled_bytes.load(Ordering::Relaxed)
    }

    /// Jobs that have data (or a registration) here.
    pub fn job_ids(&self) -> Vec<String> {
        self.jobs.lock().keys().cloned().collect()
    }

    /// Registers `job` with its token (idempotent; a second token for the
    /// same job is refused).
    pub fn register_job(&self, job: &str, token: &str) -> Result<(), StoreError> {
        let mut jobs = self.jobs.lock();
        let entry = jobs.entry(job.to_string()).or_insert_with(|| JobData {
            token: token.to_string(),
            outputs: HashMap::new(),
        });
        if entry.token != token {
            return Err(StoreError::WrongToken(job.to_string()));
        }
        Ok(())
    }

    /// Looks up a finished map output, checking the job's token.
    pub fn open_job(
        &self,
        job: &str,
        token: &str,
        key: OutputKey,
    ) -> Result<Arc<MapOutput>, StoreError> {
        let jobs = self.jobs.lock();
        let data = jobs
            .get(job)
            .ok_or_else(|| StoreError::UnknownJob(job.to_string()))?;
        if data.token != token {
            return Err(StoreError::WrongToken(job.to_string()));
        }
        let (stage, map, attempt) = key;
        data.outputs
            .get(&key)
            .cloned()
            .ok_or(StoreError::MissingOutput {
                job: job.to_string(),
                stage,
                map,
                attempt,
            })
    }

    /// Opens the sink of one map task attempt.
    pub fn sink(
        self: &Arc<Self>,
        job: &str,
        key: OutputKey,
        buckets: usize,
        schema: SchemaRef,
    ) -> StoreSink {
        StoreSink {
            store: Arc::clone(self),
            job: job.to_string(),
            key,
            schema,
            memory: vec![vec![]; buckets],
            spill: None,
            reserved: 0,
            stats: MapOutputStats::default(),
        }
    }

    /// The batches of a finished output's only bucket, if it is held in
    /// memory (a final partition, to be sent with its task's report).
    pub fn memory_output(
        &self,
        job: &str,
        key: OutputKey,
    ) -> Option<(SchemaRef, Vec<RecordBatch>)> {
        let jobs = self.jobs.lock();
        let output = jobs.get(job)?.outputs.get(&key)?;
        match &output.buckets {
            Buckets::Memory(buckets) if buckets.len() == 1 => {
                Some((Arc::clone(&output.schema), buckets[0].clone()))
            }
            _ => None,
        }
    }

    /// Forgets one output (sent elsewhere), freeing its memory, or deleting
    /// its spill file if it was written to disk meanwhile (evicted between
    /// being read and being forgotten).
    pub fn remove_output(&self, job: &str, key: OutputKey) {
        let removed = self
            .jobs
            .lock()
            .get_mut(job)
            .and_then(|data| data.outputs.remove(&key));
        let Some(output) = removed else { return };
        self.release(output.memory_bytes);
        if let Buckets::Spilled { path, .. } = &output.buckets
            && let Err(e) = std::fs::remove_file(path)
        {
            tracing::warn!(job, ?key, error = %e, "could not remove a spill file");
        }
    }

    /// Frees everything of `job`: memory and spill files.
    pub fn remove_job(&self, job: &str) {
        let removed = self.jobs.lock().remove(job);
        if let Some(data) = removed {
            let freed: u64 = data.outputs.values().map(|o| o.memory_bytes).sum();
            self.release(freed);
        }
        let dir = self.job_dir(job);
        if dir.exists()
            && let Err(e) = std::fs::remove_dir_all(&dir)
        {
            tracing::warn!(job, error = %e, "could not remove spill directory");
        }
    }

    fn job_dir(&self, job: &str) -> PathBuf {
        // Job ids are generated by the scheduler and validated before they get
        // here; keep only safe characters anyway.
        let safe: String = job
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        self.work_dir.join(format!("job-{safe}"))
    }

    /// Reserves `bytes` from the pool if the pool, with them, stays under
    /// the budget (and the pool grants them).
    fn try_reserve(&self, bytes: u64) -> bool {
        let reservation = self.reservation.lock();
        if self.pool.reserved() as u64 + bytes > self.budget
            || reservation.try_grow(bytes as usize).is_err()
        {
            return false;
        }
        true
    }

    fn release(&self, bytes: u64) {
        let reservation = self.reservation.lock();
        let bytes = bytes.min(reservation.size() as u64);
        reservation.shrink(bytes as usize);
    }

    /// Writes in-memory map outputs to spill files, earliest stages first,
    /// until `wanted` bytes are freed or none is left in memory: the pool
    /// calls this when an operator would otherwise be refused memory.
    /// Returns the bytes freed. A reader already streaming an evicted output
    /// keeps its batches until it is done.
    pub fn evict(&self, wanted: u64) -> u64 {
        let mut candidates: Vec<(String, OutputKey, Arc<MapOutput>)> = self
            .jobs
            .lock()
            .iter()
            .flat_map(|(job, data)| {
                data.outputs
                    .iter()
                    .filter(|(_, o)| o.memory_bytes > 0)
                    .map(|(key, o)| (job.clone(), *key, Arc::clone(o)))
            })
            .collect();
        candidates.sort_by_key(|(_, key, _)| *key);
        let mut freed = 0;
        for (job, key, output) in candidates {
            if freed >= wanted {
                break;
            }
            let Buckets::Memory(buckets) = &output.buckets else {
                continue;
            };
            let (stage, map, attempt) = key;
            let path = self.job_dir(&job).join(format!(
                "stage-{stage}-map-{map}-attempt-{attempt}-evicted.arrow"
            ));
            let index = match write_spill_file(&path, &output.schema, buckets) {
                Ok(index) => index,
                Err(e) => {
                    tracing::warn!(job, ?key, error = %e, "could not evict a map output");
                    let _ = std::fs::remove_file(&path);
                    continue;
                }
            };
            let spilled = Arc::new(MapOutput {
                schema: Arc::clone(&output.schema),
                buckets: Buckets::Spilled {
                    path: path.clone(),
                    index,
                },
                memory_bytes: 0,
            });
            // Swapped only if the job still holds this very output.
            let swapped = {
                let mut jobs = self.jobs.lock();
                match jobs.get_mut(&job).and_then(|d| d.outputs.get_mut(&key)) {
                    Some(current) if Arc::ptr_eq(current, &output) => {
                        *current = spilled;
                        true
                    }
                    _ => false,
                }
            };
            if swapped {
                self.release(output.memory_bytes);
                self.spilled_bytes
                    .fetch_add(output.memory_bytes, Ordering::Relaxed);
                freed += output.memory_bytes;
            } else {
                let _ = std::fs::remove_file(&path);
            }
        }
        if freed > 0 {
            tracing::debug!(
                freed,
                wanted,
                "evicted map outputs to make room for operators"
            );
        }
        freed
    }

    fn publish(&self, job: &str, key: OutputKey, output: MapOutput) -> Result<()> {
        let mut jobs = self.jobs.lock();
        let Some(data) = jobs.get_mut(job) else {
            // The job was cancelled or released while this task ran.
            self.release(output.memory_bytes);
            return Err(DataFusionError::Execution(format!(
                "job {job} is no longer registered on this executor"
            )));
        };
        if let Some(old) = data.outputs.insert(key, Arc::new(output)) {
            // Attempt ids are unique: this only happens if a task is run twice
            // under one attempt, which the executor never does.
            self.release(old.memory_bytes);
        }
        Ok(())
    }
}

/// Writes `buckets` as one Arrow IPC file at `path`; returns which of the
/// file's batches belong to each bucket.
fn write_spill_file(
    path: &std::path::Path,
    schema: &SchemaRef,
    buckets: &[Vec<RecordBatch>],
) -> Result<Vec<Vec<usize>>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut writer = FileWriter::try_new(BufWriter::new(File::create(path)?), schema)?;
    let mut index = vec![vec![]; buckets.len()];
    let mut n = 0;
    for (bucket, batches) in buckets.iter().enumerate() {
        for batch in batches {
            writer.write(batch)?;
            index[bucket].push(n);
            n += 1;
        }
    }
    writer.finish()?;
    Ok(index)
}

/// The spill file of one map task, opened when the task first spills.
struct SpillFile {
    path: PathBuf,
    writer: FileWriter<BufWriter<File>>,
    index: Vec<Vec<usize>>,
    batches: usize,
}

impl SpillFile {
    fn write(&mut self, bucket: usize, batch: &RecordBatch) -> Result<()> {
        self.writer.write(batch)?;
        self.index[bucket].push(self.batches);
        self.batches += 1;
        Ok(())
    }
}

/// A map task's [`MapOutputSink`] into the [`ShuffleStore`].
pub struct StoreSink {
    store: Arc<ShuffleStore>,
    job: String,
    key: OutputKey,
    schema: SchemaRef,
    /// Buckets kept in memory while the output fits the budget.
    memory: Vec<Vec<RecordBatch>>,
    spill: Option<SpillFile>,
    reserved: u64,
    stats: MapOutputStats,
}

impl StoreSink {
    /// Moves the in-memory buckets to this task's spill file (created now)
    /// and writes there from then on.
    fn start_spilling(&mut self) -> Result<&mut SpillFile> {
        let dir = self.store.job_dir(&self.job);
        std::fs::create_dir_all(&dir)?;
        let (stage, map, attempt) = self.key;
        let path = dir.join(format!("stage-{stage}-map-{map}-attempt-{attempt}.arrow"));
        let writer = FileWriter::try_new(BufWriter::new(File::create(&path)?), &self.schema)?;
        let mut spill = SpillFile {
            path,
            writer,
            index: vec![vec![]; self.memory.len()],
            batches: 0,
        };
        for (bucket, batches) in self.memory.iter_mut().enumerate() {
            for b in std::mem::take(batches) {
                spill.write(bucket, &b)?;
                let size = ember_planner::shuffle::data_bytes(&b) as u64;
                self.stats.spilled_bytes += size;
                self.store.spilled_bytes.fetch_add(size, Ordering::Relaxed);
            }
        }
        self.store.release(self.reserved);
        self.reserved = 0;
        Ok(self.spill.insert(spill))
    }
}

impl MapOutputSink for StoreSink {
    fn push(&mut self, bucket: usize, batch: RecordBatch) -> Result<()> {
        if bucket >= self.memory.len() {
            return Err(DataFusionError::Internal(format!(
                "bucket {bucket} out of range ({} buckets)",
                self.memory.len()
            )));
        }
        let size = ember_planner::shuffle::data_bytes(&batch) as u64;
        self.stats.rows += batch.num_rows() as u64;
        self.stats.bytes += size;
        self.stats.batches += 1;
        if self.spill.is_none() {
            if self.store.try_reserve(size) {
                self.reserved += size;
                self.memory[bucket].push(batch);
                return Ok(());
            }
            tracing::debug!(
                job = %self.job, key = ?self.key,
                "shuffle memory budget reached, spilling map output"
            );
            self.start_spilling()?;
        }
        let spill = match &mut self.spill {
            Some(s) => s,
            None => self.start_spilling()?,
        };
        spill.write(bucket, &batch)?;
        self.stats.spilled_bytes += size;
        self.store.spilled_bytes.fetch_add(size, Ordering::Relaxed);
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<MapOutputStats> {
        let mut this = *self;
        let buckets = match this.spill.take() {
            Some(mut spill) => {
                spill.writer.finish()?;
                Buckets::Spilled {
                    path: spill.path,
                    index: spill.index,
                }
            }
            None => Buckets::Memory(std::mem::take(&mut this.memory)),
        };
        let output = MapOutput {
            schema: Arc::clone(&this.schema),
            buckets,
            memory_bytes: this.reserved,
        };
        // Ownership of the reservation moves to the published output.
        this.reserved = 0;
        this.store.publish(&this.job, this.key, output)?;
        Ok(this.stats.clone())
    }
}

impl Drop for StoreSink {
    fn drop(&mut self) {
        // A task that failed or was cancelled gives its memory back.
        self.store.release(self.reserved);
    }
}

/// Is `id` something the scheduler could have generated (a UUID-like token)?
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int32Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use futures::TryStreamExt;

    fn batch(n: i32) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int32, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int32Array::from_iter_values(0..n))]).unwrap()
    }

    fn test_store(dir: &std::path::Path, budget: u64) -> ShuffleStore {
        let pool = Arc::new(datafusion::execution::memory_pool::UnboundedMemoryPool::default());
        ShuffleStore::new(dir.to_path_buf(), budget, pool)
    }

    async fn rows(out: &MapOutput, bucket: u32) -> usize {
        let batches: Vec<RecordBatch> = out.stream(bucket).unwrap().try_collect().await.unwrap();
        batches.iter().map(|b| b.num_rows()).sum()
    }

    #[tokio::test]
    async fn map_output_over_budget_spills_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(test_store(dir.path(), 1));
        store.register_job("j1", "t").unwrap();
        let mut sink = Box::new(store.sink("j1", (0, 0, 1), 2, batch(1).schema()));
        sink.push(0, batch(10)).unwrap();
        sink.push(1, batch(5)).unwrap();
        sink.push(1, batch(5)).unwrap();
        let stats = (sink as Box<dyn MapOutputSink>).finish().unwrap();
        assert_eq!(stats.rows, 20);
        assert_eq!(store.memory_used(), 0);
        assert!(store.spilled_bytes() > 0);
        assert_eq!(stats.spilled_bytes, stats.bytes, "all of it spilled");
        let out = store.open_job("j1", "t", (0, 0, 1)).unwrap();
        assert_eq!(rows(&out, 0).await, 10);
        assert_eq!(rows(&out, 1).await, 10);
        store.remove_job("j1");
        assert!(!store.job_dir("j1").exists());
    }

    #[tokio::test]
    async fn in_memory_output_is_freed_with_its_job() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(test_store(dir.path(), 1 << 30));
        store.register_job("j2", "t").unwrap();
        let mut sink = Box::new(store.sink("j2", (1, 3, 9), 1, batch(1).schema()));
        sink.push(0, batch(7)).unwrap();
        (sink as Box<dyn MapOutputSink>).finish().unwrap();
        assert!(store.memory_used() > 0);
        assert_eq!(
            rows(&store.open_job("j2", "t", (1, 3, 9)).unwrap(), 0).await,
            7
        );
        store.remove_job("j2");
        assert_eq!(store.memory_used(), 0);
    }

    #[tokio::test]
    async fn an_output_forgotten_after_its_eviction_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(test_store(dir.path(), 1 << 30));
        store.register_job("j3", "t").unwrap();
        for map in 0..2 {
            let mut sink = Box::new(store.sink("j3", (2, map, 4), 1, batch(1).schema()));
            sink.push(0, batch(100)).unwrap();
            (sink as Box<dyn MapOutputSink>).finish().unwrap();
        }
        // Read to be sent with its report, then evicted before it is
        // forgotten.
        assert!(store.memory_output("j3", (2, 0, 4)).is_some());
        assert_eq!(store.evict(u64::MAX), 800);
        let files = || std::fs::read_dir(store.job_dir("j3")).unwrap().count();
        assert_eq!(files(), 2);
        store.remove_output("j3", (2, 0, 4));
        assert_eq!(files(), 1, "the forgotten output's file is gone");
        assert_eq!(
            rows(&store.open_job("j3", "t", (2, 1, 4)).unwrap(), 0).await,
            100
        );
        store.remove_job("j3");
    }

    #[tokio::test]
    async fn buckets_sliced_from_one_batch_count_once() {
        // DataFusion's hash partitioner hands out buckets as slices of one
        // reordered batch: 8 buckets of 10,000 Int32 rows are 40 KB, not 8
        // times 40 KB.
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(test_store(dir.path(), 100_000));
        store.register_job("j5", "t").unwrap();
        let whole = batch(10_000);
        let mut sink = Box::new(store.sink("j5", (0, 0, 1), 8, whole.schema()));
        for bucket in 0..8 {
            sink.push(bucket, whole.slice(bucket * 1_250, 1_250))
                .unwrap();
        }
        let stats = (sink as Box<dyn MapOutputSink>).finish().unwrap();
        assert_eq!(stats.bytes, 40_000);
        assert_eq!(stats.spilled_bytes, 0, "within the budget: nothing spills");
        assert_eq!(store.memory_used(), 40_000);
        store.remove_job("j5");
    }

    #[tokio::test]
    async fn shuffle_data_shares_the_operators_pool() {
        use datafusion::execution::memory_pool::GreedyMemoryPool;
        // A 100 KB pool; shuffle data may fill it up to 80 KB in all.
        let dir = tempfile::tempdir().unwrap();
        let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(100_000));
        let store = Arc::new(ShuffleStore::new(
            dir.path().to_path_buf(),
            80_000,
            Arc::clone(&pool),
        ));
        store.register_job("j6", "t").unwrap();

        // Idle operators: a 40 KB output stays in memory, and the pool
        // knows it.
        let mut sink = Box::new(store.sink("j6", (0, 0, 1), 1, batch(1).schema()));
        sink.push(0, batch(10_000)).unwrap();
        let stats = (sink as Box<dyn MapOutputSink>).finish().unwrap();
        assert_eq!(stats.spilled_bytes, 0);
        assert_eq!(pool.reserved(), 40_000);

        // An operator holding 30 KB: the next 40 KB would take the pool to
        // 110 KB, past the budget: that output spills.
        let operator = MemoryConsumer::new("sort").register(&pool);
        operator.try_grow(30_000).unwrap();
        let mut sink = Box::new(store.sink("j6", (0, 1, 2), 1, batch(1).schema()));
        sink.push(0, batch(10_000)).unwrap();
        let stats = (sink as Box<dyn MapOutputSink>).finish().unwrap();
        assert_eq!(stats.spilled_bytes, 40_000);
        assert_eq!(pool.reserved(), 70_000);
        assert_eq!(
            rows(&store.open_job("j6", "t", (0, 1, 2)).unwrap(), 0).await,
            10_000
        );

        // Freeing the job gives the pool back its memory.
        drop(operator);
        store.remove_job("j6");
        assert_eq!(pool.reserved(), 0);
        assert_eq!(store.memory_used(), 0);
    }

    #[tokio::test]
    async fn operators_take_memory_back_from_shuffle_data() {
        use crate::memory::ExecutorPool;
        let dir = tempfile::tempdir().unwrap();
        let pool = Arc::new(ExecutorPool::new(100_000));
        let shared: Arc<dyn MemoryPool> = Arc::clone(&pool) as _;
        let store = Arc::new(ShuffleStore::new(
            dir.path().to_path_buf(),
            80_000,
            Arc::clone(&shared),
        ));
        pool.set_store(&store);
        store.register_job("j7", "t").unwrap();
        for map in 0..2 {
            let mut sink = Box::new(store.sink("j7", (0, map, 1), 1, batch(1).schema()));
            sink.push(0, batch(10_000)).unwrap();
            (sink as Box<dyn MapOutputSink>).finish().unwrap();
        }
        assert_eq!(pool.reserved(), 80_000);

        // An operator that cannot spill (a hash join's build side) needs
        // 50 KB where 20 KB are free: shuffle data goes to disk for it.
        let operator = MemoryConsumer::new("HashJoinInput").register(&shared);
        operator.try_grow(50_000).unwrap();
        assert_eq!(store.memory_used(), 40_000, "one output evicted");
        assert_eq!(pool.reserved(), 90_000);
        assert_eq!(pool.peak(), 90_000);
        assert_eq!(store.spilled_bytes(), 40_000);
        for map in 0..2 {
            let output = store.open_job("j7", "t", (0, map, 1)).unwrap();
            assert_eq!(rows(&output, 0).await, 10_000, "map {map} read whole");
        }
        // Nothing left to evict past the pool's size: refused.
        assert!(operator.try_grow(60_000).is_err());
        store.remove_job("j7");
        drop(operator);
        assert_eq!(pool.reserved(), 0);
        assert_eq!(pool.peak(), 90_000, "the peak stays");
    }

    #[test]
    fn wrong_token_and_unknown_ids_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = test_store(dir.path(), 1024);
        store.register_job("j3", "secret").unwrap();
        assert_eq!(
            store.open_job("j3", "guess", (0, 0, 0)).unwrap_err(),
            StoreError::WrongToken("j3".into())
        );
        assert!(matches!(
            store.open_job("nope", "secret", (0, 0, 0)),
            Err(StoreError::UnknownJob(_))
        ));
        assert!(!is_valid_id("../../etc/passwd"));
        assert!(is_valid_id("3f2a-11"));
    }

    #[tokio::test]
    async fn a_rerun_never_touches_the_output_of_an_earlier_attempt() {
        let dir = tempfile::tempdir().unwrap();
        // Budget 1: everything spills, so both attempts have files.
        let store = Arc::new(test_store(dir.path(), 1));
        store.register_job("j4", "t").unwrap();
        let mut first = Box::new(store.sink("j4", (0, 0, 1), 1, batch(1).schema()));
        first.push(0, batch(10)).unwrap();
        (first as Box<dyn MapOutputSink>).finish().unwrap();
        let old = store.open_job("j4", "t", (0, 0, 1)).unwrap();
        // A second attempt of the same map partition starts, writes, fails.
        let mut second = Box::new(store.sink("j4", (0, 0, 2), 1, batch(1).schema()));
        second.push(0, batch(3)).unwrap();
        drop(second);
        assert_eq!(rows(&old, 0).await, 10);
        assert!(matches!(
            store.open_job("j4", "t", (0, 0, 2)),
            Err(StoreError::MissingOutput { attempt: 2, .. })
        ));
    }

    #[tokio::test]
    async fn many_buckets_spill_into_one_file_with_buckets_kept_apart() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(test_store(dir.path(), 1));
        store.register_job("j5", "t").unwrap();
        let buckets = 2000;
        let mut sink = Box::new(store.sink("j5", (0, 0, 1), buckets, batch(1).schema()));
        for b in 0..buckets {
            sink.push(b, batch((b % 7) as i32 + 1)).unwrap();
        }
        (sink as Box<dyn MapOutputSink>).finish().unwrap();
        let files = std::fs::read_dir(store.job_dir("j5")).unwrap().count();
        assert_eq!(files, 1);
        let out = store.open_job("j5", "t", (0, 0, 1)).unwrap();
        for b in [0u32, 1, 6, 1999] {
            assert_eq!(rows(&out, b).await, (b % 7) as usize + 1);
        }
    }
}
