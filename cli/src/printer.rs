//! Standard output from a thread of its own: a node's lines are written there, so that a reader
//! that falls behind (a full pipe) never keeps the node from its work or its signals.
//!
//! ```text
//!  event loop ─► node task: format ─► Printer::print (a burst gathered in one chunk)
//!                                       Printer::flush ─try─► [MAX_PENDING chunks] ─► thread: write
//!                                        (full: the chunk is dropped, its lines counted)
//! ```
//!
//! Before, the node task wrote each line itself: once a reader stopped reading (a benchmark that
//! asked a distributor for thousands of OTPs a second without reading its events), the pipe
//! filled, the task blocked in `write`, never saw SIGTERM, and was killed after the grace period.

use std::sync::mpsc;
use std::time::Duration;

/// Chunks waiting for standard output; more are dropped, and their lines counted.
pub const MAX_PENDING: usize = 256;
/// A chunk is handed over once it holds this much, burst or not.
pub const CHUNK_BYTES: usize = 16 * 1024;

pub struct Printer {
    chunks: Option<mpsc::SyncSender<String>>,
    done: mpsc::Receiver<()>,
    /// The burst being gathered, and how many lines it holds.
    pending: String,
    lines: u64,
    dropped: u64,
}

impl Printer {
    /// Starts the writing thread.
    pub fn start() -> std::io::Result<Printer> {
        let (chunks, queue) = mpsc::sync_channel::<String>(MAX_PENDING);
        let (finished, done) = mpsc::channel();
        std::thread::Builder::new()
            .name("otpmesh-stdout".into())
            .spawn(move || {
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                while let Ok(chunk) = queue.recv() {
                    let _ = out.write_all(chunk.as_bytes());
                    let _ = out.flush();
                }
                let _ = finished.send(());
            })?;
        Ok(Printer::with(chunks, done))
    }

    fn with(chunks: mpsc::SyncSender<String>, done: mpsc::Receiver<()>) -> Printer {
        Printer {
            chunks: Some(chunks),
            done,
            pending: String::new(),
            lines: 0,
            dropped: 0,
        }
    }

    /// Adds `line` to the burst; a burst of [`CHUNK_BYTES`] is handed over at once.
    pub fn print(&mut self, line: String) {
        self.pending.push_str(&line);
        self.pending.push('\n');
        self.lines += 1;
        if self.pending.len() >= CHUNK_BYTES {
            self.flush();
        }
    }

    /// Hands the burst to the writing thread; drops it when [`MAX_PENDING`] chunks are waiting.
    pub fn flush(&mut self) {
        let (Some(chunks), false) = (&self.chunks, self.pending.is_empty()) else {
            return;
        };
        let lines = std::mem::take(&mut self.lines);
        if chunks.try_send(std::mem::take(&mut self.pending)).is_err() {
            if self.dropped == 0 {
                tracing::warn!(
                    "standard output is not being read; lines are dropped until it is again"
                );
            }
            self.dropped += lines;
        }
    }

    /// Lets the thread write what is queued, for at most `within` (a reader that never reads
    /// again does not keep the process from ending).
    pub fn finish(mut self, within: Duration) {
        self.flush();
        self.chunks.take();
        let _ = self.done.recv_timeout(within);
        if self.dropped > 0 {
            tracing::warn!(
                dropped = self.dropped,
                "lines of output were dropped unread"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_bursts_and_counts_their_lines_instead_of_blocking() {
        // A queue of two chunks that nobody drains.
        let (chunks, _queue) = mpsc::sync_channel::<String>(2);
        let (_finished, done) = mpsc::channel();
        let mut printer = Printer::with(chunks, done);
        for burst in 0..5 {
            for line in 0..3 {
                printer.print(format!("burst {burst} line {line}"));
            }
            printer.flush();
        }
        assert_eq!(printer.dropped, 9);
        let started = std::time::Instant::now();
        printer.finish(Duration::from_millis(50));
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
