//! The Compose file as Docker runs it on one host (SPEC's "compose.yaml" table). Each key
//! is parsed once, into typed values, while the file is read: the plan and the runtime
//! spec use these. Any key outside the table is an error naming its path; `x-*`
//! extension keys are dropped, as Compose does.

use super::interpolate::interpolate;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_yaml_ng::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// The variables appunit fills into a compose file at install time (SPEC).
pub const VARIABLES: [&str; 6] = [
    "APP_NAME",
    "APP_VERSION",
    "APP_HTTP_PORT",
    "APP_USER",
    "APP_PASSWORD",
    "APP_DATA",
];

/// Where a compose file is read: its app's catalog folder (env_file), the variables
/// (appunit's, then the folder's `.env`) and the app's data folder (binds under it are
/// the app's own, not host access).
pub struct Context<'a> {
    pub folder: &'a Path,
    pub variables: &'a dyn Fn(&str) -> Option<String>,
    pub app_data: &'a Path,
}

#[derive(Debug, Default)]
pub struct Compose {
    /// The services that run: those with `profiles` are left out, as Compose does.
    pub services: BTreeMap<String, Service>,
    /// Named volumes: folders under the app's data folder.
    pub volumes: BTreeSet<String>,
    /// The catalog folder it was read from: relative binds are copied from there.
    pub folder: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    services: BTreeMap<String, Service>,
    #[serde(default)]
    volumes: BTreeMap<String, Option<TopVolume>>,
    #[serde(default)]
    networks: BTreeMap<String, Option<TopNetwork>>,
    #[serde(default)]
    configs: BTreeMap<String, TopConfig>,
    #[serde(default)]
    // accepted, as Compose ignores it
    #[serde(rename = "version")]
    _version: Option<Value>,
    #[serde(default)]
    // the project name: the app's id is the name here
    #[serde(rename = "name")]
    _name: Option<String>,
}

/// Named volumes keep their data in the app's data folder, unless the local driver's
/// options make one a tmpfs or a bind of a host path (as Docker's local driver does).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopVolume {
    #[serde(default, deserialize_with = "local_driver")]
    #[serde(rename = "driver")]
    _driver: (),
    #[serde(default)]
    driver_opts: BTreeMap<String, Value>,
    /// Only `false`: a volume made outside the app is none of appunit's.
    #[serde(default, deserialize_with = "boolean")]
    external: bool,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    #[serde(rename = "labels")]
    _labels: Option<Value>,
}

/// A top-level `configs` entry: a file of the app folder, or its text.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopConfig {
    #[serde(default)]
    file: Option<String>,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    #[serde(rename = "name")]
    _name: Option<String>,
}

/// What a named volume is, by its top-level entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum VolumeKind {
    /// A folder in the app's data folder.
    Data,
    /// `driver_opts: {type: tmpfs}`: an empty tmpfs wherever it is mounted.
    Tmpfs { size: Option<u64> },
    /// `driver_opts: {type: none, o: bind, device: PATH}`: that path.
    Bind(String),
}

impl TopVolume {
    fn kind(&self) -> Result<VolumeKind, String> {
        if self.external {
            return Err("external`: a volume made outside the app is not the app's: appunit keeps an app's volumes in its data folder".into());
        }
        if self.driver_opts.is_empty() {
            return Ok(VolumeKind::Data);
        }
        let opt = |key: &str| self.driver_opts.get(key).and_then(scalar_text);
        let options = opt("o").unwrap_or_default();
        match opt("type").as_deref() {
            Some("tmpfs") => {
                let size = options
                    .split(',')
                    .find_map(|o| o.strip_prefix("size="))
                    .map(parse_bytes)
                    .transpose()?;
                Ok(VolumeKind::Tmpfs { size })
            }
            Some("none") if options.split(',').any(|o| o == "bind" || o == "rbind") => {
                opt("device")
                    .map(VolumeKind::Bind)
                    .ok_or_else(|| "driver_opts`: a bind needs its `device`".to_string())
            }
            other => Err(format!(
                "driver_opts`: type {other:?}: only tmpfs and bind (type none, o bind) are local volumes on one host"
            )),
        }
    }
}

/// Networks only add names that resolve inside the app: all of an app's containers
/// share one network namespace.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopNetwork {
    #[serde(rename = "name")]
    _name: Option<String>,
    #[serde(rename = "external")]
    _external: Option<Value>,
    #[serde(rename = "driver")]
    _driver: Option<String>,
    #[serde(rename = "driver_opts")]
    _driver_opts: Option<Value>,
    #[serde(rename = "labels")]
    _labels: Option<Value>,
    #[serde(rename = "attachable")]
    _attachable: Option<bool>,
    #[serde(rename = "enable_ipv6")]
    _enable_ipv6: Option<bool>,
    #[serde(rename = "ipam")]
    _ipam: Option<Value>,
    #[serde(rename = "internal")]
    _internal: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    #[serde(default)]
    pub image: String,
    /// Refused at validation with its own message: no Docker, no builds.
    #[serde(default)]
    build: Option<Value>,
    #[serde(default, deserialize_with = "command")]
    pub command: Option<Vec<String>>,
    #[serde(default, deserialize_with = "command")]
    pub entrypoint: Option<Vec<String>>,
    /// After `env_file`s, which it overrides.
    #[serde(default, deserialize_with = "environment")]
    pub environment: Vec<(String, String)>,
    #[serde(default, deserialize_with = "env_files")]
    env_file: Vec<EnvFile>,
    #[serde(default, deserialize_with = "ports")]
    pub ports: Vec<PortSpec>,
    /// Container ports the service says it listens on (for collisions in the pod).
    #[serde(default, deserialize_with = "expose")]
    pub expose: Vec<u16>,
    #[serde(default, deserialize_with = "volumes")]
    pub volumes: Vec<Mount>,
    #[serde(default, deserialize_with = "string_or_list")]
    pub tmpfs: Vec<String>,
    #[serde(default, deserialize_with = "depends_on")]
    pub depends_on: BTreeMap<String, Condition>,
    #[serde(default)]
    pub healthcheck: Option<Healthcheck>,
    #[serde(default, deserialize_with = "restart")]
    pub restart: Restart,
    #[serde(default, deserialize_with = "opt_string")]
    pub user: Option<String>,
    #[serde(default, deserialize_with = "opt_string")]
    pub working_dir: Option<String>,
    #[serde(default, deserialize_with = "opt_string")]
    pub hostname: Option<String>,
    #[serde(default, deserialize_with = "opt_string")]
    pub domainname: Option<String>,
    #[serde(default, deserialize_with = "boolean")]
    pub tty: bool,
    #[serde(default, deserialize_with = "boolean")]
    pub stdin_open: bool,
    #[serde(default, deserialize_with = "boolean")]
    pub init: bool,
    #[serde(default, deserialize_with = "key_values")]
    pub labels: Vec<(String, String)>,
    #[serde(default, deserialize_with = "signal")]
    pub stop_signal: Option<i32>,
    #[serde(default, deserialize_with = "duration")]
    pub stop_grace_period: Option<Duration>,
    #[serde(default, deserialize_with = "bytes")]
    pub shm_size: Option<u64>,
    #[serde(default, deserialize_with = "boolean")]
    pub read_only: bool,
    #[serde(default, deserialize_with = "ulimits")]
    pub ulimits: BTreeMap<String, (u64, u64)>,
    #[serde(default, deserialize_with = "sysctls")]
    pub sysctls: Vec<(String, String)>,
    #[serde(default, deserialize_with = "extra_hosts")]
    pub extra_hosts: Vec<(String, String)>,
    #[serde(default, deserialize_with = "string_or_list")]
    pub dns: Vec<String>,
    #[serde(default, deserialize_with = "string_or_list")]
    pub dns_search: Vec<String>,
    #[serde(default)]
    deploy: Option<Deploy>,
    #[serde(default, deserialize_with = "bytes")]
    mem_limit: Option<u64>,
    #[serde(default, deserialize_with = "memswap")]
    memswap_limit: Option<i64>,
    #[serde(default, deserialize_with = "number")]
    cpus: Option<f64>,
    #[serde(default, deserialize_with = "number")]
    cpu_shares: Option<f64>,
    #[serde(default, deserialize_with = "number")]
    pids_limit: Option<f64>,
    #[serde(default, deserialize_with = "string_or_list")]
    pub cap_add: Vec<String>,
    #[serde(default, deserialize_with = "string_or_list")]
    pub cap_drop: Vec<String>,
    #[serde(default, deserialize_with = "security_opt")]
    pub security_opt: SecurityOpt,
    #[serde(default, deserialize_with = "opt_string")]
    pub container_name: Option<String>,
    #[serde(default, deserialize_with = "links")]
    links: Vec<String>,
    #[serde(default, rename = "networks", deserialize_with = "service_networks")]
    aliases_from_networks: Vec<String>,
    #[serde(default, deserialize_with = "network_mode")]
    pub network_mode: NetworkMode,
    #[serde(default)]
    // output always goes to the journal
    #[serde(rename = "logging")]
    _logging: Option<Value>,
    #[serde(default, deserialize_with = "string_or_list")]
    profiles: Vec<String>,
    #[serde(default)]
    // images are pulled for the host's platform
    #[serde(rename = "platform")]
    _platform: Option<String>,
    #[serde(default)]
    // every install pulls what it does not have
    #[serde(rename = "pull_policy")]
    _pull_policy: Option<String>,
    #[serde(default, deserialize_with = "boolean")]
    pub privileged: bool,
    #[serde(default, deserialize_with = "devices")]
    pub devices: Vec<Device>,
    #[serde(default, deserialize_with = "host_only")]
    pub pid: bool,
    #[serde(default, deserialize_with = "host_only")]
    pub ipc: bool,
    #[serde(default, deserialize_with = "opt_string")]
    pub cgroup_parent: Option<String>,
    /// `cgroup: host`: the host's cgroup namespace.
    #[serde(default, deserialize_with = "host_only")]
    pub cgroup: bool,
    #[serde(default, deserialize_with = "runtime")]
    #[serde(rename = "runtime")]
    _runtime: (),
    /// `configs`: files mounted read-only, placed in `volumes` by `finish`.
    #[serde(default, deserialize_with = "config_refs")]
    configs: Vec<ConfigRef>,
    #[serde(default, deserialize_with = "number")]
    // Docker on Linux discards it ("not supported"): it limits nothing there either
    #[serde(rename = "cpu_percent")]
    _cpu_percent: Option<f64>,
    #[serde(default, deserialize_with = "boolean")]
    // whether `docker compose up` shows its output: output always goes to the journal
    #[serde(rename = "attach")]
    _attach: bool,
}

