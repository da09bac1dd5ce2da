//! glibc's allocator keeps what a burst of work (installs, a pull, a backup) freed, and
//! gives each thread an arena of its own: these keep a process's heap small.

use std::time::Duration;
use tokio::sync::broadcast::{self, error::RecvError};

/// How long no app changes before the freed memory is returned.
const QUIET: Duration = Duration::from_secs(1);

pub fn limit_arenas(arenas: i32) {
    // SAFETY: sets an allocator parameter; called before other threads start.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, arenas) };
}

/// Returns the freed memory of every arena once the apps stop changing for `QUIET`:
/// after an operation, not on an idle daemon's timer.
pub async fn trim_when_quiet<T: Clone>(mut changes: broadcast::Receiver<T>) {
    loop {
        match changes.recv().await {
            Ok(_) | Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => return,
        }
        loop {
            match tokio::time::timeout(QUIET, changes.recv()).await {
                Ok(Ok(_) | Err(RecvError::Lagged(_))) => {}
                Ok(Err(RecvError::Closed)) => return,
                Err(_) => break,
            }
        }
        // SAFETY: malloc_trim only walks the allocator's own state, under its locks.
        let _ = tokio::task::spawn_blocking(|| unsafe { libc::malloc_trim(0) }).await;
    }
}
