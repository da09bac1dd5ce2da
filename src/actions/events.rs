//! GET /Events: every change of an app's `status_code`, `status`, `operation` or
//! `progress`, as Server-Sent Events, from the state model: each event is the app as
//! it was at that change, in the order the changes happened.

use super::Actions;
use crate::messages::Language;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

const KEEP_ALIVE_EVERY: Duration = Duration::from_secs(15);
const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// The frames of one /Events client, until it leaves (the stream is dropped).
pub fn stream(actions: Arc<Actions>, language: Language) -> BoxStream<'static, Bytes> {
    let (frames, receiver) = mpsc::channel(64);
    let model = actions.lifecycle.model().clone();
    let mut changes = model.subscribe();
    tokio::spawn(async move {
        let mut keep_alive = tokio::time::interval(KEEP_ALIVE_EVERY);
        keep_alive.reset();
        loop {
            let apps = tokio::select! {
                change = changes.recv() => match change {
                    Ok(app) => vec![app],
                    // Fell behind: every app as it is now.
                    Err(broadcast::error::RecvError::Lagged(_)) => model.list(None).await,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = keep_alive.tick() => {
                    if frames.send(Bytes::from_static(KEEP_ALIVE)).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            for app in apps {
                if frames
                    .send(frame(&actions.json(&app, language)))
                    .await
                    .is_err()
                {
                    return;
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

fn frame(json: &[u8]) -> Bytes {
    let mut frame = Vec::with_capacity(json.len() + 20);
    frame.extend_from_slice(b"event: app\ndata: ");
    frame.extend_from_slice(json);
    frame.extend_from_slice(b"\n\n");
    frame.into()
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