/// A service's use of a top-level config: its name and where the file goes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ConfigRef {
    source: String,
    target: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Healthcheck {
    /// None: the image's own check, as in Docker; appunit runs image checks for no
    /// service, so such a service is as one without `healthcheck`.
    #[serde(default, deserialize_with = "health_test")]
    test: Option<Vec<String>>,
    #[serde(default, deserialize_with = "duration")]
    pub interval: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub timeout: Option<Duration>,
    #[serde(default, deserialize_with = "number")]
    retries: Option<f64>,
    #[serde(default, deserialize_with = "duration")]
    pub start_period: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub start_interval: Option<Duration>,
    #[serde(default, deserialize_with = "boolean")]
    disable: bool,
}

impl Healthcheck {
    /// What the check runs (`/bin/sh -c` for a shell form); None when it is off.
    pub fn args(&self) -> Option<&[String]> {
        self.test
            .as_deref()
            .filter(|args| !self.disable && !args.is_empty())
    }

    pub fn retries(&self) -> u32 {
        self.retries.map_or(3, |r| r as u32)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    ServiceStarted,
    ServiceHealthy,
    /// The dependency runs once per start and must exit 0 first.
    ServiceCompletedSuccessfully,
}

/// What the supervisor does when the container exits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Restart {
    /// The app fails (or, for a one-shot dependency, is done with it).
    #[default]
    No,
    Always,
    /// On a non-zero status, at most this many times (None: without end).
    OnFailure(Option<u32>),
    UnlessStopped,
}

/// `security_opt`, as far as it changes the OCI spec.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecurityOpt {
    pub no_new_privileges: Option<bool>,
    pub seccomp_unconfined: bool,
    pub apparmor: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NetworkMode {
    /// The app's own network namespace (`bridge`, a network, `service:…`).
    #[default]
    App,
    Host,
}

/// A host device made visible in the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub host: PathBuf,
    pub container: PathBuf,
    pub permissions: String,
}

/// `deploy`: what means anything for one container on one host.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Deploy {
    #[serde(default)]
    resources: Resources,
    /// As Docker Compose does, it wins over `restart`.
    #[serde(default)]
    restart_policy: Option<RestartPolicy>,
    /// `replicated` or `global`: on one host, one container either way.
    #[serde(default, deserialize_with = "deploy_mode")]
    #[serde(rename = "mode")]
    _mode: (),
    #[serde(default, deserialize_with = "replicas")]
    #[serde(rename = "replicas")]
    _replicas: (),
}

