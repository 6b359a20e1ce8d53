//! Group commit off the event loop.
//!
//! One thread owns the store's write side. The event loop hands it each batch's records and parks
//! the batch's other actions (replies, publishes, sends, events); the thread commits whatever has
//! queued up while the previous commit was syncing, in one transaction, and reports back; the event
//! loop then releases parked batches strictly in order. Nothing is acknowledged before it is
//! durable, and the event loop never waits on the disk.
//!
//! ```text
//!  event loop: execute(batch) ──records──► commit thread: group = every queued batch
//!              park(rest)                  commit_all(group)  (one transaction, one sync)
//!  release(in order) ◄──── (batch id, result) for each batch of the group
//! ```

use crate::store::Store;
use otpmesh_protocol::role::Record;
use prometheus_client::metrics::histogram::Histogram;
use std::sync::Arc;
use tokio::sync::mpsc;
use tracing::warn;

/// Batches waiting for the commit thread; more fail at once as "storage busy".
pub const MAX_QUEUED_BATCHES: usize = 1024;
/// Batches one transaction takes at most.
pub const MAX_GROUP: usize = 256;
/// A transaction that takes this long or longer is logged with its size: every reply of its
/// group waited that long for it.
pub const SLOW_COMMIT: std::time::Duration = std::time::Duration::from_millis(50);

pub type Outcome = (u64, Result<(), String>);

pub struct Committer {
    batches: Option<mpsc::Sender<(u64, Vec<Record>)>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The store, for reads beside the thread's writes (closed when both let it go).
    store: Arc<Store>,
}

/// Stopping waits for the thread to finish its last commit and close the store, so a node that
/// has stopped holds no lock on its database.
impl Drop for Committer {
    fn drop(&mut self) {
        self.batches.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Committer {
    /// Starts the commit thread; outcomes arrive on the returned receiver, in submission order.
    /// Each transaction's duration goes into `timing`.
    pub fn spawn(
        store: Store,
        timing: Histogram,
    ) -> std::io::Result<(Committer, mpsc::Receiver<Outcome>)> {
        let (batches, mut queued) = mpsc::channel::<(u64, Vec<Record>)>(MAX_QUEUED_BATCHES);
        let (done, outcomes) = mpsc::channel(MAX_QUEUED_BATCHES + MAX_GROUP);
        let store = Arc::new(store);
        let writer = store.clone();
        let thread = std::thread::Builder::new()
            .name("otpmesh-commit".into())
            .spawn(move || {
                while let Some(first) = queued.blocking_recv() {
                    let mut group = vec![first];
                    while group.len() < MAX_GROUP {
                        match queued.try_recv() {
                            Ok(next) => group.push(next),
                            Err(_) => break,
                        }
                    }
                    let records: Vec<&Record> = group.iter().flat_map(|(_, r)| r).collect();
                    let started = std::time::Instant::now();
                    let result = writer.commit_all(&records).map_err(|e| e.to_string());
                    let took = started.elapsed();
                    timing.observe(took.as_secs_f64());
                    if took >= SLOW_COMMIT {
                        warn!(
                            ms = took.as_millis() as u64,
                            batches = group.len(),
                            records = records.len(),
                            "slow storage commit"
                        );
                    }
                    for (id, _) in &group {
                        if done.blocking_send((*id, result.clone())).is_err() {
                            return;
                        }
                    }
                }
            })?;
        Ok((
            Committer {
                batches: Some(batches),
                thread: Some(thread),
                store,
            },
            outcomes,
        ))
    }

    /// The store, to read what is committed (a read sees only whole transactions).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Queues `records` as batch `id`; fails at once when the queue is full or the thread is gone.
    pub fn submit(&self, id: u64, records: Vec<Record>) -> Result<(), String> {
        let Some(batches) = &self.batches else {
            return Err("storage stopped".to_string());
        };
        batches.try_send((id, records)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => "storage busy".to_string(),
            mpsc::error::TrySendError::Closed(_) => "storage stopped".to_string(),
        })
    }
}
