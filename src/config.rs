//! `/etc/appunit/config.toml`: every key optional, unknown keys and wrong types fatal.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const DEFAULT_PATH: &str = "/etc/appunit/config.toml";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub catalog_dirs: Vec<PathBuf>,
    pub public_host: String,
    pub containerd_socket: PathBuf,
    pub containerd_namespace: String,
    pub unit_dir: PathBuf,
    /// The CNI plugins (bridge, host-local, portmap, firewall).
    pub cni_plugin_dir: PathBuf,
    /// Addresses of app network namespaces, on appunit's bridge.
    pub app_subnet: String,
    /// The target that starts app units at boot (their `WantedBy=`).
    pub unit_target: String,
    /// Installs run at once; 0 pauses the install queue.
    pub max_parallel_installs: usize,
    /// Apps that need host access (privileged, devices, host namespaces, absolute
    /// binds) install only where this is set.
    pub allow_host_access: bool,
    /// Where backups are written and looked for; unset: `<state_dir>/backups`.
    pub backup_dir: Option<PathBuf>,
    pub registries: BTreeMap<String, RegistryConfig>,
}

#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    pub mirrors: Vec<String>,
    pub insecure: bool,
    /// Credentials for this host (a mirror's own entry holds the mirror's).
    pub username: String,
    pub password: String,
    /// A containers-auth.json or Docker config.json holding this host's credentials.
    pub auth_file: Option<PathBuf>,
}

