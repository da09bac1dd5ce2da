//! A client of appunitd's socket, for the command line: Actions (one JSON envelope
//! each) and event streams (`GET /Events`, AppLogs with `follow=true`), read as
//! Server-Sent Events in this one place.

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::path::Path;

/// One Action over the socket: a POST with a form body. The whole envelope comes back.
pub async fn call(socket: &Path, action: &str, params: &[(&str, String)]) -> Result<Value, String> {
    let body = form(params);
    let response = send(
        socket,
        hyper::Request::post(format!("/{action}"))
            .header("content-type", "application/x-www-form-urlencoded"),
        Bytes::from(body),
    )
    .await?;
    envelope(socket, response.into_body()).await
}

/// What a stream request is answered with: a refusal (the envelope, with its Error),
/// or the stream.
pub enum Opened {
    Reply(Value),
    Stream(Events),
}

/// Opens `GET /<target>?<params>` and, when it is answered with `text/event-stream`,
/// its events; any other answer is an Action's envelope.
pub async fn open(
    socket: &Path,
    target: &str,
    params: &[(&str, String)],
) -> Result<Opened, String> {
    let uri = match params.is_empty() {
        true => format!("/{target}"),
        false => format!("/{target}?{}", form(params)),
    };
    let response = send(socket, hyper::Request::get(uri), Bytes::new()).await?;
    let is_stream = response
        .headers()
        .get("content-type")
        .is_some_and(|t| t.as_bytes().starts_with(b"text/event-stream"));
    let body = response.into_body();
    if is_stream {
        Ok(Opened::Stream(Events {
            body,
            parser: Parser::default(),
        }))
    } else {
        envelope(socket, body).await.map(Opened::Reply)
    }
}

/// One Server-Sent Event: its `event:` name (empty when unnamed) and its `data:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub name: String,
    pub data: String,
}

/// The events of an open stream, as they come.
pub struct Events {
    body: Incoming,
    parser: Parser,
}

impl Events {
    /// The next event; None when the daemon closed the stream.
    pub async fn next(&mut self) -> Result<Option<Event>, String> {
        loop {
            if let Some(event) = self.parser.next_event() {
                return Ok(Some(event));
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(err)) => return Err(format!("the event stream broke: {err}")),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.parser.push(&data);
                    }
                }
            }
        }
    }
}

/// Splits a byte stream into events: blocks end at a blank line; comment lines (`:`,
/// the keep-alives) and unknown fields are skipped; several `data:` lines join with `\n`.
#[derive(Default)]
struct Parser {
    pending: BytesMut,
}

impl Parser {
    fn push(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
    }

    fn next_event(&mut self) -> Option<Event> {
        loop {
            let end = self.pending.windows(2).position(|w| w == b"\n\n")?;
            let block = self.pending.split_to(end);
            self.pending.advance(2);
            let mut name = String::new();
            let mut data: Option<String> = None;
            for line in String::from_utf8_lossy(&block).lines() {
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "event" => name = value.to_string(),
                    "data" => match data.as_mut() {
                        Some(data) => {
                            data.push('\n');
                            data.push_str(value);
                        }
                        None => data = Some(value.to_string()),
                    },
                    _ => {}
                }
            }
            // A block of comments only is no event.
            if let Some(data) = data {
                return Some(Event { name, data });
            }
        }
    }
}

fn form(params: &[(&str, String)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish()
}

async fn send(
    socket: &Path,
    request: hyper::http::request::Builder,
    body: Bytes,
) -> Result<hyper::Response<Incoming>, String> {
    let unreachable = |e: &dyn std::fmt::Display| format!("appunitd at {}: {e}", socket.display());
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| unreachable(&e))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unreachable(&e))?;
    tokio::spawn(connection);
    let request = request
        .header("host", "appunit")
        .header("language", std::env::var("LANG").unwrap_or_default())
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    sender
        .send_request(request)
        .await
        .map_err(|e| unreachable(&e))
}

async fn envelope(socket: &Path, body: Incoming) -> Result<Value, String> {
    let bytes = body
        .collect()
        .await
        .map_err(|e| format!("appunitd at {}: {e}", socket.display()))?
        .to_bytes();
    serde_json::from_slice(&bytes)
        .map_err(|e| format!("appunitd answered something else than JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_wherever_the_bytes_are_cut() {
        let stream = b": keep-alive\n\nevent: app\ndata: {\"a\":1}\n\ndata: one\ndata: two\n\nda";
        for cut in 0..stream.len() {
            let mut parser = Parser::default();
            let mut seen = Vec::new();
            for part in [&stream[..cut], &stream[cut..]] {
                parser.push(part);
                while let Some(event) = parser.next_event() {
                    seen.push(event);
                }
            }
            assert_eq!(
                seen,
                [
                    Event {
                        name: "app".into(),
                        data: "{\"a\":1}".into()
                    },
                    Event {
                        name: String::new(),
                        data: "one\ntwo".into()
                    },
                ],
                "cut at {cut}"
            );
        }
    }
}
