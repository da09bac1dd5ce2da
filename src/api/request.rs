//! Turns a request's query string and body into `Params`: query first, then the body
//! (form or JSON object), so the body wins.

use crate::actions::params::{ParamValue, Params};
use crate::error::AppError;

/// Largest body the API accepts (SPEC: 64 KiB).
pub const MAX_INPUT: usize = 64 * 1024;

pub fn parse(
    query: Option<&str>,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Params, AppError> {
    let mut params = Params::default();
    // hyper refuses request lines over 64 KiB (414) before they get here.
    if let Some(query) = query {
        add_form(&mut params, query.as_bytes());
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(params);
    }
    let media_type = content_type
        .and_then(|c| c.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase());
    let is_json = match media_type.as_deref() {
        Some("application/json") => true,
        Some("application/x-www-form-urlencoded") => false,
        // No or another type: a body that opens like JSON is JSON, else a form.
        _ => body.trim_ascii_start().starts_with(b"{"),
    };
    if is_json {
        add_json(&mut params, body)?;
    } else {
        if std::str::from_utf8(body).is_err() {
            return Err(AppError::Format("the form body is not UTF-8".into()));
        }
        add_form(&mut params, body);
    }
    Ok(params)
}

fn add_form(params: &mut Params, bytes: &[u8]) {
    for (name, value) in form_urlencoded::parse(bytes) {
        params.set(name.into_owned(), ParamValue::Text(value.into_owned()));
    }
}

fn add_json(params: &mut Params, body: &[u8]) -> Result<(), AppError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| AppError::Format(format!("the body is not valid JSON: {e}")))?;
    let serde_json::Value::Object(object) = value else {
        return Err(AppError::Format("the JSON body must be an object".into()));
    };
    for (name, value) in object {
        let value = match value {
            // null means "not given", as an absent key would.
            serde_json::Value::Null => continue,
            serde_json::Value::String(text) => ParamValue::Text(text),
            serde_json::Value::Bool(flag) => ParamValue::Bool(flag),
            serde_json::Value::Number(_) => ParamValue::Other("a number"),
            serde_json::Value::Array(_) => ParamValue::Other("an array"),
            serde_json::Value::Object(_) => ParamValue::Other("an object"),
        };
        params.set(name, value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_forms_give_the_same_params() {
        let query = parse(Some("app_id=blog&delete_data=false"), None, b"").unwrap();
        let form = parse(
            None,
            Some("application/x-www-form-urlencoded"),
            b"app_id=blog&delete_data=false",
        )
        .unwrap();
        let json = parse(
            None,
            Some("application/json"),
            br#"{"app_id":"blog","delete_data":"false"}"#,
        )
        .unwrap();
        assert_eq!(query, form);
        assert_eq!(query, json);
    }

    #[test]
    fn body_wins_over_query() {
        let params = parse(Some("app_id=query"), None, br#"{"app_id": "body"}"#).unwrap();
        assert_eq!(params.text("app_id").unwrap(), Some("body"));
    }

    #[test]
    fn malformed_bodies_are_format_errors() {
        for body in [&b"{not json"[..], b"[1,2]", b"\"text\""] {
            let err = parse(None, Some("application/json"), body).unwrap_err();
            assert_eq!(err.code(), crate::error::Code::Format);
        }
        let err = parse(None, None, b"a=\xff\xfe").unwrap_err();
        assert_eq!(err.code(), crate::error::Code::Format);
    }
}