/// `deploy.restart_policy`: `delay` and `window` are Swarm's, which Docker Compose
/// does not pass to the engine either.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RestartPolicy {
    #[serde(default)]
    condition: Option<String>,
    #[serde(default, deserialize_with = "number")]
    max_attempts: Option<f64>,
    #[serde(default)]
    #[serde(rename = "delay")]
    _delay: Option<Value>,
    #[serde(default)]
    #[serde(rename = "window")]
    _window: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Resources {
    #[serde(default)]
    limits: ResourceValues,
    /// Accepted, not enforced.
    #[serde(default)]
    #[serde(rename = "reservations")]
    _reservations: ResourceValues,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResourceValues {
    #[serde(default, deserialize_with = "number")]
    cpus: Option<f64>,
    #[serde(default, deserialize_with = "bytes")]
    memory: Option<u64>,
    #[serde(default, deserialize_with = "number")]
    pids: Option<f64>,
}

impl RestartPolicy {
    /// Docker Compose's reading: `none`, `on-failure` (at most `max_attempts` times),
    /// `any` (the default).
    fn restart(&self) -> Result<Restart, String> {
        let attempts = self.max_attempts.map(|n| n as u32).filter(|n| *n > 0);
        match self.condition.as_deref().unwrap_or("any") {
            "none" | "no" => Ok(Restart::No),
            "on-failure" => Ok(Restart::OnFailure(attempts)),
            "any" | "always" => Ok(Restart::Always),
            other => Err(format!(
                "condition {other:?} is not none, on-failure or any"
            )),
        }
    }
}

/// A container's cgroup limits.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, Deserialize)]
pub struct Limits {
    pub memory: Option<u64>,
    /// Memory plus swap; -1: unlimited swap.
    pub memory_swap: Option<i64>,
    pub cpus: Option<f64>,
    pub cpu_shares: Option<u64>,
    pub pids: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct EnvFile {
    path: String,
    required: bool,
}

/// A `volumes` entry of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub source: MountSource,
    pub target: PathBuf,
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSource {
    /// A top-level volume: `<data>/<name>`, starting with the image's content.
    Named(String),
    /// A volume without a name: a folder of its own under the data folder.
    Anonymous,
    /// A path of the app's own folder (`./conf/x.ini`), copied from the catalog.
    AppFolder(PathBuf),
    /// A path under the app's data folder (`${APP_DATA}/x`).
    AppData(PathBuf),
    /// Any other host path: host access.
    Host(PathBuf),
    /// A file the install writes with this text: a config's `content`, by its name.
    Text { name: String, text: String },
    /// A tmpfs, with its size in bytes and mode.
    Tmpfs {
        size: Option<u64>,
        mode: Option<u32>,
    },
}

/// A `ports` entry: `[ip:]host:container[/proto]` or `container[/proto]`, one port each
/// (ranges are expanded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    /// The host address it is published on; "" for all of them.
    pub host_ip: String,
    pub host: Option<u16>,
    pub container: u16,
    pub protocol: &'static str,
}

impl Compose {
    /// Reads compose text: variables filled from `context`, every key parsed into its
    /// type, `env_file`s read; not yet validated (`validate`). Also returns the
    /// filled-in document, which the app's folder keeps as its compose.yaml.
    pub fn read(text: &str, context: &Context) -> Result<(Compose, String), String> {
        let mut value: Value = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
        strip_extensions(&mut value);
        fill_variables(&mut value, "", context.variables)?;
        let rendered = serde_yaml_ng::to_string(&value).map_err(|e| e.to_string())?;
        let file: File = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            format!("key `{path}`: {}", e.into_inner())
        })?;
        let mut kinds = BTreeMap::new();
        for (name, volume) in file.volumes {
            let kind = match volume {
                None => VolumeKind::Data,
                Some(volume) => {
                    if volume.name.as_ref().is_some_and(|n| n != &name) {
                        return Err(format!(
                            "key `volumes.{name}.name`: a volume's data is in the app's folder under its key"
                        ));
                    }
                    volume
                        .kind()
                        .map_err(|e| format!("key `volumes.{name}.{e}"))?
                }
            };
            kinds.insert(name, kind);
        }
        let volumes = kinds
            .iter()
            .filter(|(_, kind)| **kind == VolumeKind::Data)
            .map(|(name, _)| name.clone())
            .collect();
        let mut configs = BTreeMap::new();
        for (name, config) in file.configs {
            let source = match (config.file, config.content) {
                (Some(file), None) => mount_source(&file)
                    .ok()
                    .filter(|s| matches!(s, MountSource::AppFolder(_)))
                    .ok_or_else(|| {
                        format!(
                            "key `configs.{name}.file`: {file:?} is not a path of the app folder"
                        )
                    })?,
                (None, Some(text)) => MountSource::Text {
                    name: name.clone(),
                    text,
                },
                _ => {
                    return Err(format!(
                        "key `configs.{name}`: give either `file` (in the app folder) or `content`"
                    ));
                }
            };
            configs.insert(name, source);
        }
        let _ = file.networks; // only names, and those the services carry
        let mut compose = Compose {
            services: BTreeMap::new(),
            volumes,
            folder: context.folder.to_path_buf(),
        };
        let mut profiled = BTreeSet::new();
        for (name, mut service) in file.services {
            let at = |e: String| format!("key `services.{name}.{e}");
            service.finish(context, &kinds, &configs).map_err(at)?;
            service.check(&compose.volumes).map_err(at)?;
            if service.profiles.is_empty() {
                compose.services.insert(name, service);
            } else {
                profiled.insert(name);
            }
        }
        for (name, service) in &compose.services {
            for dependency in service.depends_on.keys() {
                if profiled.contains(dependency) {
                    return Err(format!(
                        "key `services.{name}.depends_on`: {dependency:?} has `profiles`, so it is not started"
                    ));
                }
                if !compose.services.contains_key(dependency) {
                    return Err(format!(
                        "key `services.{name}.depends_on`: no service {dependency:?}"
                    ));
                }
            }
        }
        Ok((compose, rendered))
    }

    /// Checks what spans services; `web_service` must publish `web_port`, or listen on
    /// it on the host's network, where `http_port` must be that port.
    pub fn validate(&self, web_service: &str, web_port: u16, http_port: u16) -> Result<(), String> {
        if self.services.is_empty() {
            return Err("key `services`: at least one service (without profiles) is needed".into());
        }
        let web = self.services.get(web_service).ok_or_else(|| {
            format!("web_service {web_service:?} is not a service of the compose file that runs")
        })?;
        if web.network_mode == NetworkMode::Host {
            if http_port != web_port {
                return Err(format!(
                    "http_port {http_port}: the web service {web_service} is on the host's network, so its port is web_port {web_port}"
                ));
            }
        } else if !web.ports.iter().any(|p| p.container == web_port) {
            return Err(format!(
                "key `services.{web_service}.ports`: web_port {web_port} is not published"
            ));
        }
        self.start_order().map(|_| ())
    }

    /// What of the app needs host access, as `service: key` lines; empty for none.
    pub fn host_access(&self) -> Vec<String> {
        self.services
            .iter()
            .flat_map(|(name, service)| {
                service
                    .host_access()
                    .into_iter()
                    .map(move |key| format!("{name}: {key}"))
            })
            .collect()
    }

    /// Service names in an order where each comes after everything it depends on.
    pub fn start_order(&self) -> Result<Vec<&str>, String> {
        let mut order: Vec<&str> = Vec::with_capacity(self.services.len());
        let mut placed = BTreeSet::new();
        while order.len() < self.services.len() {
            let ready: Vec<&str> = self
                .services
                .iter()
                .filter(|(name, service)| {
                    !placed.contains(name.as_str())
                        && service
                            .depends_on
                            .keys()
                            .all(|d| placed.contains(d.as_str()))
                })
                .map(|(name, _)| name.as_str())
                .collect();
            if ready.is_empty() {
                let stuck: Vec<&str> = self
                    .services
                    .keys()
                    .map(String::as_str)
                    .filter(|name| !placed.contains(name))
                    .collect();
                return Err(format!(
                    "key `depends_on`: a dependency cycle among {stuck:?}"
                ));
            }
            placed.extend(ready.iter().copied());
            order.extend(ready);
        }
        Ok(order)
    }

    /// Every name that resolves to the app inside it: service names, container names,
    /// network and link aliases.
    pub fn host_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for (name, service) in &self.services {
            names.push(name.clone());
            names.extend(service.container_name.iter().cloned());
            names.extend(service.hostname.iter().cloned());
            names.extend(service.aliases_from_networks.iter().cloned());
            names.extend(service.links.iter().cloned());
        }
        let mut seen = BTreeSet::new();
        names.retain(|n| seen.insert(n.clone()));
        names
    }

    /// Two services that listen on one container port cannot share the app's network
    /// namespace: the pairs, as the ports and expose entries say.
    pub fn port_collisions(&self) -> Vec<(u16, &'static str, String, String)> {
        let mut owners: BTreeMap<(u16, &'static str), &str> = BTreeMap::new();
        let mut collisions = Vec::new();
        for (name, service) in &self.services {
            let mut own: BTreeSet<(u16, &'static str)> = service
                .ports
                .iter()
                .map(|p| (p.container, p.protocol))
                .collect();
            own.extend(service.expose.iter().map(|p| (*p, "tcp")));
            for key in own {
                if let Some(other) = owners.insert(key, name) {
                    collisions.push((key.0, key.1, other.to_string(), name.clone()));
                }
            }
        }
        collisions
    }
}

impl Service {
    /// Reads the `env_file`s (the service's `environment` wins), places binds, makes
    /// named volumes of the local driver's tmpfs or bind what they are, and adds the
    /// service's configs as read-only mounts.
    fn finish(
        &mut self,
        context: &Context,
        volumes: &BTreeMap<String, VolumeKind>,
        configs: &BTreeMap<String, MountSource>,
    ) -> Result<(), String> {
        let mut environment = Vec::new();
        for file in &self.env_file {
            let path = relative_path(&file.path)
                .map(|p| context.folder.join(p))
                .map_err(|e| format!("env_file`: {e}"))?;
            match std::fs::read_to_string(&path) {
                Ok(text) => environment.extend(
                    parse_env_file(&text).map_err(|e| format!("env_file`: {}: {e}", file.path))?,
                ),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !file.required => {}
                Err(e) => return Err(format!("env_file`: {}: {e}", file.path)),
            }
        }
        for (name, value) in std::mem::take(&mut self.environment) {
            environment.retain(|(n, _): &(String, String)| *n != name);
            environment.push((name, value));
        }
        self.environment = environment;
        if let Some(policy) = self.deploy.as_ref().and_then(|d| d.restart_policy.as_ref()) {
            self.restart = policy
                .restart()
                .map_err(|e| format!("deploy.restart_policy`: {e}"))?;
        }
        for config in std::mem::take(&mut self.configs) {
            let source = configs
                .get(&config.source)
                .ok_or_else(|| format!("configs`: no top-level config {:?}", config.source))?;
            self.volumes.push(Mount {
                source: source.clone(),
                target: config.target,
                read_only: true,
            });
        }
        for mount in &mut self.volumes {
            if let MountSource::Named(name) = &mount.source {
                match volumes.get(name) {
                    Some(VolumeKind::Tmpfs { size }) => {
                        mount.source = MountSource::Tmpfs {
                            size: *size,
                            mode: None,
                        }
                    }
                    Some(VolumeKind::Bind(path)) => {
                        mount.source = mount_source(path).map_err(|e| format!("volumes`: {e}"))?
                    }
                    _ => {}
                }
            }
        }
        for mount in &mut self.volumes {
            if let MountSource::Host(path) = &mount.source
                && let Ok(inside) = path.strip_prefix(context.app_data)
            {
                mount.source = MountSource::AppData(inside.to_path_buf());
            }
        }
        Ok(())
    }

    /// Checks one service; errors start with the key (the caller prefixes the path).
    fn check(&self, volumes: &BTreeSet<String>) -> Result<(), String> {
        if self.build.is_some() {
            return Err("build`: this service cannot run without Docker: appunit runs images from a registry and builds none".into());
        }
        if self.image.is_empty() || self.image.contains(char::is_whitespace) {
            return Err(format!(
                "image`: {:?} is not an image reference",
                self.image
            ));
        }
        for mount in &self.volumes {
            match &mount.source {
                MountSource::Named(name) if !volumes.contains(name) => {
                    return Err(format!(
                        "volumes`: named volume {name:?} is not declared under the top-level `volumes`"
                    ));
                }
                MountSource::Host(path) if is_container_engine_socket(path) => {
                    return Err(format!(
                        "volumes`: {} is a container engine's socket: this service cannot run without Docker",
                        path.display()
                    ));
                }
                _ => {}
            }
        }
        for cap in self.cap_add.iter().chain(&self.cap_drop) {
            if cap != "ALL" {
                capability(cap).map_err(|e| format!("cap_add`/`cap_drop`: {e}"))?;
            }
        }
        Ok(())
    }

    /// The keys of this service that need host access.
    pub fn host_access(&self) -> Vec<String> {
        let mut keys = Vec::new();
        if self.privileged {
            keys.push("privileged".to_string());
        }
        if !self.devices.is_empty() {
            keys.push("devices".into());
        }
        if self.network_mode == NetworkMode::Host {
            keys.push("network_mode: host".into());
        }
        if self.pid {
            keys.push("pid: host".into());
        }
        if self.ipc {
            keys.push("ipc: host".into());
        }
        if self.cgroup_parent.is_some() {
            keys.push("cgroup_parent".into());
        }
        if self.cgroup {
            keys.push("cgroup: host".into());
        }
        for mount in &self.volumes {
            if let MountSource::Host(path) = &mount.source {
                keys.push(format!("volumes: {}", path.display()));
            }
        }
        keys
    }

    /// The container's cgroup limits: `deploy.resources.limits` and the older keys.
    pub fn limits(&self) -> Limits {
        let deploy = self.deploy.as_ref().map(|d| &d.resources.limits);
        Limits {
            memory: deploy.and_then(|d| d.memory).or(self.mem_limit),
            memory_swap: self.memswap_limit,
            cpus: deploy.and_then(|d| d.cpus).or(self.cpus),
            cpu_shares: self.cpu_shares.map(|s| s as u64),
            pids: deploy
                .and_then(|d| d.pids)
                .or(self.pids_limit)
                .map(|p| p as i64),
        }
    }
}

/// A path that stays inside a folder: relative, without `..`.
fn relative_path(text: &str) -> Result<PathBuf, String> {
    let path = Path::new(text);
    if path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
        return Err(format!("{text:?} must be a path inside the app's folder"));
    }
    Ok(path
        .components()
        .filter(|c| *c != Component::CurDir)
        .collect())
}

