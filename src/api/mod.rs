//! HTTP over the Unix socket: routing, parameters, the envelope. No business logic.

mod request;
mod response;

use crate::actions::params::Params;
use crate::actions::{Action, Actions};
use crate::error::AppError;
use crate::messages::Language;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use request::MAX_INPUT;
use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UnixListener;

/// How long in-flight requests may take to finish once shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves until `shutdown` resolves, then stops accepting and lets open requests finish.
pub async fn serve(
    listener: UnixListener,
    actions: Arc<Actions>,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let actions = actions.clone();
                    let service = service_fn(move |request| {
                        let actions = actions.clone();
                        async move { Ok::<_, Infallible>(handle(request, &actions).await) }
                    });
                    let connection = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service);
                    let connection = graceful.watch(connection);
                    tokio::spawn(async move {
                        if let Err(err) = connection.await {
                            tracing::debug!(%err, "connection ended with an error");
                        }
                    });
                }
                Err(err) => {
                    // Out of file descriptors, most likely: back off instead of spinning.
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still open after {DRAIN_TIMEOUT:?}; closing them");
    }
}

async fn handle(request: Request<Incoming>, actions: &Actions) -> Response<Full<Bytes>> {
    let language = Language::from_header(header(&request, "language"));
    let path = request.uri().path();
    if let Some(file) = path.strip_prefix("/catalog/") {
        return logo(file, request.method(), actions, language);
    }
    let Some(action) = Action::from_name(path.trim_start_matches('/')) else {
        let error = AppError::ActionNotExist(format!("no Action at {path:?}"));
        return response::failure(&error, serde_json::Value::Null, language);
    };
    match call(request, action, actions, language).await {
        Ok(data) => response::success(data),
        Err((error, params)) => response::failure(&error, action.failure_data(&params), language),
    }
}

async fn call(
    request: Request<Incoming>,
    action: Action,
    actions: &Actions,
    language: Language,
) -> Result<serde_json::Value, (AppError, Params)> {
    let refuse = |error| (error, Params::default());
    if request.method() != Method::GET && request.method() != Method::POST {
        return Err(refuse(AppError::MethodNotAllowed(
            request.method().to_string(),
        )));
    }
    if let Some(version) = request.headers().get("version") {
        let version = String::from_utf8_lossy(version.as_bytes());
        if version.trim() != "1" {
            return Err(refuse(AppError::VersionNotSupport(version.into_owned())));
        }
    }
    let query = request.uri().query().map(str::to_owned);
    let content_type = header(&request, "content-type").map(str::to_owned);
    let body = read_body(request).await.map_err(refuse)?;
    let params =
        request::parse(query.as_deref(), content_type.as_deref(), &body).map_err(refuse)?;
    // A bug must cost one request an error, never the connection or the daemon.
    let outcome =
        std::panic::catch_unwind(AssertUnwindSafe(|| actions.call(action, &params, language)))
            .unwrap_or_else(|_| {
                Err(AppError::System(format!(
                    "{} failed unexpectedly",
                    action.name()
                )))
            });
    outcome.map_err(|error| (error, params))
}

async fn read_body(request: Request<Incoming>) -> Result<Bytes, AppError> {
    let too_large = |size: &dyn std::fmt::Display| {
        AppError::TooLarge(format!(
            "the body has {size} bytes; at most {MAX_INPUT} are accepted"
        ))
    };
    let declared = header(&request, "content-length").and_then(|v| v.parse::<u64>().ok());
    if let Some(length) = declared.filter(|l| *l > MAX_INPUT as u64) {
        return Err(too_large(&length));
    }
    match Limited::new(request.into_body(), MAX_INPUT).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
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
        return response::failure(&error, serde_json::Value::Null, language);
    }
    let found = file.split_once('/').and_then(|(name, logo)| {
        let app = actions.catalog().get(name)?;
        (logo == format!("logo.{}", app.logo.extension)).then_some(app)
    });
    match found {
        Some(app) => response::bytes_response(200, app.logo.content_type, app.logo.bytes.clone()),
        None => {
            let error = AppError::ActionNotExist(format!("no logo at /catalog/{file}"));
            response::failure(&error, serde_json::Value::Null, language)
        }
    }
}

fn header<'a>(request: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    request.headers().get(name).and_then(|v| v.to_str().ok())
}
