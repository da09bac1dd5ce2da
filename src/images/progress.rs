//! Byte progress of a pull, across all of an app's images. Both counters only grow.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Progress {
    done: AtomicU64,
    total: AtomicU64,
    /// Of `done`, what came over the network (the rest was in the content store).
    transferred: AtomicU64,
    /// Requests waiting to be tried again, by a number of their own: their causes.
    retrying: Mutex<BTreeMap<u64, String>>,
    next_note: AtomicU64,
}

/// One request's retry cause, shown while it lives.
pub struct RetryNote<'a> {
    progress: &'a Progress,
    id: u64,
}

impl RetryNote<'_> {
    pub fn set(&self, cause: String) {
        self.progress.notes().insert(self.id, cause);
    }
}

impl Drop for RetryNote<'_> {
    fn drop(&mut self) {
        self.progress.notes().remove(&self.id);
    }
}

/// SPEC `progress`: `{"done_bytes", "total_bytes", "percent", "retrying"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProgressInfo {
    pub done_bytes: u64,
    pub total_bytes: u64,
    /// Whole percent, rounded down: 100 only when every byte is there.
    pub percent: u8,
    /// While a request waits to be tried again: why, and which attempt comes next.
    pub retrying: Option<String>,
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

    /// Shows `cause` until the note is dropped (the request succeeded or gave up).
    pub fn retrying(&self, cause: String) -> RetryNote<'_> {
        let id = self.next_note.fetch_add(1, Ordering::Relaxed);
        self.notes().insert(id, cause);
        RetryNote { progress: self, id }
    }

    fn notes(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, String>> {
        self.retrying.lock().unwrap_or_else(|p| p.into_inner())
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
            retrying: self.notes().values().next_back().cloned(),
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
                percent: 100,
                retrying: None,
            }
        );
        progress.add_transferred(50);
        assert_eq!(progress.info().done_bytes, 300);
    }

    #[test]
    fn retry_notes_show_while_they_live() {
        let progress = Progress::default();
        let first = progress.retrying("HTTP 503, attempt 2 of 6".into());
        assert_eq!(
            progress.info().retrying.as_deref(),
            Some("HTTP 503, attempt 2 of 6")
        );
        let second = progress.retrying("reset, attempt 2 of 6".into());
        first.set("HTTP 503, attempt 3 of 6".into());
        assert_eq!(
            progress.info().retrying.as_deref(),
            Some("reset, attempt 2 of 6")
        );
        drop(second);
        assert_eq!(
            progress.info().retrying.as_deref(),
            Some("HTTP 503, attempt 3 of 6")
        );
        drop(first);
        assert_eq!(progress.info().retrying, None);
    }
}
