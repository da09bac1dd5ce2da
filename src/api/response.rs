//! The response envelope: `{"ResponseData": …, "Error": {Code, Message, Detail}}`.

use crate::actions::Reply;
use crate::error::{AppError, Code};
use crate::messages::{Language, message};
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::Response;
use hyper::body::Frame;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use serde::Serialize;
use std::convert::Infallible;

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

/// A success whose `ResponseData` is JSON already. A large one (AppList's, kept joined
/// in the model) is sent as it is, between the envelope's two ends, not copied into a
/// new body.
pub fn success_json(value: Bytes) -> Response<UnsyncBoxBody<Bytes, Infallible>> {
    if value.len() < COPIED_UP_TO {
        let mut body = envelope_head(value.len());
        body.extend_from_slice(&value);
        body.push(b'}');
        return bytes_response(200, "application/json", body.into()).map(BodyExt::boxed_unsync);
    }
    let length = ENVELOPE_HEAD.len() + value.len() + 1;
    let pieces = [
        Bytes::from_static(ENVELOPE_HEAD),
        value,
        Bytes::from_static(b"}"),
    ];
    let frames = futures_util::stream::iter(pieces.map(|piece| Ok(Frame::data(piece))));
    let mut response = bytes_response(200, "application/json", Bytes::new())
        .map(|_| StreamBody::new(frames).boxed_unsync());
    response
        .headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(length));
    response
}

/// Below this a body is one piece: copying it costs less than more writes.
const COPIED_UP_TO: usize = 16 * 1024;

/// `{"ResponseData":`, in a buffer with room for `data` bytes and the end.
const ENVELOPE_HEAD: &[u8] = b"{\"ResponseData\":";

fn envelope_head(data: usize) -> Vec<u8> {
    let mut body = Vec::with_capacity(ENVELOPE_HEAD.len() + data + 1);
    body.extend_from_slice(ENVELOPE_HEAD);
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