/// Docker's and Podman's API sockets: whoever holds one drives the engine.
fn is_container_engine_socket(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n == "docker.sock" || n == "podman.sock" || n == "containerd.sock")
}

/// `NAME=value` lines; `#` comments and blank lines skipped; quotes around a value
/// removed (double quotes with `\n` escapes, as Compose reads them).
pub fn parse_env_file(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let (name, value) = line.split_once('=').unwrap_or((line, ""));
        let name = name.trim();
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(format!("line {}: {line:?} is not NAME=value", number + 1));
        }
        let value = value.trim();
        let value = if let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
            inner.replace("\\n", "\n").replace("\\\"", "\"")
        } else if let Some(inner) = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
            inner.to_string()
        } else {
            // An unquoted value ends at a comment.
            value
                .split_once(" #")
                .map_or(value, |(v, _)| v)
                .trim()
                .to_string()
        };
        out.push((name.to_string(), value));
    }
    Ok(out)
}

/// `NET_ADMIN` or `CAP_NET_ADMIN`, as the OCI spec names it.
pub fn capability(name: &str) -> Result<oci_spec::runtime::Capability, String> {
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    bare.parse()
        .map_err(|_| format!("{name:?} is not a capability"))
}

fn fill_variables(
    value: &mut Value,
    key: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), String> {
    match value {
        Value::String(text) => {
            *text = interpolate(text, lookup).map_err(|e| format!("key `{key}`: {e}"))?;
        }
        Value::Mapping(map) => {
            for (name, item) in map.iter_mut() {
                let name = name.as_str().unwrap_or("?");
                let path = if key.is_empty() {
                    name.to_string()
                } else {
                    format!("{key}.{name}")
                };
                fill_variables(item, &path, lookup)?;
            }
        }
        Value::Sequence(items) => {
            for item in items {
                fill_variables(item, key, lookup)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn strip_extensions(value: &mut Value) {
    match value {
        Value::Mapping(map) => {
            map.retain(|key, _| !key.as_str().is_some_and(|k| k.starts_with("x-")));
            map.values_mut().for_each(strip_extensions);
        }
        Value::Sequence(items) => items.iter_mut().for_each(strip_extensions),
        _ => {}
    }
}

// ---- one parser per key (serde `deserialize_with`) ----

/// A scalar as text: interpolated values are strings where the file had numbers.
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn text_of<E: serde::de::Error>(value: &Value) -> Result<String, E> {
    scalar_text(value).ok_or_else(|| E::custom(format!("expected a string, not {value:?}")))
}

fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(v) => text_of(&v).map(Some),
    }
}

fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    match Value::deserialize(d)? {
        Value::Bool(b) => Ok(b),
        Value::Null => Ok(false),
        Value::String(s) if s == "true" || s == "false" => Ok(s == "true"),
        other => Err(D::Error::custom(format!(
            "expected true or false, not {other:?}"
        ))),
    }
}

fn number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        v => scalar_text(&v)
            .and_then(|t| t.parse::<f64>().ok())
            .filter(|n| *n >= 0.0)
            .map(Some)
            .ok_or_else(|| D::Error::custom(format!("{v:?} is not a number"))),
    }
}

