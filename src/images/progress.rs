//! Byte progress of a pull, across all of an app's images. Both counters only grow.

use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Progress {
    done: AtomicU64,
    total: AtomicU64,
    /// Of `done`, what came over the network (the rest was in the content store).
    transferred: AtomicU64,
}

/// SPEC `progress`: `{"done_bytes", "total_bytes", "percent"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ProgressInfo {
    pub done_bytes: u64,
    pub total_bytes: u64,
    /// Whole percent, rounded down: 100 only when every byte is there.
    pub percent: u8,
}

impl Progress {
    pub fn add_total(&self, bytes: u64) {
        self.total.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Bytes of a blob the content store already had.
    pub fn add_present(&self, bytes: u64) {
        self.done.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Bytes received from a registry.
    pub fn add_transferred(&self, bytes: u64) {
        self.transferred.fetch_add(bytes, Ordering::Relaxed);
        self.done.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn transferred_bytes(&self) -> u64 {
        self.transferred.load(Ordering::Relaxed)
    }

    pub fn info(&self) -> ProgressInfo {
        let total = self.total.load(Ordering::Relaxed);
        // Never report more done than known in total, whatever order the adds race in.
        let done = self.done.load(Ordering::Relaxed).min(total);
        let percent = (done * 100).checked_div(total).unwrap_or(0) as u8;
        ProgressInfo {
            done_bytes: done,
            total_bytes: total,
            percent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_rounds_down_and_caps() {
        let progress = Progress::default();
        assert_eq!(progress.info().percent, 0);
        progress.add_total(300);
        progress.add_transferred(199);
        progress.add_present(100);
        assert_eq!(progress.info().percent, 99);
        assert_eq!(progress.transferred_bytes(), 199);
        progress.add_transferred(1);
        assert_eq!(
            progress.info(),
            ProgressInfo {
                done_bytes: 300,
                total_bytes: 300,
                percent: 100
            }
        );
        progress.add_transferred(50);
        assert_eq!(progress.info().done_bytes, 300);
    }
}
