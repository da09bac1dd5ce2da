//! HTTP over the Unix socket: routing, parameters, the envelope. No business logic.

mod request;
mod response;
mod server;

use crate::actions::params::Params;
use crate::actions::{Action, Actions, Answer, events};
use crate::error::AppError;
use crate::messages::Language;
use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::Frame;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::http::request::Parts;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{HeaderMap, Method, Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use request::MAX_INPUT;
use server::{
    BODY_TIMEOUT, Connections, HEADER_TIMEOUT, MAX_BUF, MAX_CONNECTIONS, MAX_HEADERS, Registration,
};
use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

/// Bodies up to this size are read to the end even when refused as too large.
const MAX_DRAIN: usize = 1024 * 1024;

/// How long in-flight requests may take to finish once shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves until `shutdown` resolves, then stops accepting and lets open requests finish.
pub async fn serve(
    listener: UnixListener,
    actions: Arc<Actions>,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_BUF)
        .max_headers(MAX_HEADERS);
    let connections = Connections::new(MAX_CONNECTIONS);
    let stop = CancellationToken::new();
    let accepting = async {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // Out of file descriptors, most likely: back off instead of spinning.
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // At the cap this waits, and the listener is not polled meanwhile: further
            // clients wait in the accept queue.
            let registration = connections.register(&stop).await;
            let (connections, actions) = (connections.clone(), actions.clone());
            let id = registration.id;
            let service = service_fn(move |request| {
                let busy = connections.busy(id);
                let actions = actions.clone();
                async move {
                    let response = handle(request, &actions).await;
                    drop(busy);
                    Ok::<_, Infallible>(response)
                }
            });
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::spawn(run_connection(connection, registration));
        }
    };
    tokio::select! {
        () = accepting => {}
        () = shutdown => {}
    }
    drop(listener);
    stop.cancel();
    if tokio::time::timeout(DRAIN_TIMEOUT, connections.all_closed(MAX_CONNECTIONS))
        .await
        .is_err()
    {
        tracing::warn!("requests still open after {DRAIN_TIMEOUT:?}; closing them");
    }
}