/// Compose's byte values: a number, or `512m`, `1g`, `64MB`, `100k`, `1.5gb`.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let lower = text.trim().to_ascii_lowercase();
    let split = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (digits, unit) = lower.split_at(split);
    let number: f64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size"))?;
    let factor: u64 = match unit.trim().trim_end_matches("ib").trim_end_matches('b') {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return Err(format!("{text:?} is not a size")),
    };
    Ok((number * factor as f64) as u64)
}

/// An optional scalar read with `parse` from its text.
fn parsed<'de, D: Deserializer<'de>, T>(
    d: D,
    parse: fn(&str) -> Result<T, String>,
) -> Result<Option<T>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        v => parse(&text_of::<D::Error>(&v)?)
            .map(Some)
            .map_err(D::Error::custom),
    }
}

fn bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    parsed(d, parse_bytes)
}

/// `memswap_limit`: a size, or -1 for unlimited swap.
fn memswap<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    parsed(d, |text| match text {
        "-1" => Ok(-1),
        _ => parse_bytes(text).map(|b| b as i64),
    })
}

/// Compose durations: `1m30s`, `10s`, `1h`, `500ms`, `1.5s`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err("an empty duration".into());
    }
    while !rest.is_empty() {
        let split = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("{text:?}: a unit (s, m, h, ms, us) is needed"))?;
        let (digits, tail) = rest.split_at(split);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let number: f64 = digits
            .parse()
            .map_err(|_| format!("{text:?} is not a duration"))?;
        let seconds = match unit {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return Err(format!("{text:?} is not a duration")),
        };
        total += Duration::from_secs_f64(number * seconds);
        rest = tail;
    }
    Ok(total)
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    parsed(d, parse_duration)
}

fn signal<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i32>, D::Error> {
    parsed(d, parse_signal)
}

/// `SIGINT`, `INT` or a number.
pub fn parse_signal(text: &str) -> Result<i32, String> {
    if let Ok(number) = text.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(number)
            .map(|s| s as i32)
            .map_err(|_| format!("{text:?} is not a signal"));
    }
    let name = if text.starts_with("SIG") {
        text.to_string()
    } else {
        format!("SIG{text}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .map(|s| s as i32)
        .map_err(|_| format!("{text:?} is not a signal"))
}

/// A list as is, a string split the way a shell would.
fn command<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::Sequence(items) => items
            .iter()
            .map(text_of::<D::Error>)
            .collect::<Result<_, _>>()
            .map(Some),
        v => {
            let text = text_of::<D::Error>(&v)?;
            shell_words::split(&text)
                .map(Some)
                .map_err(|e| D::Error::custom(format!("{text:?}: {e}")))
        }
    }
}

/// The check's arguments: `CMD` as is, `CMD-SHELL` and a string through /bin/sh;
/// `NONE` is no check.
fn health_test<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    let shell = |text: String| vec!["/bin/sh".to_string(), "-c".to_string(), text];
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::Sequence(items) => {
            let items: Vec<String> = items
                .iter()
                .map(text_of::<D::Error>)
                .collect::<Result<_, _>>()?;
            match items.split_first() {
                Some((kind, rest)) if kind == "CMD" && !rest.is_empty() => Ok(Some(rest.to_vec())),
                Some((kind, rest)) if kind == "CMD-SHELL" && !rest.is_empty() => {
                    Ok(Some(shell(rest.join(" "))))
                }
                // No check: an empty one.
                Some((kind, [])) if kind == "NONE" => Ok(Some(Vec::new())),
                _ => Err(D::Error::custom(
                    "must be a string, or a list starting with CMD, CMD-SHELL or NONE",
                )),
            }
        }
        v => {
            let text = text_of::<D::Error>(&v)?;
            if text.is_empty() {
                return Err(D::Error::custom("an empty test"));
            }
            Ok(Some(shell(text)))
        }
    }
}

fn string_or_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(Vec::new()),
        Value::Sequence(items) => items.iter().map(text_of::<D::Error>).collect(),
        v => text_of::<D::Error>(&v).map(|t| vec![t]),
    }
}

/// A map (`NAME: value`, null for empty) or a list (`NAME=value`).
fn key_values<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, String)>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(Vec::new()),
        Value::Sequence(items) => items
            .iter()
            .map(|item| {
                let text = text_of::<D::Error>(item)?;
                let (name, value) = text.split_once('=').unwrap_or((&text, ""));
                Ok((name.to_string(), value.to_string()))
            })
            .collect(),
        Value::Mapping(map) => map
            .iter()
            .map(|(name, value)| {
                let name = text_of::<D::Error>(name)?;
                let value = match value {
                    Value::Null => String::new(),
                    v => scalar_text(v).ok_or_else(|| {
                        D::Error::custom(format!("{name}: {v:?} is not a scalar"))
                    })?,
                };
                Ok((name, value))
            })
            .collect(),
        other => Err(D::Error::custom(format!(
            "expected a map or a list, not {other:?}"
        ))),
    }
}

fn environment<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, String)>, D::Error> {
    key_values(d)
}

fn env_files<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<EnvFile>, D::Error> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Long {
        path: String,
        #[serde(default = "yes")]
        required: bool,
        #[serde(default)]
        #[serde(rename = "format")]
        _format: Option<String>,
    }
    fn yes() -> bool {
        true
    }
    let items = match Value::deserialize(d)? {
        Value::Null => Vec::new(),
        Value::Sequence(items) => items,
        v => vec![v],
    };
    items
        .into_iter()
        .map(|item| match item {
            Value::Mapping(_) => serde_yaml_ng::from_value::<Long>(item)
                .map(|l| EnvFile {
                    path: l.path,
                    required: l.required,
                })
                .map_err(D::Error::custom),
            v => text_of::<D::Error>(&v).map(|path| EnvFile {
                path,
                required: true,
            }),
        })
        .collect()
}

fn port_number(text: &str) -> Result<u16, String> {
    text.parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("{text:?} is not a port number"))
}

/// `80` or `8000-8010`.
fn port_range(text: &str) -> Result<Vec<u16>, String> {
    match text.split_once('-') {
        Some((from, to)) => {
            let (from, to) = (port_number(from)?, port_number(to)?);
            if from > to {
                return Err(format!("{text:?} is an empty range"));
            }
            Ok((from..=to).collect())
        }
        None => Ok(vec![port_number(text)?]),
    }
}