/// By hand, so that no log of the configuration shows a password.
impl std::fmt::Debug for RegistryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryConfig")
            .field("mirrors", &self.mirrors)
            .field("insecure", &self.insecure)
            .field("username", &self.username)
            .field(
                "password",
                &if self.password.is_empty() { "" } else { "***" },
            )
            .field("auth_file", &self.auth_file)
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            socket: "/run/appunit/appunit.sock".into(),
            state_dir: "/var/lib/appunit".into(),
            catalog_dirs: vec![
                "/usr/share/appunit/catalog".into(),
                "/etc/appunit/catalog.d".into(),
            ],
            public_host: String::new(),
            containerd_socket: "/run/containerd/containerd.sock".into(),
            containerd_namespace: "appunit".into(),
            unit_dir: "/etc/systemd/system".into(),
            cni_plugin_dir: "/usr/lib/cni".into(),
            app_subnet: "10.89.0.0/16".into(),
            unit_target: "multi-user.target".into(),
            max_parallel_installs: 2,
            allow_host_access: false,
            backup_dir: None,
            registries: BTreeMap::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Config {
    /// Loads `path`. A missing file is only acceptable at the default path, since every
    /// key has a default; another path the operator named must exist.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err)
                if path == Path::new(DEFAULT_PATH)
                    && err.kind() == std::io::ErrorKind::NotFound =>
            {
                return Ok(Config::default());
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.into(),
                    source,
                });
            }
        };
        Self::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.into(),
            message,
        })
    }

    /// Runtime files of the daemon and its apps (FIFOs, CNI state): beside the socket.
    pub fn run_dir(&self) -> &Path {
        self.socket.parent().unwrap_or(Path::new("/run/appunit"))
    }

    /// An app's runtime folder under `run_dir`.
    pub fn app_run_dir(&self, app_id: &str) -> PathBuf {
        self.run_dir().join("apps").join(app_id)
    }

    /// Backup bundles: `backup_dir`, or `<state_dir>/backups`.
    pub fn backup_dir(&self) -> PathBuf {
        self.backup_dir
            .clone()
            .unwrap_or_else(|| self.state_dir.join("backups"))
    }

    pub fn network(&self) -> crate::runtime::net::Network {
        crate::runtime::net::Network::new(
            self.cni_plugin_dir.clone(),
            self.app_subnet.clone(),
            self.run_dir(),
        )
    }

    /// The host's address on the apps' bridge (the subnet's first, which the CNI bridge
    /// takes as gateway): what `extra_hosts: host-gateway` names, as Docker's docker0.
    pub fn app_gateway(&self) -> std::net::Ipv4Addr {
        let network = self
            .app_subnet
            .split_once('/')
            .and_then(|(ip, _)| ip.parse::<std::net::Ipv4Addr>().ok())
            .unwrap_or(std::net::Ipv4Addr::new(10, 89, 0, 0));
        std::net::Ipv4Addr::from(u32::from(network) + 1)
    }

    pub fn parse(text: &str) -> Result<Config, String> {
        let deserializer = toml::Deserializer::parse(text).map_err(|e| e.to_string())?;
        let config: Config = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner().message().to_string();
            if key == "." {
                inner
            } else {
                format!("key `{key}`: {inner}")
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        for (key, path) in [
            ("socket", &self.socket),
            ("state_dir", &self.state_dir),
            ("containerd_socket", &self.containerd_socket),
            ("unit_dir", &self.unit_dir),
            ("cni_plugin_dir", &self.cni_plugin_dir),
        ] {
            if !path.is_absolute() {
                return Err(format!("key `{key}`: {path:?} is not an absolute path"));
            }
        }
        if let Some(dir) = self.backup_dir.as_ref().filter(|d| !d.is_absolute()) {
            return Err(format!("key `backup_dir`: {dir:?} is not an absolute path"));
        }
        if let Some(dir) = self.catalog_dirs.iter().find(|d| !d.is_absolute()) {
            return Err(format!(
                "key `catalog_dirs`: {dir:?} is not an absolute path"
            ));
        }
        let subnet_ok = self.app_subnet.split_once('/').is_some_and(|(ip, bits)| {
            ip.parse::<std::net::Ipv4Addr>().is_ok()
                && bits.parse::<u8>().is_ok_and(|b| (8..=28).contains(&b))
        });
        if !subnet_ok {
            return Err(format!(
                "key `app_subnet`: {:?} is not an IPv4 subnet like 10.89.0.0/16",
                self.app_subnet
            ));
        }
        if !self.unit_target.ends_with(".target") || self.unit_target.contains(['/', ' ']) {
            return Err(format!(
                "key `unit_target`: {:?} is not a target unit",
                self.unit_target
            ));
        }
        if self.public_host.contains(['/', ' ']) {
            return Err(format!(
                "key `public_host`: {:?} must be a bare host name or address",
                self.public_host
            ));
        }
        let namespace_ok = !self.containerd_namespace.is_empty()
            && self
                .containerd_namespace
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !namespace_ok {
            return Err(format!(
                "key `containerd_namespace`: {:?} is not a valid containerd namespace",
                self.containerd_namespace
            ));
        }
        for (registry, settings) in &self.registries {
            for mirror in &settings.mirrors {
                if !(mirror.starts_with("http://") || mirror.starts_with("https://")) {
                    return Err(format!(
                        "key `registries.{registry}.mirrors`: {mirror:?} must start with http:// or https://"
                    ));
                }
            }
            if settings.username.is_empty() != settings.password.is_empty() {
                return Err(format!(
                    "key `registries.{registry}`: `username` and `password` go together"
                ));
            }
            if let Some(file) = &settings.auth_file {
                if !settings.username.is_empty() {
                    return Err(format!(
                        "key `registries.{registry}.auth_file`: give either `auth_file` or `username`/`password`"
                    ));
                }
                if !file.is_absolute() {
                    return Err(format!(
                        "key `registries.{registry}.auth_file`: {file:?} is not an absolute path"
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_the_spec_defaults() {
        let config = Config::parse("").unwrap();
        assert_eq!(config.socket, PathBuf::from("/run/appunit/appunit.sock"));
        assert_eq!(config.containerd_namespace, "appunit");
        assert_eq!(config.catalog_dirs.len(), 2);
    }

    #[test]
    fn registries_parse() {
        let config = Config::parse(
            "[registries.\"docker.io\"]\nmirrors = [\"http://127.0.0.1:5000\"]\n[registries.\"127.0.0.1:5000\"]\ninsecure = true\n",
        )
        .unwrap();
        assert_eq!(
            config.registries["docker.io"].mirrors,
            ["http://127.0.0.1:5000"]
        );
        assert!(config.registries["127.0.0.1:5000"].insecure);
    }

    #[test]
    fn registry_credentials_parse_and_stay_out_of_debug() {
        let config = Config::parse(
            "[registries.\"docker.io\"]\nusername = \"u\"\npassword = \"s3cret\"\n[registries.\"r.example\"]\nauth_file = \"/etc/appunit/auth.json\"\n",
        )
        .unwrap();
        assert_eq!(config.registries["docker.io"].username, "u");
        assert_eq!(config.registries["docker.io"].password, "s3cret");
        assert!(!format!("{config:?}").contains("s3cret"));
        assert_eq!(
            config.registries["r.example"].auth_file.as_deref(),
            Some(Path::new("/etc/appunit/auth.json"))
        );
    }

    #[test]
    fn registry_credentials_are_checked() {
        let err = Config::parse("[registries.x]\nusername = \"u\"").unwrap_err();
        assert!(
            err.contains("registries.x") && err.contains("password"),
            "{err}"
        );
        let err = Config::parse("[registries.x]\nauth_file = \"auth.json\"").unwrap_err();
        assert!(err.contains("registries.x.auth_file"), "{err}");
        let err = Config::parse(
            "[registries.x]\nauth_file = \"/a.json\"\nusername = \"u\"\npassword = \"p\"",
        )
        .unwrap_err();
        assert!(err.contains("registries.x.auth_file"), "{err}");
        let err = Config::parse("[registries.x]\npasword = \"p\"").unwrap_err();
        assert!(err.contains("pasword"), "{err}");
        let err = Config::parse("[registries.x]\nusername = 5").unwrap_err();
        assert!(err.contains("registries.x.username"), "{err}");
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::parse("sokcet = \"/x\"").unwrap_err();
        assert!(err.contains("sokcet"), "{err}");
        let err = Config::parse("[registries.\"docker.io\"]\nmirror = []").unwrap_err();
        assert!(err.contains("mirror"), "{err}");
    }

    #[test]
    fn wrong_type_is_named() {
        let err = Config::parse("state_dir = 5").unwrap_err();
        assert!(err.contains("state_dir"), "{err}");
        let err = Config::parse("[registries.x]\ninsecure = \"yes\"").unwrap_err();
        assert!(err.contains("registries.x.insecure"), "{err}");
    }
}
