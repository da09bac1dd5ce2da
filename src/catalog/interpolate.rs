//! Compose-style interpolation: `${VAR}`, `$VAR`, `${VAR:-default}`, `${VAR-default}`,
//! `${VAR:?error}`, `${VAR?error}`, `${VAR:+alternative}`, `${VAR+alternative}`, nested
//! references in defaults, and `$$` for a literal dollar.

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum InterpolateError {
    #[error("unknown variable ${{{0}}}")]
    Unknown(String),
    #[error("unterminated ${{ in {0:?}")]
    Unterminated(String),
    #[error("invalid variable name {0:?}")]
    BadName(String),
    #[error("variable {name} is required: {message}")]
    Required { name: String, message: String },
}

/// Where references find their values, and what the text they fill is for.
pub trait Variables {
    fn get(&mut self, name: &str) -> Option<String>;

    /// A bare reference to an unset variable: an error unless the variables say otherwise.
    fn unset(&mut self, name: &str) -> Result<String, InterpolateError> {
        Err(InterpolateError::Unknown(name.to_string()))
    }

    /// What `$$` (and a `$` that starts no reference) becomes: `$`, or `$$` in text
    /// that will be interpolated again.
    fn dollar(&self) -> &'static str {
        "$"
    }
}

struct Lookup<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Variables for Lookup<'_> {
    fn get(&mut self, name: &str) -> Option<String> {
        (self.0)(name)
    }
}

/// Fills `text` from `lookup`. A variable `lookup` does not know is an error unless the
/// reference says what to do without it.
pub fn interpolate(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, InterpolateError> {
    fill(text, &mut Lookup(lookup))
}

/// Fills `text` from `variables`.
pub fn fill(text: &str, variables: &mut impl Variables) -> Result<String, InterpolateError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push_str(variables.dollar());
            rest = tail;
        } else if let Some(braced) = after.strip_prefix('{') {
            let end = closing_brace(braced)
                .ok_or_else(|| InterpolateError::Unterminated(text.to_string()))?;
            out.push_str(&expand(&braced[..end], variables)?);
            rest = &braced[end + 1..];
        } else {
            let len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            if len == 0 {
                out.push_str(variables.dollar());
            } else {
                out.push_str(&expand(&after[..len], variables)?);
            }
            rest = &after[len..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The `}` that closes a `${`, past nested `${…}` in its default.
fn closing_brace(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    let bytes = text.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'{' if i > 0 && bytes[i - 1] == b'$' => depth += 1,
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
    }
    None
}

fn expand(reference: &str, variables: &mut impl Variables) -> Result<String, InterpolateError> {
    let len = reference
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(reference.len());
    let (name, modifier) = reference.split_at(len);
    let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_');
    if !valid {
        return Err(InterpolateError::BadName(reference.to_string()));
    }
    let value = variables.get(name);
    // With a colon, an empty value counts as unset.
    let (set, operator, word) = match modifier.get(..2) {
        Some(op @ (":-" | ":?" | ":+")) => (
            value.as_ref().is_some_and(|v| !v.is_empty()),
            &op[1..],
            &modifier[2..],
        ),
        _ => match modifier.get(..1) {
            Some(op @ ("-" | "?" | "+")) => (value.is_some(), op, &modifier[1..]),
            None => (value.is_some(), "", ""),
            Some(_) => return Err(InterpolateError::BadName(reference.to_string())),
        },
    };
    match (operator, set) {
        ("", true) | ("-", true) | ("?", true) => Ok(value.unwrap_or_default()),
        ("", false) => variables.unset(name),
        ("-", false) => fill(word, variables),
        ("?", false) => Err(InterpolateError::Required {
            name: name.to_string(),
            message: word.to_string(),
        }),
        ("+", true) => fill(word, variables),
        _ => Ok(String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(name: &str) -> Option<String> {
        match name {
            "APP_NAME" => Some("blog".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn forms() {
        let cases = [
            ("${APP_NAME}-x", "blog-x"),
            ("$APP_NAME/y", "blog/y"),
            ("${NOPE:-dflt}", "dflt"),
            ("${EMPTY:-dflt}", "dflt"),
            ("${EMPTY-dflt}", ""),
            ("${NOPE-dflt}", "dflt"),
            ("${APP_NAME:-dflt}", "blog"),
            ("${APP_NAME:?must}", "blog"),
            ("${EMPTY?must}", ""),
            ("${APP_NAME:+alt}", "alt"),
            ("${EMPTY:+alt}", ""),
            ("${EMPTY+alt}", "alt"),
            ("${NOPE+alt}", ""),
            ("${NOPE:-${APP_NAME}-db}", "blog-db"),
            ("${NOPE:-a:b}", "a:b"),
            ("cost $$5", "cost $5"),
            ("a $ b", "a $ b"),
            ("plain", "plain"),
        ];
        for (input, want) in cases {
            assert_eq!(interpolate(input, &vars).unwrap(), want, "{input}");
        }
    }

    #[test]
    fn errors() {
        assert_eq!(
            interpolate("${NOPE}", &vars),
            Err(InterpolateError::Unknown("NOPE".into()))
        );
        assert_eq!(
            interpolate("${EMPTY:?set it}", &vars),
            Err(InterpolateError::Required {
                name: "EMPTY".into(),
                message: "set it".into()
            })
        );
        assert!(matches!(
            interpolate("${NOPE?x}", &vars),
            Err(InterpolateError::Required { .. })
        ));
        assert!(matches!(
            interpolate("${APP_NAME", &vars),
            Err(InterpolateError::Unterminated(_))
        ));
        assert!(matches!(
            interpolate("${1X}", &vars),
            Err(InterpolateError::BadName(_))
        ));
        assert!(matches!(
            interpolate("${A B}", &vars),
            Err(InterpolateError::BadName(_))
        ));
    }
}