fn protocol(text: &str) -> Result<&'static str, String> {
    // Docker reads `51413/UDP` as udp.
    match text.to_ascii_lowercase().as_str() {
        "tcp" => Ok("tcp"),
        "udp" => Ok("udp"),
        other => Err(format!("protocol {other:?} is neither tcp nor udp")),
    }
}

/// Pairs host and container ports of ranges of equal length (or no host port).
fn port_specs(
    host_ip: &str,
    host: Option<&str>,
    container: &str,
    protocol: &'static str,
) -> Result<Vec<PortSpec>, String> {
    let host_ip = host_ip.trim_start_matches('[').trim_end_matches(']');
    if !host_ip.is_empty() && host_ip.parse::<std::net::IpAddr>().is_err() {
        return Err(format!("{host_ip:?} is not an IP address"));
    }
    let containers = port_range(container)?;
    let hosts: Vec<Option<u16>> = match host.filter(|h| !h.is_empty()) {
        None => vec![None; containers.len()],
        Some(h) => port_range(h)?.into_iter().map(Some).collect(),
    };
    if hosts.len() != containers.len() {
        return Err("host and container port ranges differ in length".into());
    }
    Ok(hosts
        .into_iter()
        .zip(containers)
        .map(|(host, container)| PortSpec {
            host_ip: host_ip.to_string(),
            host,
            container,
            protocol,
        })
        .collect())
}

/// The short syntax: `[ip:][host:]container[/proto]`.
pub fn parse_port(spec: &str) -> Result<Vec<PortSpec>, String> {
    let (ports, proto) = spec.rsplit_once('/').unwrap_or((spec, "tcp"));
    let protocol = protocol(proto)?;
    let (rest, container) = ports.rsplit_once(':').unwrap_or(("", ports));
    let (host_ip, host) = match rest.rsplit_once(':') {
        Some((ip, host)) => (ip, Some(host)),
        None if rest.is_empty() && !ports.contains(':') => ("", None),
        None => ("", Some(rest)),
    };
    port_specs(host_ip, host, container, protocol)
}

fn ports<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PortSpec>, D::Error> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Long {
        target: Value,
        #[serde(default)]
        published: Option<Value>,
        #[serde(default)]
        host_ip: Option<String>,
        #[serde(default)]
        protocol: Option<String>,
        #[serde(default)]
        #[serde(rename = "mode")]
        _mode: Option<String>,
        #[serde(default)]
        #[serde(rename = "name")]
        _name: Option<String>,
        #[serde(default)]
        #[serde(rename = "app_protocol")]
        _app_protocol: Option<String>,
    }
    let items = match Value::deserialize(d)? {
        Value::Null => return Ok(Vec::new()),
        Value::Sequence(items) => items,
        other => return Err(D::Error::custom(format!("expected a list, not {other:?}"))),
    };
    let mut out = Vec::new();
    for item in items {
        let specs = match item {
            Value::Mapping(_) => {
                let long: Long = serde_yaml_ng::from_value(item).map_err(D::Error::custom)?;
                let target = text_of::<D::Error>(&long.target)?;
                let published = long
                    .published
                    .as_ref()
                    .map(text_of::<D::Error>)
                    .transpose()?;
                let protocol = protocol(long.protocol.as_deref().unwrap_or("tcp"))
                    .map_err(D::Error::custom)?;
                port_specs(
                    long.host_ip.as_deref().unwrap_or(""),
                    published.as_deref(),
                    &target,
                    protocol,
                )
                .map_err(|e| D::Error::custom(format!("{target:?}: {e}")))?
            }
            v => {
                let text = text_of::<D::Error>(&v)?;
                parse_port(&text).map_err(|e| D::Error::custom(format!("{text:?}: {e}")))?
            }
        };
        out.extend(specs);
    }
    Ok(out)
}

fn expose<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u16>, D::Error> {
    let mut out = Vec::new();
    for text in string_or_list(d)? {
        let (ports, proto) = text.split_once('/').unwrap_or((&text, "tcp"));
        protocol(proto).map_err(D::Error::custom)?;
        out.extend(port_range(ports).map_err(D::Error::custom)?);
    }
    Ok(out)
}

fn mount_source(source: &str) -> Result<MountSource, String> {
    if source.starts_with('/') {
        Ok(MountSource::Host(PathBuf::from(source)))
    } else if source.starts_with('.') {
        // As Compose: a source that starts with a dot (`./x`, `../x`, `.env`) is a path.
        relative_path(source).map(MountSource::AppFolder)
    } else if source.starts_with('~') {
        Err(format!("{source:?}: a home folder is no path of the app"))
    } else if source.is_empty() {
        Ok(MountSource::Anonymous)
    } else {
        Ok(MountSource::Named(source.to_string()))
    }
}

fn target_path(target: &str) -> Result<PathBuf, String> {
    if !target.starts_with('/') {
        return Err(format!("target {target:?} is not an absolute path"));
    }
    Ok(PathBuf::from(target))
}

/// The short syntax: `[SOURCE:]TARGET[:OPTIONS]`, options `ro`, `rw`, `z`, `Z`,
/// `cached`, `delegated`, `consistent`, `nocopy`, comma-separated.
pub fn parse_volume(spec: &str) -> Result<Mount, String> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (source, target, options) = match parts.as_slice() {
        [target] => ("", *target, ""),
        [source, target] => (*source, *target, ""),
        [source, target, options] => (*source, *target, *options),
        _ => return Err("must be [SOURCE:]TARGET[:ro|rw]".into()),
    };
    let mut read_only = false;
    for option in options.split(',').filter(|o| !o.is_empty()) {
        match option {
            "ro" => read_only = true,
            // SELinux relabelling (no SELinux here), macOS consistency, and mount
            // propagation, which a bind of the app's own files does not need.
            "rw" | "z" | "Z" | "cached" | "delegated" | "consistent" | "nocopy" | "shared"
            | "rshared" | "slave" | "rslave" | "private" | "rprivate" => {}
            other => {
                return Err(format!(
                    "option {other:?} is not one of ro, rw, z, Z, nocopy, [r]shared, [r]slave, [r]private"
                ));
            }
        }
    }
    Ok(Mount {
        source: mount_source(source)?,
        target: target_path(target)?,
        read_only,
    })
}

