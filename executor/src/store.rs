//! The shuffle store: every map output this executor produced, bucket by
//! bucket, until the scheduler says the job is done.
//!
//! Map outputs stay in memory as Arrow batches while the store is under its
//! budget (`--shuffle-memory`). A map task that would push it over spills its
//! buckets to Arrow IPC stream files under `<work-dir>/<job>/`, and keeps
//! writing there. Files are named from ids the store generated itself; nothing
//! a client sends ever becomes a path.
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
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;
use datafusion::error::{DataFusionError, Result};
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
    #[error("job {job} has no output for stage {stage} map partition {map}")]
    MissingOutput { job: String, stage: u32, map: u32 },
    #[error("map output has {buckets} buckets, bucket {bucket} requested")]
    NoSuchBucket { bucket: u32, buckets: usize },
}

#[derive(Debug)]
enum Bucket {
    Memory(Vec<RecordBatch>),
    Spilled(PathBuf),
}

/// One finished map task's output.
#[derive(Debug)]
pub struct MapOutput {
    schema: SchemaRef,
    buckets: Vec<Bucket>,
    memory_bytes: u64,
}

impl MapOutput {
    /// Streams one bucket, batch by batch.
    pub fn stream(&self, bucket: u32) -> Result<SendableRecordBatchStream, StoreError> {
        let b = self
            .buckets
            .get(bucket as usize)
            .ok_or(StoreError::NoSuchBucket {
                bucket,
                buckets: self.buckets.len(),
            })?;
        let schema = Arc::clone(&self.schema);
        Ok(match b {
            Bucket::Memory(batches) => Box::pin(RecordBatchStreamAdapter::new(
                schema,
                futures::stream::iter(batches.clone().into_iter().map(Ok)),
            )),
            Bucket::Spilled(path) => spilled_stream(schema, path.clone()),
        })
    }
}

