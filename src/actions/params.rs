//! An Action's parameters, whichever way they came (query, form or JSON body).

use crate::error::AppError;
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    Text(String),
    Bool(bool),
    /// A JSON value of a type no parameter takes (number, object, array): named for Detail.
    Other(&'static str),
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Params(HashMap<String, ParamValue>);

impl Params {
    pub fn set(&mut self, name: String, value: ParamValue) {
        self.0.insert(name, value);
    }

    /// A text parameter; `None` when missing or empty. A non-text JSON value is a
    /// format error.
    pub fn text(&self, name: &str) -> Result<Option<&str>, AppError> {
        match self.0.get(name) {
            None => Ok(None),
            Some(ParamValue::Text(text)) => Ok(Some(text.as_str()).filter(|t| !t.is_empty())),
            Some(ParamValue::Bool(_)) => Err(wrong_type(name, "a boolean")),
            Some(ParamValue::Other(kind)) => Err(wrong_type(name, kind)),
        }
    }

    /// A boolean parameter: `true/false/1/0` in any case, or a JSON boolean.
    pub fn flag(&self, name: &str, default: bool) -> Result<bool, AppError> {
        match self.0.get(name) {
            None => Ok(default),
            Some(ParamValue::Bool(value)) => Ok(*value),
            Some(ParamValue::Text(text)) if text.is_empty() => Ok(default),
            Some(ParamValue::Text(text)) => match text.to_ascii_lowercase().as_str() {
                "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                _ => Err(AppError::Format(format!(
                    "{name} must be true, false, 1 or 0, not {text:?}"
                ))),
            },
            Some(ParamValue::Other(kind)) => Err(wrong_type(name, kind)),
        }
    }
}

fn wrong_type(name: &str, kind: &str) -> AppError {
    AppError::Format(format!("{name} must be a string, not {kind}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, ParamValue)]) -> Params {
        let mut params = Params::default();
        for (name, value) in pairs {
            params.set(name.to_string(), value.clone());
        }
        params
    }

    #[test]
    fn text_and_flags() {
        let p = params(&[
            ("a", ParamValue::Text("x".into())),
            ("empty", ParamValue::Text(String::new())),
            ("t", ParamValue::Text("TRUE".into())),
            ("zero", ParamValue::Text("0".into())),
            ("b", ParamValue::Bool(true)),
            ("n", ParamValue::Other("a number")),
        ]);
        assert_eq!(p.text("a").unwrap(), Some("x"));
        assert_eq!(p.text("empty").unwrap(), None);
        assert_eq!(p.text("missing").unwrap(), None);
        assert!(p.text("n").is_err() && p.text("b").is_err());
        assert!(p.flag("t", false).unwrap());
        assert!(!p.flag("zero", true).unwrap());
        assert!(p.flag("b", false).unwrap());
        assert!(p.flag("missing", true).unwrap());
        assert!(p.flag("a", true).is_err() && p.flag("n", true).is_err());
    }
}