fn volumes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Mount>, D::Error> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Long {
        #[serde(rename = "type")]
        kind: String,
        #[serde(default)]
        source: Option<String>,
        target: String,
        #[serde(default, deserialize_with = "boolean")]
        read_only: bool,
        #[serde(default)]
        #[serde(rename = "consistency")]
        _consistency: Option<String>,
        #[serde(default, rename = "bind")]
        _bind: Option<BindOptions>,
        #[serde(default, rename = "volume")]
        _volume: Option<VolumeOptions>,
        #[serde(default)]
        tmpfs: Option<TmpfsOptions>,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct BindOptions {
        #[serde(rename = "propagation")]
        _propagation: Option<String>,
        #[serde(rename = "create_host_path")]
        _create_host_path: Option<bool>,
        #[serde(rename = "selinux")]
        _selinux: Option<String>,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct VolumeOptions {
        #[serde(rename = "nocopy")]
        _nocopy: Option<bool>,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct TmpfsOptions {
        #[serde(default, deserialize_with = "bytes")]
        size: Option<u64>,
        #[serde(default)]
        mode: Option<Value>,
    }
    let items = match Value::deserialize(d)? {
        Value::Null => return Ok(Vec::new()),
        Value::Sequence(items) => items,
        other => return Err(D::Error::custom(format!("expected a list, not {other:?}"))),
    };
    items
        .into_iter()
        .map(|item| match item {
            Value::Mapping(_) => {
                let long: Long = serde_yaml_ng::from_value(item).map_err(D::Error::custom)?;
                let target = target_path(&long.target).map_err(D::Error::custom)?;
                let source = long.source.unwrap_or_default();
                let source = match long.kind.as_str() {
                    "volume" if source.starts_with('/') || source.starts_with('.') => {
                        return Err(D::Error::custom(format!(
                            "{source:?}: a volume's source is a name"
                        )));
                    }
                    "volume" => mount_source(&source).map_err(D::Error::custom)?,
                    "bind" if source.starts_with('/') || source.starts_with('.') => {
                        mount_source(&source).map_err(D::Error::custom)?
                    }
                    "bind" => {
                        return Err(D::Error::custom(format!(
                            "{source:?}: a bind's source is a path"
                        )));
                    }
                    "tmpfs" => {
                        let options = long.tmpfs.as_ref();
                        let mode = options
                            .and_then(|o| o.mode.as_ref())
                            .map(|m| {
                                let text = text_of::<D::Error>(m)?;
                                // YAML reads 1777 as a number: modes are octal.
                                u32::from_str_radix(text.trim_start_matches("0o"), 8)
                                    .map_err(|_| D::Error::custom(format!("mode {text:?}")))
                            })
                            .transpose()?;
                        MountSource::Tmpfs {
                            size: options.and_then(|o| o.size),
                            mode,
                        }
                    }
                    other => {
                        return Err(D::Error::custom(format!(
                            "type {other:?} is not volume, bind or tmpfs"
                        )));
                    }
                };
                Ok(Mount {
                    source,
                    target,
                    read_only: long.read_only,
                })
            }
            v => {
                let text = text_of::<D::Error>(&v)?;
                parse_volume(&text).map_err(|e| D::Error::custom(format!("{text:?}: {e}")))
            }
        })
        .collect()
}

fn depends_on<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, Condition>, D::Error> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Dependency {
        #[serde(default = "started")]
        condition: Condition,
        #[serde(default)]
        #[serde(rename = "restart")]
        _restart: Option<bool>,
        #[serde(default)]
        #[serde(rename = "required")]
        _required: Option<bool>,
    }
    fn started() -> Condition {
        Condition::ServiceStarted
    }
    match Value::deserialize(d)? {
        Value::Null => Ok(BTreeMap::new()),
        Value::Sequence(names) => names
            .iter()
            .map(|n| text_of::<D::Error>(n).map(|n| (n, Condition::ServiceStarted)))
            .collect(),
        Value::Mapping(entries) => entries
            .into_iter()
            .map(|(name, body)| {
                let name = text_of::<D::Error>(&name)?;
                let dependency: Dependency = serde_yaml_ng::from_value(body)
                    .map_err(|e| D::Error::custom(format!("{name}: {e}")))?;
                Ok((name, dependency.condition))
            })
            .collect(),
        _ => Err(D::Error::custom("expected a list or a map of services")),
    }
}

/// `no`, `always`, `on-failure[:N]`, `unless-stopped`.
pub fn parse_restart(text: &str) -> Result<Restart, String> {
    match text {
        // Docker Compose maps `none` as it maps deploy's condition.
        "no" | "none" | "false" | "" => Ok(Restart::No),
        "always" => Ok(Restart::Always),
        "unless-stopped" => Ok(Restart::UnlessStopped),
        "on-failure" => Ok(Restart::OnFailure(None)),
        other => match other.strip_prefix("on-failure:") {
            Some(n) => n
                .parse()
                .map(|n| Restart::OnFailure(Some(n)))
                .map_err(|_| format!("{other:?}: the count must be a number")),
            None => Err(format!(
                "{other:?} is not no, always, on-failure[:N] or unless-stopped"
            )),
        },
    }
}

fn restart<'de, D: Deserializer<'de>>(d: D) -> Result<Restart, D::Error> {
    match Value::deserialize(d)? {
        Value::Null | Value::Bool(false) => Ok(Restart::No),
        v => parse_restart(&text_of::<D::Error>(&v)?).map_err(D::Error::custom),
    }
}

fn ulimits<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, (u64, u64)>, D::Error> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct SoftHard {
        soft: Value,
        hard: Value,
    }
    let limit = |v: &Value| -> Result<u64, D::Error> {
        let text = text_of::<D::Error>(v)?;
        if text == "-1" || text == "unlimited" {
            return Ok(u64::MAX);
        }
        text.parse()
            .map_err(|_| D::Error::custom(format!("{text:?} is not a limit")))
    };
    let map = match Value::deserialize(d)? {
        Value::Null => return Ok(BTreeMap::new()),
        Value::Mapping(map) => map,
        other => return Err(D::Error::custom(format!("expected a map, not {other:?}"))),
    };
    let mut out = BTreeMap::new();
    for (name, value) in map {
        let name = text_of::<D::Error>(&name)?;
        rlimit_type(&name).map_err(D::Error::custom)?;
        let pair = match value {
            Value::Mapping(_) => {
                let both: SoftHard = serde_yaml_ng::from_value(value).map_err(D::Error::custom)?;
                (limit(&both.soft)?, limit(&both.hard)?)
            }
            v => {
                let n = limit(&v)?;
                (n, n)
            }
        };
        if pair.0 > pair.1 {
            return Err(D::Error::custom(format!(
                "{name}: soft limit above hard limit"
            )));
        }
        out.insert(name, pair);
    }
    Ok(out)
}

/// An `ulimits` name as the OCI spec has it.
pub fn rlimit_type(name: &str) -> Result<oci_spec::runtime::PosixRlimitType, String> {
    let oci = match name {
        "as" => "RLIMIT_AS".to_string(),
        other => format!("RLIMIT_{}", other.to_ascii_uppercase()),
    };
    oci.parse()
        .map_err(|_| format!("{name:?} is not a resource limit"))
}

/// Only sysctls of the container's own namespaces (IPC and network), as Docker allows.
fn sysctls<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, String)>, D::Error> {
    let entries = key_values(d)?;
    for (name, _) in &entries {
        let ipc = [
            "kernel.msgmax",
            "kernel.msgmnb",
            "kernel.msgmni",
            "kernel.sem",
            "kernel.shmall",
            "kernel.shmmax",
            "kernel.shmmni",
            "kernel.shm_rmid_forced",
        ];
        let namespaced = name.starts_with("net.")
            || name.starts_with("fs.mqueue.")
            || ipc.contains(&name.as_str());
        if !namespaced {
            return Err(D::Error::custom(format!(
                "{name} is not a namespaced sysctl: it would change the host"
            )));
        }
    }
    Ok(entries)
}

/// The `extra_hosts` address that stands for the host.
pub const HOST_GATEWAY: &str = "host-gateway";

/// `host:ip` / `host=ip` list entries, or a map.
fn extra_hosts<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, String)>, D::Error> {
    let entries = match Value::deserialize(d)? {
        Value::Null => Vec::new(),
        Value::Sequence(items) => items
            .iter()
            .map(|item| {
                let text = text_of::<D::Error>(item)?;
                let (host, ip) = text
                    .split_once('=')
                    .or_else(|| text.split_once(':'))
                    .ok_or_else(|| D::Error::custom(format!("{text:?} is not HOST:IP")))?;
                Ok((host.to_string(), ip.to_string()))
            })
            .collect::<Result<_, D::Error>>()?,
        Value::Mapping(map) => map
            .iter()
            .map(|(k, v)| Ok((text_of::<D::Error>(k)?, text_of::<D::Error>(v)?)))
            .collect::<Result<_, D::Error>>()?,
        other => {
            return Err(D::Error::custom(format!(
                "expected a list or map, not {other:?}"
            )));
        }
    };
    for (host, ip) in &entries {
        let ip = ip.trim_start_matches('[').trim_end_matches(']');
        // Docker's name for the host as the container reaches it: the plan fills in
        // the app bridge's address.
        if ip != HOST_GATEWAY && ip.parse::<std::net::IpAddr>().is_err() {
            return Err(D::Error::custom(format!(
                "{host}: {ip:?} is not an IP address"
            )));
        }
    }
    Ok(entries
        .into_iter()
        .map(|(h, ip)| {
            (
                h,
                ip.trim_start_matches('[').trim_end_matches(']').to_string(),
            )
        })
        .collect())
}

