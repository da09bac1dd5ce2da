//! Variables at import time. A source's variables are resolved into the text that the
//! emitted compose file carries: appunit's own variables stay references (`${APP_NAME}`),
//! every other value is written out, its `$` escaped as `$$`, so that the install-time
//! interpolation gives exactly what Docker Compose would have given.

use crate::catalog::interpolate;
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
        interpolate::fill(text, self).map_err(|e| e.to_string())
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

impl interpolate::Variables for Vars {
    fn get(&mut self, name: &str) -> Option<String> {
        self.values.get(name).cloned()
    }

    /// Compose makes an unset variable "": the name is kept, for the import to report.
    fn unset(&mut self, name: &str) -> Result<String, interpolate::InterpolateError> {
        self.missing.insert(name.to_string());
        Ok(String::new())
    }

    fn dollar(&self) -> &'static str {
        "$$"
    }
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
