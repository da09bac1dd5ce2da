//! The response envelope: `{"ResponseData": …, "Error": {Code, Message, Detail}}`.

use crate::actions::Reply;
use crate::error::{AppError, Code};
use crate::messages::{Language, message};
use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use serde::Serialize;

#[derive(Serialize)]
struct Envelope<'a> {
    #[serde(rename = "ResponseData")]
    response_data: Option<&'a Reply>,
    #[serde(rename = "Error", skip_serializing_if = "Option::is_none")]
    error: Option<ErrorInfo<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorInfo<'a> {
    code: Code,
    message: &'a str,
    detail: String,
}

pub fn success(data: &Reply) -> Response<Full<Bytes>> {
    json_response(
        200,
        &Envelope {
            response_data: Some(data),
            error: None,
        },
    )
}

/// A success whose `ResponseData` is JSON already.
pub fn success_json(value: &[u8]) -> Response<Full<Bytes>> {
    let mut body = envelope_head(value.len());
    body.extend_from_slice(value);
    body.push(b'}');
    bytes_response(200, "application/json", body.into())
}

/// A success whose `ResponseData` is an array of `items`, each JSON already.
pub fn success_array(items: &[Bytes]) -> Response<Full<Bytes>> {
    let mut body = envelope_head(items.iter().map(|item| item.len() + 1).sum::<usize>() + 1);
    body.push(b'[');
    for (at, item) in items.iter().enumerate() {
        if at > 0 {
            body.push(b',');
        }
        body.extend_from_slice(item);
    }
    body.extend_from_slice(b"]}");
    bytes_response(200, "application/json", body.into())
}

/// `{"ResponseData":`, in a buffer with room for `data` bytes and the end.
fn envelope_head(data: usize) -> Vec<u8> {
    const HEAD: &[u8] = b"{\"ResponseData\":";
    let mut body = Vec::with_capacity(HEAD.len() + data + 1);
    body.extend_from_slice(HEAD);
    body
}

pub fn failure(
    error: &AppError,
    data: Option<&Reply>,
    language: Language,
) -> Response<Full<Bytes>> {
    let code = error.code();
    json_response(
        error.http_status(),
        &Envelope {
            response_data: data,
            error: Some(ErrorInfo {
                code,
                message: message(code, language),
                detail: error.detail(),
            }),
        },
    )
}

fn json_response(status: u16, envelope: &Envelope) -> Response<Full<Bytes>> {
    // Serializing plain strings and JSON values cannot fail.
    let body = serde_json::to_vec(envelope).unwrap_or_default();
    bytes_response(status, "application/json", body.into())
}

pub fn bytes_response(
    status: u16,
    content_type: &'static str,
    body: Bytes,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::NOT_FOUND);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
