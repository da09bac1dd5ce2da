//! Registry credentials (config or auth file) and `Www-Authenticate` challenges.

use crate::config::RegistryConfig;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

/// A user and password for one registry host. Debug never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, ***)", self.username)
    }
}

impl Credentials {
    /// The value of an `Authorization: Basic` header.
    pub fn basic(&self) -> String {
        let pair = format!("{}:{}", self.username, self.password);
        format!("Basic {}", STANDARD.encode(pair))
    }
}

/// The credentials configured for `host`, if any. An unreadable auth file is an
/// error naming the file.
pub fn credentials(
    host: &str,
    settings: Option<&RegistryConfig>,
) -> Result<Option<Credentials>, String> {
    let Some(settings) = settings else {
        return Ok(None);
    };
    if !settings.username.is_empty() {
        return Ok(Some(Credentials {
            username: settings.username.clone(),
            password: settings.password.clone(),
        }));
    }
    match &settings.auth_file {
        Some(path) => from_auth_file(host, path),
        None => Ok(None),
    }
}

#[derive(Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
}

#[derive(Deserialize)]
struct AuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

fn from_auth_file(host: &str, path: &Path) -> Result<Option<Credentials>, String> {
    let bad = |what: String| format!("auth file {}: {what}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let file: AuthFile = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let Some(entry) = file
        .auths
        .iter()
        .find(|(key, _)| same_registry(key, host))
        .map(|(_, entry)| entry)
    else {
        return Ok(None);
    };
    if let (Some(username), Some(password)) = (&entry.username, &entry.password) {
        return Ok(Some(Credentials {
            username: username.clone(),
            password: password.clone(),
        }));
    }
    let Some(auth) = &entry.auth else {
        return Ok(None);
    };
    let decoded = STANDARD
        .decode(auth.trim())
        .ok()
        .and_then(|d| String::from_utf8(d).ok())
        .ok_or_else(|| {
            bad(format!(
                "the `auth` of {host} is not base64 of user:password"
            ))
        })?;
    let (username, password) = decoded.split_once(':').ok_or_else(|| {
        bad(format!(
            "the `auth` of {host} is not base64 of user:password"
        ))
    })?;
    Ok(Some(Credentials {
        username: username.into(),
        password: password.into(),
    }))
}

/// Auth file keys may be `HOST`, `https://HOST/v1/` and, for Docker Hub, its aliases.
fn same_registry(key: &str, host: &str) -> bool {
    let key = key.split_once("://").map_or(key, |(_, rest)| rest);
    let key = key.split('/').next().unwrap_or_default();
    let hub = |h: &str| matches!(h, "docker.io" | "index.docker.io" | "registry-1.docker.io");
    key == host || (hub(key) && hub(host))
}

/// A `Www-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
    Basic,
}

/// Parses `Bearer realm="…",service="…",scope="…"` or `Basic realm="…"`.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let params = parameters(rest);
    Some(Challenge::Bearer {
        realm: params.get("realm")?.clone(),
        service: params.get("service").cloned(),
        scope: params.get("scope").cloned(),
    })
}

/// `key="value"` pairs separated by commas; values may hold commas inside quotes.
fn parameters(text: &str) -> HashMap<String, String> {
    let mut params = HashMap::new();
    let mut rest = text.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, next) = match after.strip_prefix('"') {
            Some(quoted) => match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            },
            None => match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            },
        };
        params.insert(key, value.to_string());
        rest = next.trim_start().trim_start_matches(',');
    }
    params
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges_parse() {
        let challenge = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#,
        );
        assert_eq!(
            challenge,
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull,push".into()),
            })
        );
        let bare = parse_challenge("bearer realm=http://127.0.0.1:5002/token");
        assert_eq!(
            bare,
            Some(Challenge::Bearer {
                realm: "http://127.0.0.1:5002/token".into(),
                service: None,
                scope: None,
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Bearer service=\"x\""), None);
        assert_eq!(parse_challenge("Negotiate"), None);
    }

    #[test]
    fn auth_files_give_credentials_by_host() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.json");
        let auth = STANDARD.encode("alice:pa:ss");
        std::fs::write(
            &path,
            format!(
                r#"{{"auths": {{"https://index.docker.io/v1/": {{"auth": "{auth}"}},
                    "r.example:5000": {{"username": "bob", "password": "pw"}}}}}}"#
            ),
        )
        .unwrap();
        let settings = RegistryConfig {
            auth_file: Some(path.clone()),
            ..RegistryConfig::default()
        };
        let hub = credentials("docker.io", Some(&settings)).unwrap().unwrap();
        assert_eq!(
            (hub.username.as_str(), hub.password.as_str()),
            ("alice", "pa:ss")
        );
        let other = credentials("r.example:5000", Some(&settings))
            .unwrap()
            .unwrap();
        assert_eq!(other.username, "bob");
        assert_eq!(credentials("elsewhere", Some(&settings)).unwrap(), None);
        assert!(!format!("{hub:?}").contains("pa:ss"));
        std::fs::write(&path, "{").unwrap();
        let err = credentials("docker.io", Some(&settings)).unwrap_err();
        assert!(err.contains(&path.display().to_string()), "{err}");
    }
}
