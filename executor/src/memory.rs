//! The executor's memory pool, shared by DataFusion's operators and the
//! shuffle store.
//!
//! [`ExecutorPool`] is DataFusion's `FairSpillPool` (each spilling operator
//! gets a fair share of what unspillable reservations leave), plus one rule:
//! when an operator would be refused memory, the shuffle store first writes
//! in-memory map outputs to disk ([`ShuffleStore::evict`]) and the request is
//! tried again. Shuffle data thus uses memory operators leave idle and gives
//! it back when they need it, as Spark's unified memory manager lets
//! execution evict storage; operators and shuffle data together stay within
//! `--memory`.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use datafusion::error::Result;
use datafusion::execution::memory_pool::{
    FairSpillPool, MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};

use crate::store::ShuffleStore;

/// The name the shuffle store's reservation is registered under.
pub const STORE_CONSUMER: &str = "ShuffleStore";

#[derive(Debug)]
pub struct ExecutorPool {
    inner: FairSpillPool,
    store: OnceLock<Weak<ShuffleStore>>,
    /// The most it has had reserved at once.
    peak: AtomicUsize,
}

impl ExecutorPool {
    pub fn new(bytes: usize) -> Self {
        Self {
            inner: FairSpillPool::new(bytes),
            store: OnceLock::new(),
            peak: AtomicUsize::new(0),
        }
    }

    /// The most memory operators and shuffle outputs together have held at
    /// once since the executor started.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    fn grown(&self) {
        self.peak
            .fetch_max(self.inner.reserved(), Ordering::Relaxed);
    }

    /// The store to evict from (set once, when the store exists).
    pub fn set_store(&self, store: &Arc<ShuffleStore>) {
        let _ = self.store.set(Arc::downgrade(store));
    }
}

impl fmt::Display for ExecutorPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ExecutorPool({})", self.inner)
    }
}

impl MemoryPool for ExecutorPool {
    fn name(&self) -> &str {
        "ExecutorPool"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.inner.register(consumer)
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.inner.unregister(consumer)
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.inner.grow(reservation, additional);
        self.grown();
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.inner.shrink(reservation, shrink)
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        let refused = match self.inner.try_grow(reservation, additional) {
            Ok(()) => {
                self.grown();
                return Ok(());
            }
            Err(e) => e,
        };
        if reservation.consumer().name() == STORE_CONSUMER {
            return Err(refused);
        }
        let Some(store) = self.store.get().and_then(Weak::upgrade) else {
            return Err(refused);
        };
        // What the pool lacks for this request (a spilling operator may be
        // refused below that, at its fair share; it then spills).
        let free = match self.inner.memory_limit() {
            MemoryLimit::Finite(limit) => limit.saturating_sub(self.inner.reserved()),
            _ => 0,
        };
        let wanted = additional.saturating_sub(free).max(1);
        if store.evict(wanted as u64) == 0 {
            return Err(refused);
        }
        self.inner.try_grow(reservation, additional)?;
        self.grown();
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.inner.reserved()
    }

    fn memory_limit(&self) -> MemoryLimit {
        self.inner.memory_limit()
    }
}
