//! Variables at import time. A source's variables are resolved into the text that the
//! emitted compose file carries: appunit's own variables stay references (`${APP_NAME}`),
//! every other value is written out, its `$` escaped as `$$`, so that the install-time
//! interpolation gives exactly what Docker Compose would have given.

use std::collections::BTreeMap;

/// Name → the text that replaces a reference to it (already escaped for the output).
#[derive(Debug, Default, Clone)]
pub struct Vars {
    values: BTreeMap<String, String>,
    /// appunit's own variables: a `.env` line does not replace them.
    pinned: std::collections::BTreeSet<String>,
    /// Variables referenced without a value or default: Compose makes them "".
    pub missing: std::collections::BTreeSet<String>,
}

impl Vars {
    /// A plain value, written out literally.
    pub fn set_literal(&mut self, name: &str, value: &str) {
        self.values
            .insert(name.to_string(), value.replace('$', "$$"));
    }

    /// A variable that becomes one of appunit's install-time variables.
    pub fn set_app(&mut self, name: &str, app_variable: &str) {
        self.values
            .insert(name.to_string(), format!("${{{app_variable}}}"));
        self.pinned.insert(name.to_string());
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// The output text of a Compose string: every reference resolved, `$$` kept.
    pub fn resolve(&mut self, text: &str) -> Result<String, String> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            if let Some(tail) = after.strip_prefix('$') {
                out.push_str("$$");
                rest = tail;
            } else if let Some(braced) = after.strip_prefix('{') {
                let end =
                    closing_brace(braced).ok_or_else(|| format!("unterminated ${{ in {text:?}"))?;
                out.push_str(&self.expand(&braced[..end])?);
                rest = &braced[end + 1..];
            } else {
                let len = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                if len == 0 {
                    out.push_str("$$");
                } else {
                    out.push_str(&self.expand(&after[..len])?);
                }
                rest = &after[len..];
            }
        }
        out.push_str(rest);
        Ok(out)
    }

    fn expand(&mut self, reference: &str) -> Result<String, String> {
        let split = reference
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(reference.len());
        let (name, operator) = reference.split_at(split);
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(format!("invalid variable name in ${{{reference}}}"));
        }
        let value = self.get(name).map(str::to_string);
        let set_nonempty = value.as_deref().is_some_and(|v| !v.is_empty());
        let (op, word) = match operator {
            "" => ("", ""),
            _ => {
                let op_len = if operator.starts_with(':') { 2 } else { 1 };
                operator.split_at(op_len.min(operator.len()))
            }
        };
        match op {
            "" => Ok(value.unwrap_or_else(|| {
                self.missing.insert(name.to_string());
                String::new()
            })),
            ":-" if set_nonempty => Ok(value.unwrap_or_default()),
            "-" if value.is_some() => Ok(value.unwrap_or_default()),
            ":-" | "-" => self.resolve(word),
            ":?" if set_nonempty => Ok(value.unwrap_or_default()),
            "?" if value.is_some() => Ok(value.unwrap_or_default()),
            ":?" | "?" => Err(format!("${{{name}}} is required: {word}")),
            ":+" if set_nonempty => self.resolve(word),
            "+" if value.is_some() => self.resolve(word),
            ":+" | "+" => Ok(String::new()),
            _ => Err(format!("unsupported form ${{{reference}}}")),
        }
    }

    /// Reads a `.env` file as Compose does: `KEY=VALUE` lines, `#` comments, quotes
    /// (single: literal; double: escapes and variables), later lines seeing earlier ones.
    /// appunit's own variables keep their value. Returns the names, in order.
    pub fn load_dotenv(&mut self, text: &str) -> Result<Vec<String>, String> {
        let mut names = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            let line = line.strip_prefix("export ").unwrap_or(line);
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((name, raw)) = line.split_once('=') else {
                continue;
            };
            let name = name.trim().to_string();
            let raw = raw.trim();
            let escaped = if let Some(inner) = raw.strip_prefix('\'') {
                inner
                    .rsplit_once('\'')
                    .map_or(inner, |(v, _)| v)
                    .replace('$', "$$")
            } else if let Some(inner) = raw.strip_prefix('"') {
                let inner = inner.rsplit_once('"').map_or(inner, |(v, _)| v);
                let unescaped = inner
                    .replace("\\n", "\n")
                    .replace("\\\"", "\"")
                    .replace("\\\\", "\\");
                self.resolve(&unescaped)?
            } else {
                let value = raw.split_once(" #").map_or(raw, |(v, _)| v).trim_end();
                self.resolve(value)?
            };
            names.push(name.clone());
            if !self.pinned.contains(&name) {
                self.values.insert(name, escaped);
            }
        }
        Ok(names)
    }
}

/// Where the `}` closing a `${` is, past nested `${…}` in defaults.
fn closing_brace(text: &str) -> Option<usize> {
    let mut depth = 0;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return Some(i),
            '}' => depth -= 1,
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        let mut vars = Vars::default();
        vars.set_app("W9_ID", "APP_NAME");
        vars.set_literal("PW", "a$b");
        vars.set_literal("EMPTY", "");
        vars
    }

    #[test]
    fn forms_resolve_as_compose_does() {
        let cases = [
            ("$W9_ID-mysql", "${APP_NAME}-mysql"),
            ("${W9_ID}", "${APP_NAME}"),
            ("${PW}", "a$$b"),
            ("$$HOME", "$$HOME"),
            ("${NOPE:-x${W9_ID}}", "x${APP_NAME}"),
            ("${EMPTY:-d}", "d"),
            ("${EMPTY-d}", ""),
            ("${PW:+set}", "set"),
            ("${NOPE:+set}", ""),
            ("${PW:?must}", "a$$b"),
            ("a $ b", "a $$ b"),
        ];
        for (input, want) in cases {
            assert_eq!(vars().resolve(input).unwrap(), want, "{input}");
        }
        assert!(vars().resolve("${NOPE:?needed}").is_err());
        let mut v = vars();
        assert_eq!(v.resolve("x${NOPE}y").unwrap(), "xy");
        assert!(v.missing.contains("NOPE"));
    }

    #[test]
    fn dotenv_quotes_comments_and_order() {
        let mut v = vars();
        v.load_dotenv("# c\nW9_ID='ignored'\nA=1 # note\nB=\"$A-$W9_ID\"\nC='$A'\nexport D=x\n")
            .unwrap();
        assert_eq!(v.get("W9_ID"), Some("${APP_NAME}"));
        assert_eq!(v.get("A"), Some("1"));
        assert_eq!(v.get("B"), Some("1-${APP_NAME}"));
        assert_eq!(v.get("C"), Some("$$A"));
        assert_eq!(v.get("D"), Some("x"));
    }
}
