//! Connections on the socket: timeouts, bounded buffers and a cap on how many are open.
//!
//! At the cap the daemon stops accepting, so new clients wait in the kernel's accept
//! queue instead of failing. When a client is waiting there, the connection that has
//! been quiet (between requests, or never sent one) the longest is closed to make room:
//! idle keep-alive connections cannot starve new clients, and connections in the middle
//! of a request are never cut. Only when every connection is mid-request does the new
//! client wait for one to finish.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// Most connections served at once. The clients are the local gateway and the CLI, so
/// this is far above real use; it bounds memory (each may buffer `MAX_BUF` bytes) and
/// file descriptors under attack.
pub const MAX_CONNECTIONS: usize = 512;

/// Time allowed for a request's head, counted from when the connection starts waiting
/// for it: hyper's header-read timeout is also the idle (keep-alive) timeout, so a
/// slowloris client and an idle connection are both closed after this.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Time allowed for a request's body to arrive, once its head has.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Bound of a connection's read and write buffers. A request head must fit: the
/// request line may be up to 64 KiB (the `http` crate's URI limit), plus headers.
pub const MAX_BUF: usize = 80 * 1024;

/// Most headers in a request.
pub const MAX_HEADERS: usize = 64;

/// The open connections, and whether each is in the middle of a request.
pub struct Connections {
    slots: Arc<Semaphore>,
    open: Mutex<HashMap<u64, Slot>>,
    /// Signalled whenever a connection finishes a request.
    quiet: Notify,
    next_id: AtomicU64,
}

struct Slot {
    busy: bool,
    quiet_since: Instant,
    /// Asked to close already: not to be chosen again.
    closing: bool,
    close: CancellationToken,
}

/// A connection's place: released when the connection's task ends.
pub struct Registration {
    connections: Arc<Connections>,
    pub id: u64,
    pub close: CancellationToken,
    _permit: OwnedSemaphorePermit,
}

/// Marks its connection as mid-request while it lives.
pub struct Busy {
    connections: Arc<Connections>,
    id: u64,
}

/// How many idle connections make room at once when the cap is reached.
const EVICTED_AT_ONCE: usize = 64;

impl Connections {
    pub fn new(max: usize) -> Arc<Connections> {
        Arc::new(Connections {
            slots: Arc::new(Semaphore::new(max)),
            open: Mutex::new(HashMap::new()),
            quiet: Notify::new(),
            next_id: AtomicU64::new(0),
        })
    }

    fn open(&self) -> MutexGuard<'_, HashMap<u64, Slot>> {
        // The map stays consistent even if a holder panicked: every change is one call.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a free slot for a client that is already accepted, making one if need be.
    pub async fn register(self: &Arc<Self>, stop: &CancellationToken) -> Registration {
        let permit = loop {
            if let Ok(permit) = self.slots.clone().try_acquire_owned() {
                break permit;
            }
            let closing = self.close_quietest(EVICTED_AT_ONCE) > 0;
            tokio::select! {
                // The semaphore is never closed.
                permit = self.slots.clone().acquire_owned() => break permit.expect("open semaphore"),
                // All were mid-request: look again when one finishes.
                () = self.quiet.notified(), if !closing => {}
            }
        };
        let close = stop.child_token();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.open().insert(
            id,
            Slot {
                busy: false,
                quiet_since: Instant::now(),
                closing: false,
                close: close.clone(),
            },
        );
        Registration {
            connections: self.clone(),
            id,
            close,
            _permit: permit,
        }
    }

    /// Asks up to `count` connections, those quiet the longest, to close; how many it
    /// asked (none when all are mid-request). Several at once: under a flood of idle
    /// clients, making room one at a time lets the accept queue fill, and a new client's
    /// connect then fails (EAGAIN) instead of waiting.
    fn close_quietest(&self, count: usize) -> usize {
        let mut open = self.open();
        let mut quiet: Vec<&mut Slot> = open
            .values_mut()
            .filter(|slot| !slot.busy && !slot.closing)
            .collect();
        quiet.sort_by_key(|slot| slot.quiet_since);
        let closing = quiet.len().min(count);
        for slot in quiet.into_iter().take(closing) {
            slot.closing = true;
            slot.close.cancel();
        }
        if closing > 0 {
            tracing::debug!(
                closing,
                "at the connection cap: closing the longest-idle connections"
            );
        }
        closing
    }

    pub fn busy(self: &Arc<Self>, id: u64) -> Busy {
        if let Some(slot) = self.open().get_mut(&id) {
            slot.busy = true;
        }
        Busy {
            connections: self.clone(),
            id,
        }
    }

    /// Resolves once every connection has ended.
    pub async fn all_closed(&self, max: usize) {
        let all = u32::try_from(max).unwrap_or(u32::MAX);
        let _ = self.slots.acquire_many(all).await;
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if let Some(slot) = self.connections.open().get_mut(&self.id) {
            slot.busy = false;
            slot.quiet_since = Instant::now();
        }
        self.connections.quiet.notify_one();
    }
}

impl Registration {
    /// Whether the connection is in the middle of a request.
    pub fn is_busy(&self) -> bool {
        let open = self.connections.open();
        open.get(&self.id).is_some_and(|slot| slot.busy)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.connections.open().remove(&self.id);
    }
}