/// Serves one connection until it ends or is asked to close: a quiet one closes at
/// once, one in the middle of a request first answers it.
async fn run_connection<S>(
    connection: http1::Connection<TokioIo<UnixStream>, S>,
    registration: Registration,
) where
    S: hyper::service::HttpService<Incoming, ResBody = Body>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::pin!(connection);
    let ended = tokio::select! {
        ended = connection.as_mut() => ended,
        () = registration.close.cancelled() => {
            if !registration.is_busy() {
                return;
            }
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(err) = ended {
        tracing::debug!(%err, "connection ended with an error");
    }
}

/// Every response's body: whole, or a stream of Server-Sent Events.
type Body = UnsyncBoxBody<Bytes, Infallible>;

async fn handle(request: Request<Incoming>, actions: &Arc<Actions>) -> Response<Body> {
    let (parts, body) = request.into_parts();
    // The body is read before any answer, even a refusal: closing a connection with
    // unread bytes resets it, and the client would lose the answer.
    let body = tokio::time::timeout(BODY_TIMEOUT, read_body(&parts.headers, body))
        .await
        .unwrap_or_else(|_| {
            Err(AppError::Format(format!(
                "the body did not arrive within {BODY_TIMEOUT:?}"
            )))
        });
    let language = Language::from_header(header(&parts.headers, "language"));
    let path = parts.uri.path();
    if let Some(file) = path.strip_prefix("/catalog/") {
        return logo(file, &parts.method, actions, language).map(BodyExt::boxed_unsync);
    }
    if path == "/Events" {
        if parts.method != Method::GET {
            let error = AppError::MethodNotAllowed(parts.method.to_string());
            return response::failure(&error, None, language).map(BodyExt::boxed_unsync);
        }
        return event_stream(events::stream(actions.clone(), language));
    }
    let Some(action) = Action::from_name(path.trim_start_matches('/')) else {
        let error = AppError::ActionNotExist(format!("no Action at {path:?}"));
        return response::failure(&error, None, language).map(BodyExt::boxed_unsync);
    };
    match call(&parts, body, action, actions, language).await {
        Ok(Answer::Reply(data)) => response::success(&data).map(BodyExt::boxed_unsync),
        Ok(Answer::Json(data)) => response::success_json(data),
        Ok(Answer::Stream(frames)) => event_stream(frames),
        Err((error, params)) => {
            response::failure(&error, action.failure_data(&params).as_ref(), language)
                .map(BodyExt::boxed_unsync)
        }
    }
}

/// A `text/event-stream` of `frames`, until they end or the client leaves. Gateways
/// are told not to buffer it.
fn event_stream(frames: BoxStream<'static, Bytes>) -> Response<Body> {
    let body = StreamBody::new(frames.map(|frame| Ok(Frame::data(frame))));
    let mut response = Response::new(BodyExt::boxed_unsync(body));
    let headers = response.headers_mut();
    for (name, value) in [
        ("content-type", "text/event-stream"),
        ("cache-control", "no-cache"),
        ("x-accel-buffering", "no"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

async fn call(
    parts: &Parts,
    body: Result<Bytes, AppError>,
    action: Action,
    actions: &Actions,
    language: Language,
) -> Result<Answer, (AppError, Params)> {
    let refuse = |error| (error, Params::default());
    if parts.method != Method::GET && parts.method != Method::POST {
        return Err(refuse(AppError::MethodNotAllowed(parts.method.to_string())));
    }
    if let Some(version) = parts.headers.get("version") {
        let version = String::from_utf8_lossy(version.as_bytes());
        if version.trim() != "1" {
            return Err(refuse(AppError::VersionNotSupport(version.into_owned())));
        }
    }
    let body = body.map_err(refuse)?;
    let content_type = header(&parts.headers, "content-type");
    let params = request::parse(parts.uri.query(), content_type, &body).map_err(refuse)?;
    // A bug must cost one request an error, never the connection or the daemon.
    let outcome = AssertUnwindSafe(actions.call(action, &params, language))
        .catch_unwind()
        .await
        .unwrap_or_else(|_| {
            Err(AppError::System(format!(
                "{} failed unexpectedly",
                action.name()
            )))
        });
    outcome.map_err(|error| (error, params))
}

/// Reads the body; more than `MAX_INPUT` is refused, but up to `MAX_DRAIN` is still
/// read (and dropped) so that the client receives the refusal.
async fn read_body(headers: &HeaderMap, body: Incoming) -> Result<Bytes, AppError> {
    let too_large = |size: &dyn std::fmt::Display| {
        AppError::TooLarge(format!(
            "the body has {size} bytes; at most {MAX_INPUT} are accepted"
        ))
    };
    let declared = header(headers, "content-length").and_then(|v| v.parse::<u64>().ok());
    if let Some(length) = declared.filter(|l| *l > MAX_DRAIN as u64) {
        return Err(too_large(&length));
    }
    match Limited::new(body, MAX_DRAIN).collect().await {
        Ok(collected) => {
            let bytes = collected.to_bytes();
            if bytes.len() > MAX_INPUT {
                Err(too_large(&bytes.len()))
            } else {
                Ok(bytes)
            }
        }
        Err(err) if err.is::<http_body_util::LengthLimitError>() => {
            Err(too_large(&"more than that"))
        }
        Err(err) => Err(AppError::Format(format!("reading the body: {err}"))),
    }
}

/// `GET /catalog/<name>/logo.<ext>`.
fn logo(
    file: &str,
    method: &Method,
    actions: &Actions,
    language: Language,
) -> Response<Full<Bytes>> {
    if method != Method::GET {
        let error = AppError::MethodNotAllowed(method.to_string());
        return response::failure(&error, None, language);
    }
    let found = file.split_once('/').and_then(|(name, logo)| {
        let app = actions.catalog().get(name)?;
        (logo == format!("logo.{}", app.logo.extension)).then_some(app)
    });
    match found {
        Some(app) => {
            let mut response =
                response::bytes_response(200, app.logo.content_type, app.logo.bytes.clone());
            // An SVG is a document that can carry scripts: the browser must neither
            // guess another type nor run anything in it when it is opened directly.
            let headers = response.headers_mut();
            headers.insert(
                "x-content-type-options",
                HeaderValue::from_static("nosniff"),
            );
            headers.insert(
                "content-security-policy",
                HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
            );
            response
        }
        None => {
            let error = AppError::ActionNotExist(format!("no logo at /catalog/{file}"));
            response::failure(&error, None, language)
        }
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}