fn security_opt<'de, D: Deserializer<'de>>(d: D) -> Result<SecurityOpt, D::Error> {
    let mut out = SecurityOpt::default();
    for option in string_or_list(d)? {
        let (key, value) = option
            .split_once(['=', ':'])
            .map_or((option.as_str(), None), |(k, v)| (k, Some(v)));
        match (key, value) {
            ("no-new-privileges", None | Some("true")) => out.no_new_privileges = Some(true),
            ("no-new-privileges", Some("false")) => out.no_new_privileges = Some(false),
            ("seccomp", Some("unconfined")) => out.seccomp_unconfined = true,
            ("apparmor", Some(profile)) => out.apparmor = Some(profile.to_string()),
            // SELinux labels: no SELinux on the hosts appunit runs on.
            ("label", Some(_)) => {}
            _ => {
                return Err(D::Error::custom(format!(
                    "{option:?} is not no-new-privileges, seccomp=unconfined, apparmor=… or label=…"
                )));
            }
        }
    }
    Ok(out)
}

/// `links: [db, "db:database"]`: the alias after the colon, or the service's name.
fn links<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(string_or_list(d)?
        .into_iter()
        .map(|link| {
            link.rsplit_once(':')
                .map_or(link.clone(), |(_, a)| a.to_string())
        })
        .collect())
}

/// A service's networks (list, or map with `aliases`): their aliases.
fn service_networks<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Attachment {
        #[serde(default)]
        aliases: Vec<String>,
        #[serde(rename = "ipv4_address")]
        _ipv4_address: Option<String>,
        #[serde(rename = "ipv6_address")]
        _ipv6_address: Option<String>,
        #[serde(rename = "priority")]
        _priority: Option<i64>,
    }
    match Value::deserialize(d)? {
        Value::Null | Value::Sequence(_) => Ok(Vec::new()),
        Value::Mapping(map) => {
            let mut aliases = Vec::new();
            for (name, body) in map {
                if body.is_null() {
                    continue;
                }
                let name = text_of::<D::Error>(&name)?;
                let attachment: Attachment = serde_yaml_ng::from_value(body)
                    .map_err(|e| D::Error::custom(format!("{name}: {e}")))?;
                aliases.extend(attachment.aliases);
            }
            Ok(aliases)
        }
        other => Err(D::Error::custom(format!(
            "expected a list or a map, not {other:?}"
        ))),
    }
}

fn network_mode<'de, D: Deserializer<'de>>(d: D) -> Result<NetworkMode, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(NetworkMode::App),
        v => match text_of::<D::Error>(&v)?.as_str() {
            "bridge" | "default" => Ok(NetworkMode::App),
            "host" => Ok(NetworkMode::Host),
            // Another service's namespace: the app's, which all of them share.
            m if m.starts_with("service:") => Ok(NetworkMode::App),
            other => Err(D::Error::custom(format!(
                "{other:?}: only bridge, host and service:NAME are supported"
            ))),
        },
    }
}

/// `pid` and `ipc`: `host` shares the host's namespace; the container's own is the default.
fn host_only<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(false),
        v => match text_of::<D::Error>(&v)?.as_str() {
            "host" => Ok(true),
            "private" | "shareable" | "" => Ok(false),
            other => Err(D::Error::custom(format!("{other:?}: only host or private"))),
        },
    }
}

/// `HOST[:CONTAINER[:PERMISSIONS]]`.
fn devices<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Device>, D::Error> {
    string_or_list(d)?
        .into_iter()
        .map(|text| {
            let parts: Vec<&str> = text.split(':').collect();
            let (host, container, permissions) = match parts.as_slice() {
                [host] => (*host, *host, "rwm"),
                [host, container] => (*host, *container, "rwm"),
                [host, container, permissions] => (*host, *container, *permissions),
                _ => {
                    return Err(D::Error::custom(format!(
                        "{text:?} is not HOST[:CONTAINER[:rwm]]"
                    )));
                }
            };
            if !host.starts_with('/') || !container.starts_with('/') {
                return Err(D::Error::custom(format!(
                    "{text:?}: devices are absolute paths"
                )));
            }
            Ok(Device {
                host: host.into(),
                container: container.into(),
                permissions: permissions.to_string(),
            })
        })
        .collect()
}

/// `runtime`: runc is the only one appunit runs (a GPU runtime such as nvidia is not).
fn runtime<'de, D: Deserializer<'de>>(d: D) -> Result<(), D::Error> {
    one_of(d, &["runc"], "appunit runs containers with runc only")
}

fn deploy_mode<'de, D: Deserializer<'de>>(d: D) -> Result<(), D::Error> {
    one_of(
        d,
        &["replicated", "global"],
        "neither replicated nor global",
    )
}

/// One container per service: `replicas: 1`.
fn replicas<'de, D: Deserializer<'de>>(d: D) -> Result<(), D::Error> {
    one_of(d, &["1"], "an app runs one container of each service")
}

/// A key that is accepted when absent or one of `accepted`, since appunit does only that.
fn one_of<'de, D: Deserializer<'de>>(
    d: D,
    accepted: &[&str],
    why_not: &str,
) -> Result<(), D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(()),
        v if accepted.contains(&text_of::<D::Error>(&v)?.as_str()) => Ok(()),
        other => Err(D::Error::custom(format!("{other:?}: {why_not}"))),
    }
}

/// `configs`: names (mounted at `/<name>`), or `source` with `target`; `uid`, `gid` and
/// `mode` are Swarm's and not applied by Docker Compose to a file config.
fn config_refs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ConfigRef>, D::Error> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Long {
        source: String,
        #[serde(default)]
        target: Option<String>,
        #[serde(default, rename = "uid")]
        _uid: Option<Value>,
        #[serde(default, rename = "gid")]
        _gid: Option<Value>,
        #[serde(default, rename = "mode")]
        _mode: Option<Value>,
    }
    let items = match Value::deserialize(d)? {
        Value::Null => return Ok(Vec::new()),
        Value::Sequence(items) => items,
        other => return Err(D::Error::custom(format!("expected a list, not {other:?}"))),
    };
    items
        .into_iter()
        .map(|item| {
            let (source, target) = match item {
                Value::Mapping(_) => {
                    let long: Long = serde_yaml_ng::from_value(item).map_err(D::Error::custom)?;
                    (long.source, long.target)
                }
                v => (text_of::<D::Error>(&v)?, None),
            };
            let target = target.unwrap_or_else(|| format!("/{source}"));
            Ok(ConfigRef {
                target: target_path(&target).map_err(D::Error::custom)?,
                source,
            })
        })
        .collect()
}

fn local_driver<'de, D: Deserializer<'de>>(d: D) -> Result<(), D::Error> {
    one_of(
        d,
        &["local"],
        "a volume lives in the app's data folder (driver local)",
    )
}

#[cfg(test)]
mod tests;
