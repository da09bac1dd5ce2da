//! GET /Events: every change of an app's `status_code`, `status`, `operation` or `progress`, as
//! Server-Sent Events. Changes come from the lifecycle (its phase changes, and systemd's
//! signals for the app units); progress is looked at four times a second, as SPEC
//! allows no more.

use super::{Actions, AppDetailInfo};
use crate::images::progress::ProgressInfo;
use crate::messages::Language;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

const PROGRESS_EVERY: Duration = Duration::from_millis(250);
const KEEP_ALIVE_EVERY: Duration = Duration::from_secs(15);
const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";
/// systemd's signal can reach us before the unit's cached state moved: the change is
/// looked for again this often, this many times.
const SETTLE_EVERY: Duration = Duration::from_millis(10);
const SETTLE_TRIES: u32 = 20;

/// What an event is sent for: a change of any of these.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    status_code: &'static str,
    status: &'static str,
    progress: Option<ProgressInfo>,
    /// The kind under way: its end is an event too (a backup ends with the app as it was).
    operation: Option<&'static str>,
}

impl Seen {
    fn of(detail: &AppDetailInfo) -> Seen {
        Seen {
            status_code: detail.status_code,
            status: detail.status,
            progress: detail.progress.clone(),
            operation: detail.operation.as_ref().map(|o| o.kind),
        }
    }
}

/// The frames of one /Events client, until it leaves (the stream is dropped).
pub fn stream(actions: Arc<Actions>, language: Language) -> BoxStream<'static, Bytes> {
    let (frames, receiver) = mpsc::channel(64);
    let mut changes = actions.lifecycle.changes();
    tokio::spawn(async move {
        let mut seen = actions.seen_all(language).await;
        let mut progress_tick = tokio::time::interval(PROGRESS_EVERY);
        let mut keep_alive = tokio::time::interval(KEEP_ALIVE_EVERY);
        keep_alive.reset();
        loop {
            let changed: Vec<String> = tokio::select! {
                change = changes.recv() => match change {
                    Ok(app_id) => vec![app_id],
                    // Fell behind: whatever changed meanwhile is found by looking at all.
                    Err(broadcast::error::RecvError::Lagged(_)) => seen.keys().cloned().collect(),
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = progress_tick.tick() => seen
                    .iter()
                    .filter(|(_, s)| s.progress.is_some())
                    .map(|(app_id, _)| app_id.clone())
                    .collect(),
                _ = keep_alive.tick() => {
                    if frames.send(Bytes::from_static(KEEP_ALIVE)).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            for app_id in changed {
                let settle = if seen.contains_key(&app_id) {
                    SETTLE_TRIES
                } else {
                    1
                };
                if let Some(detail) = actions
                    .changed_detail(&app_id, &seen, settle, language)
                    .await
                {
                    seen.insert(app_id, Seen::of(&detail));
                    if frames.send(frame(&detail)).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    futures_util::stream::unfold(receiver, |mut frames| async move {
        let frame = frames.recv().await?;
        Some((frame, frames))
    })
    .boxed()
}

fn frame(detail: &AppDetailInfo) -> Bytes {
    let data = serde_json::to_string(detail).unwrap_or_default();
    Bytes::from(format!("event: app\ndata: {data}\n\n"))
}

/// `frames`, with a comment frame whenever 15 s pass without one, so that proxies
/// keep a quiet stream open.
pub fn with_keep_alive(frames: BoxStream<'static, Bytes>) -> BoxStream<'static, Bytes> {
    let beats = futures_util::stream::unfold((), |()| async {
        tokio::time::sleep(KEEP_ALIVE_EVERY).await;
        Some((Bytes::from_static(KEEP_ALIVE), ()))
    });
    // Ends with `frames`: the beats alone never end.
    futures_util::stream::select(
        frames
            .map(Some)
            .chain(futures_util::stream::once(async { None })),
        beats.map(Some),
    )
    .take_while(|frame| std::future::ready(frame.is_some()))
    .filter_map(std::future::ready)
    .boxed()
}

/// A frame of unnamed events: `data:` and the value as one line of JSON.
pub fn data_frame(value: &impl serde::Serialize) -> Bytes {
    let data = serde_json::to_string(value).unwrap_or_default();
    Bytes::from(format!("data: {data}\n\n"))
}

impl Actions {
    async fn seen_all(&self, language: Language) -> HashMap<String, Seen> {
        let records = self.store.blocking(|store| store.list(None)).await;
        let mut seen = HashMap::new();
        for record in records.unwrap_or_default() {
            let detail = self.detail(record, language).await;
            seen.insert(detail.app_id.clone(), Seen::of(&detail));
        }
        seen
    }

    /// The app's status when it differs from what was last sent, looking `tries` times.
    async fn changed_detail(
        &self,
        app_id: &str,
        seen: &HashMap<String, Seen>,
        tries: u32,
        language: Language,
    ) -> Option<AppDetailInfo> {
        for attempt in 0..tries {
            if attempt > 0 {
                tokio::time::sleep(SETTLE_EVERY).await;
            }
            let record = self.record(app_id).await.ok().flatten()?;
            let detail = self.detail(record, language).await;
            if seen.get(app_id) != Some(&Seen::of(&detail)) {
                return Some(detail);
            }
        }
        None
    }
}
