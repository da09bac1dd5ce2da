//! Watching and stopping a container's task across containerd restarts. containerd
//! may restart any time (`systemctl restart containerd`): its shims, and with them
//! the containers and their output FIFOs, live on, so a broken connection is no exit.

use crate::runtime::containerd::{Containerd, ContainerdError};
use containerd_client::tonic::Code;
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long containerd may stay unreachable before the supervisor gives up on a task.
const RECONNECT_LIMIT: Duration = Duration::from_secs(60);
const FIRST_RETRY: Duration = Duration::from_millis(100);
const LONGEST_RETRY: Duration = Duration::from_secs(2);
/// Pauses between tries to create a task double up to this: 250 ms + … + 2 s.
const CREATE_PAUSES: Duration = Duration::from_secs(2);
/// A call that answers later than this is no call to a dead containerd.
pub(super) const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// How a task ended.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Exit {
    #[error("exited with status {0}")]
    Status(u32),
    #[error("lost its task")]
    Gone,
    #[error("could not be watched for {RECONNECT_LIMIT:?}: containerd failed")]
    Unwatched(#[source] Option<Arc<ContainerdError>>),
}

/// Waits until the task exits, through containerd restarts: when the wait breaks, it
/// reconnects (the channel does so on the next call) with a bounded backoff, and waits
/// again on a task that is still there.
pub async fn wait_exit(containerd: &Containerd, id: &str) -> Exit {
    let mut down_since: Option<Instant> = None;
    loop {
        let waited = Instant::now();
        let error = match containerd.wait_task(id).await {
            Ok(status) => return Exit::Status(status),
            Err(error) => error,
        };
        // A wait that was established a while counts as reconnected.
        if waited.elapsed() > Duration::from_secs(1) {
            down_since = None;
        }
        let since = *down_since.get_or_insert_with(Instant::now);
        // Waits that keep failing at once, though containerd answers, end it too.
        if since.elapsed() >= RECONNECT_LIMIT {
            return Exit::Unwatched(Some(Arc::new(error)));
        }
        tracing::warn!(container = id, %error, "lost the wait on the task: reconnecting");
        match until_reachable(containerd, id, since).await {
            Ok(true) => tracing::info!(container = id, "waiting on the task again"),
            Ok(false) => return Exit::Gone,
            Err(error) => return Exit::Unwatched(error.map(Arc::new)),
        }
    }
}

/// Asks containerd for the task, with a growing pause between tries, until it answers
/// or `RECONNECT_LIMIT` after `down_since`: whether the task still exists; else the
/// last error (None: containerd did not answer at all).
async fn until_reachable(
    containerd: &Containerd,
    id: &str,
    down_since: Instant,
) -> Result<bool, Option<ContainerdError>> {
    let mut pause = FIRST_RETRY;
    loop {
        tokio::time::sleep(pause).await;
        let asked = tokio::time::timeout(CALL_TIMEOUT, containerd.task(id)).await;
        match asked {
            Ok(Ok(task)) => return Ok(task.is_some()),
            Ok(Err(error)) if down_since.elapsed() >= RECONNECT_LIMIT => return Err(Some(error)),
            Err(_) if down_since.elapsed() >= RECONNECT_LIMIT => return Err(None),
            _ => pause = (pause * 2).min(LONGEST_RETRY),
        }
    }
}

/// Creates the task, trying again a few times after a failure that may pass: runc
/// asks systemd over D-Bus for the container's scope, which fails while systemd
/// re-executes itself (`daemon-reexec`), and containerd may be restarting. runc's
/// failures come as Unknown, so a lasting one is reported a few seconds later.
pub async fn create(
    containerd: &Containerd,
    id: &str,
    out: &Path,
    err: &Path,
) -> Result<u32, ContainerdError> {
    let mut pause = Duration::from_millis(250);
    loop {
        let error = match containerd.create_task(id, out, err).await {
            Ok(pid) => return Ok(pid),
            Err(error) => error,
        };
        let transient = matches!(error.code(), Some(Code::Unknown | Code::Unavailable));
        if !transient || pause > CREATE_PAUSES {
            return Err(error);
        }
        tracing::warn!(container = id, %error, "creating the task: trying again");
        tokio::time::sleep(pause).await;
        pause *= 2;
        // What a failed create left (a task record) would refuse the next one.
        let _ = containerd.delete_task(id).await;
    }
}

/// Sends `signal` to the task: through containerd, or, while containerd cannot be
/// reached, straight to the container's init process (its shim still reaps it).
pub async fn signal(containerd: &Containerd, id: &str, pid: u32, signal: i32) {
    let sent = tokio::time::timeout(CALL_TIMEOUT, containerd.kill_task(id, signal as u32)).await;
    if let Ok(Ok(())) = sent {
        return;
    }
    tracing::warn!(
        container = id,
        pid,
        signal,
        "containerd did not take the signal: sending it to the process"
    );
    let Ok(signal) = Signal::try_from(signal) else {
        return;
    };
    // PID 0 or 1 would not be the container's: never signal those.
    if pid > 1 {
        let _ = kill(Pid::from_raw(pid as i32), signal);
    }
}

/// Resolves once the process is gone: how an exit shows while containerd cannot tell.
pub async fn process_gone(pid: u32) {
    while pid > 1 && kill(Pid::from_raw(pid as i32), None) != Err(Errno::ESRCH) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
