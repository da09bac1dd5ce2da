//! Compose-style `${VAR}` interpolation: `${VAR}`, `${VAR:-default}`, `${VAR-default}`,
//! `$VAR`, and `$$` for a literal dollar.

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum InterpolateError {
    #[error("unknown variable ${{{0}}}")]
    Unknown(String),
    #[error("unterminated ${{ in {0:?}")]
    Unterminated(String),
    #[error("invalid variable name {0:?}")]
    BadName(String),
}

/// Fills `text` from `lookup`. A variable `lookup` does not know is an error unless the
/// reference carries a default.
pub fn interpolate(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, InterpolateError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(braced) = after.strip_prefix('{') {
            let end = braced
                .find('}')
                .ok_or_else(|| InterpolateError::Unterminated(text.to_string()))?;
            out.push_str(&expand(&braced[..end], lookup)?);
            rest = &braced[end + 1..];
        } else {
            let len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            if len == 0 {
                out.push('$');
            } else {
                out.push_str(&expand(&after[..len], lookup)?);
            }
            rest = &after[len..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn expand(
    reference: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, InterpolateError> {
    let (name, default) = match reference.split_once(":-").or(reference.split_once('-')) {
        Some((name, default)) => (name, Some(default)),
        None => (reference, None),
    };
    let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(InterpolateError::BadName(name.to_string()));
    }
    match (lookup(name), default) {
        (Some(value), Some(default)) if value.is_empty() => Ok(default.to_string()),
        (Some(value), _) => Ok(value),
        (None, Some(default)) => Ok(default.to_string()),
        (None, None) => Err(InterpolateError::Unknown(name.to_string())),
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
            ("${APP_NAME:-dflt}", "blog"),
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
        assert!(matches!(
            interpolate("${APP_NAME", &vars),
            Err(InterpolateError::Unterminated(_))
        ));
        assert!(matches!(
            interpolate("${1X}", &vars),
            Err(InterpolateError::BadName(_))
        ));
    }
}