/// Reads an IPC file on a blocking thread, handing batches over a small
/// channel so at most a couple are in memory at once.
fn spilled_stream(schema: SchemaRef, path: PathBuf) -> SendableRecordBatchStream {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<RecordBatch>>(2);
    tokio::task::spawn_blocking(move || {
        let reader = match File::open(&path)
            .map_err(DataFusionError::from)
            .and_then(|f| Ok(StreamReader::try_new(BufReader::new(f), None)?))
        {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        };
        for batch in reader {
            if tx
                .blocking_send(batch.map_err(DataFusionError::from))
                .is_err()
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
    outputs: HashMap<(u32, u32), Arc<MapOutput>>,
}

/// All map outputs of this executor.
#[derive(Debug)]
pub struct ShuffleStore {
    work_dir: PathBuf,
    budget: u64,
    used: AtomicU64,
    spilled_bytes: AtomicU64,
    jobs: Mutex<HashMap<String, JobData>>,
}

impl ShuffleStore {
    pub fn new(work_dir: PathBuf, budget: u64) -> Self {
        Self {
            work_dir,
            budget,
            used: AtomicU64::new(0),
            spilled_bytes: AtomicU64::new(0),
            jobs: Mutex::new(HashMap::new()),
        }
    }

    /// Bytes of shuffle data held in memory now.
    pub fn memory_used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Bytes written to spill files since start.
    pub fn spilled_bytes(&self) -> u64 {
        self.spilled_bytes.load(Ordering::Relaxed)
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
        stage: u32,
        map: u32,
    ) -> Result<Arc<MapOutput>, StoreError> {
        let jobs = self.jobs.lock();
        let data = jobs
            .get(job)
            .ok_or_else(|| StoreError::UnknownJob(job.to_string()))?;
        if data.token != token {
            return Err(StoreError::WrongToken(job.to_string()));
        }
        data.outputs
            .get(&(stage, map))
            .cloned()
            .ok_or(StoreError::MissingOutput {
                job: job.to_string(),
                stage,
                map,
            })
    }

    /// Opens the sink of one map task.
    pub fn sink(
        self: &Arc<Self>,
        job: &str,
        stage: u32,
        map: u32,
        buckets: usize,
        schema: SchemaRef,
    ) -> StoreSink {
        StoreSink {
            store: Arc::clone(self),
            job: job.to_string(),
            stage,
            map,
            schema,
            buckets: (0..buckets).map(|_| SinkBucket::Memory(vec![])).collect(),
            reserved: 0,
            stats: MapOutputStats::default(),
            spill_dir: None,
        }
    }

    /// Frees everything of `job`: memory and spill files.
    pub fn remove_job(&self, job: &str) {
        let removed = self.jobs.lock().remove(job);
        if let Some(data) = removed {
            let freed: u64 = data.outputs.values().map(|o| o.memory_bytes).sum();
            self.used.fetch_sub(freed, Ordering::Relaxed);
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

    fn try_reserve(&self, bytes: u64) -> bool {
        let mut current = self.used.load(Ordering::Relaxed);
        loop {
            if current + bytes > self.budget {
                return false;
            }
            match self.used.compare_exchange_weak(
                current,
                current + bytes,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    fn release(&self, bytes: u64) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
    }

    fn publish(&self, job: &str, stage: u32, map: u32, output: MapOutput) -> Result<()> {
        let mut jobs = self.jobs.lock();
        let Some(data) = jobs.get_mut(job) else {
            // The job was cancelled or released while this task ran.
            self.release(output.memory_bytes);
            return Err(DataFusionError::Execution(format!(
                "job {job} is no longer registered on this executor"
            )));
        };
        if let Some(old) = data.outputs.insert((stage, map), Arc::new(output)) {
            self.release(old.memory_bytes);
        }
        Ok(())
    }
}

enum SinkBucket {
    Memory(Vec<RecordBatch>),
    Spilled(PathBuf, Box<StreamWriter<BufWriter<File>>>),
}

/// A map task's [`MapOutputSink`] into the [`ShuffleStore`].
pub struct StoreSink {
    store: Arc<ShuffleStore>,
    job: String,
    stage: u32,
    map: u32,
    schema: SchemaRef,
    buckets: Vec<SinkBucket>,
    reserved: u64,
    stats: MapOutputStats,
    spill_dir: Option<PathBuf>,
}

impl StoreSink {
    fn spill_path(&mut self, bucket: usize) -> Result<PathBuf> {
        let dir = match &self.spill_dir {
            Some(d) => d.clone(),
            None => {
                let d = self
                    .store
                    .job_dir(&self.job)
                    .join(format!("stage-{}", self.stage));
                std::fs::create_dir_all(&d)?;
                self.spill_dir = Some(d.clone());
                d
            }
        };
        Ok(dir.join(format!("map-{}-bucket-{bucket}.arrow", self.map)))
    }

    fn open_spill(&mut self, bucket: usize) -> Result<(PathBuf, StreamWriter<BufWriter<File>>)> {
        let path = self.spill_path(bucket)?;
        let file = BufWriter::new(File::create(&path)?);
        Ok((path.clone(), StreamWriter::try_new(file, &self.schema)?))
    }

    /// Moves every in-memory bucket of this task to disk.
    fn spill_all(&mut self) -> Result<()> {
        for i in 0..self.buckets.len() {
            if let SinkBucket::Memory(batches) = &mut self.buckets[i] {
                let batches = std::mem::take(batches);
                let (path, mut w) = self.open_spill(i)?;
                for b in &batches {
                    w.write(b)?;
                    self.store
                        .spilled_bytes
                        .fetch_add(b.get_array_memory_size() as u64, Ordering::Relaxed);
                }
                self.buckets[i] = SinkBucket::Spilled(path, Box::new(w));
            }
        }
        self.store.release(self.reserved);
        self.reserved = 0;
        Ok(())
    }
}

impl MapOutputSink for StoreSink {
    fn push(&mut self, bucket: usize, batch: RecordBatch) -> Result<()> {
        if bucket >= self.buckets.len() {
            return Err(DataFusionError::Internal(format!(
                "bucket {bucket} out of range ({} buckets)",
                self.buckets.len()
            )));
        }
        let size = batch.get_array_memory_size() as u64;
        self.stats.rows += batch.num_rows() as u64;
        self.stats.bytes += size;
        self.stats.batches += 1;
        let in_memory = self
            .buckets
            .iter()
            .all(|b| matches!(b, SinkBucket::Memory(_)));
        if in_memory && !self.store.try_reserve(size) {
            tracing::debug!(
                job = %self.job, stage = self.stage, map = self.map,
                "shuffle memory budget reached, spilling map output"
            );
            self.spill_all()?;
        } else if in_memory {
            self.reserved += size;
        }
        match &mut self.buckets[bucket] {
            SinkBucket::Memory(batches) => batches.push(batch),
            SinkBucket::Spilled(_, w) => {
                w.write(&batch)?;
                self.store.spilled_bytes.fetch_add(size, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<MapOutputStats> {
        let mut this = *self;
        let mut buckets = Vec::with_capacity(this.buckets.len());
        for b in std::mem::take(&mut this.buckets) {
            buckets.push(match b {
                SinkBucket::Memory(batches) => Bucket::Memory(batches),
                SinkBucket::Spilled(path, mut w) => {
                    w.finish()?;
                    Bucket::Spilled(path)
                }
            });
        }
        let output = MapOutput {
            schema: Arc::clone(&this.schema),
            buckets,
            memory_bytes: this.reserved,
        };
        // Ownership of the reservation moves to the published output.
        this.reserved = 0;
        this.store
            .publish(&this.job, this.stage, this.map, output)?;
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

    async fn rows(out: &MapOutput, bucket: u32) -> usize {
        let batches: Vec<RecordBatch> = out.stream(bucket).unwrap().try_collect().await.unwrap();
        batches.iter().map(|b| b.num_rows()).sum()
    }

    #[tokio::test]
    async fn map_output_over_budget_spills_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(ShuffleStore::new(dir.path().to_path_buf(), 1));
        store.register_job("j1", "t").unwrap();
        let mut sink = Box::new(store.sink("j1", 0, 0, 2, batch(1).schema()));
        sink.push(0, batch(10)).unwrap();
        sink.push(1, batch(5)).unwrap();
        sink.push(1, batch(5)).unwrap();
        let stats = (sink as Box<dyn MapOutputSink>).finish().unwrap();
        assert_eq!(stats.rows, 20);
        assert_eq!(store.memory_used(), 0);
        assert!(store.spilled_bytes() > 0);
        let out = store.open_job("j1", "t", 0, 0).unwrap();
        assert_eq!(rows(&out, 0).await, 10);
        assert_eq!(rows(&out, 1).await, 10);
        store.remove_job("j1");
        assert!(!store.job_dir("j1").exists());
    }

    #[tokio::test]
    async fn in_memory_output_is_freed_with_its_job() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(ShuffleStore::new(dir.path().to_path_buf(), 1 << 30));
        store.register_job("j2", "t").unwrap();
        let mut sink = Box::new(store.sink("j2", 1, 3, 1, batch(1).schema()));
        sink.push(0, batch(7)).unwrap();
        (sink as Box<dyn MapOutputSink>).finish().unwrap();
        assert!(store.memory_used() > 0);
        assert_eq!(rows(&store.open_job("j2", "t", 1, 3).unwrap(), 0).await, 7);
        store.remove_job("j2");
        assert_eq!(store.memory_used(), 0);
    }

    #[test]
    fn wrong_token_and_unknown_ids_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = ShuffleStore::new(dir.path().to_path_buf(), 1024);
        store.register_job("j3", "secret").unwrap();
        assert_eq!(
            store.open_job("j3", "guess", 0, 0).unwrap_err(),
            StoreError::WrongToken("j3".into())
        );
        assert!(matches!(
            store.open_job("nope", "secret", 0, 0),
            Err(StoreError::UnknownJob(_))
        ));
        assert!(!is_valid_id("../../etc/passwd"));
        assert!(is_valid_id("3f2a-11"));
    }
}
