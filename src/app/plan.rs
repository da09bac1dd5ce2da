//! What an installed app runs: its containers (with their OCI specs) and the plan the
//! supervisor follows (start order, dependencies, health checks, how to stop). Derived
//! from the rendered compose file and the pulled images.

use super::{AppFolder, container_id, slice_name};
use crate::catalog::compose::{Command, Compose, Condition, Environment, Service};
use crate::images::PulledImage;
use crate::runtime::net::{PortMapping, netns_path};
use crate::runtime::oci::{self, Accounts, Bind, RunSettings};
use serde::{Deserialize, Serialize};
use serde_yaml_ng::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Written to the app folder at install; read by the supervisor at every start.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AppPlan {
    pub app_id: String,
    /// Ports published on the host, for the whole app.
    pub ports: Vec<PortMapping>,
    /// In start order: each after everything it depends on.
    pub services: Vec<ServicePlan>,
    /// What the supervisor masks in the reasons it reports (the app's password).
    #[serde(default)]
    pub secrets: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServicePlan {
    pub name: String,
    pub container_id: String,
    /// The image and the digest the install pinned.
    pub image: String,
    pub digest: String,
    pub depends_on: BTreeMap<String, Condition>,
    pub health: Option<HealthPlan>,
    pub stop_signal: i32,
    pub stop_grace_ms: u64,
    /// The container's process (environment, working folder, user): health checks
    /// run with it, only their arguments differ.
    pub process: oci_spec::runtime::Process,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HealthPlan {
    pub args: Vec<String>,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub start_period_ms: u64,
    /// The interval while the start period lasts: a service that comes up early is
    /// seen early.
    #[serde(default)]
    pub start_interval_ms: u64,
    pub retries: u32,
}

/// A container to create: its id, image, parent snapshot and runtime spec.
pub struct ContainerToCreate {
    pub id: String,
    pub image: String,
    pub chain_id: String,
    pub spec: oci_spec::runtime::Spec,
}

/// Everything the creating phase writes for an app.
pub struct Prepared {
    pub plan: AppPlan,
    pub containers: Vec<ContainerToCreate>,
    /// `/etc/hosts` of the app: every service name is 127.0.0.1, as in a pod.
    pub hosts: String,
    /// Folders the app's volumes need.
    pub folders: Vec<PathBuf>,
    /// Named volumes, which start with what the image has at their path (as Docker's).
    pub seeds: Vec<VolumeSeed>,
}

/// A named volume's folder and where its content comes from while it is empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeSeed {
    pub folder: PathBuf,
    /// The image's top snapshot.
    pub chain_id: String,
    /// The volume's path in the container.
    pub path: PathBuf,
}

/// `images` maps each service's image reference to what was pulled for it, `accounts`
/// to the image's accounts where a user name needs them.
pub fn prepare(
    app_id: &str,
    compose: &Compose,
    images: &BTreeMap<String, PulledImage>,
    accounts: &BTreeMap<String, Accounts>,
    app_folder: &AppFolder,
) -> Result<Prepared, String> {
    let names: Vec<&str> = compose.services.keys().map(String::as_str).collect();
    let hosts = format!(
        "127.0.0.1\tlocalhost {}\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        names.join(" ")
    );
    let mut plan = AppPlan {
        app_id: app_id.to_string(),
        ports: Vec::new(),
        services: Vec::new(),
        secrets: Vec::new(),
    };
    let mut containers = Vec::new();
    let mut folders = Vec::new();
    let mut seeds = Vec::new();
    for name in compose.start_order()? {
        let service = &compose.services[name];
        let pulled = images
            .get(&service.image)
            .ok_or_else(|| format!("{name}: image {} was not pulled", service.image))?;
        let binds = service_binds(service, pulled, app_folder, &mut folders, &mut seeds)?;
        for port in service.port_specs().map_err(|e| format!("{name}: {e}"))? {
            if let Some(host_port) = port.host {
                plan.ports.push(PortMapping {
                    host_ip: port.host_ip,
                    host_port,
                    container_port: port.container,
                    protocol: port.protocol.to_string(),
                });
            }
        }
        let run = RunSettings {
            hostname: name.to_string(),
            entrypoint: service.entrypoint.as_ref().map(words).transpose()?,
            command: service.command.as_ref().map(words).transpose()?,
            environment: environment(&service.environment)?,
            user: service.user.clone(),
            accounts: accounts.get(&service.image).cloned(),
            working_dir: service.working_dir.clone(),
            binds,
            netns: netns_path(app_id),
            cgroups_path: format!(
                "{}:appunit:{}",
                slice_name(app_id),
                container_id(app_id, name)
            ),
            security: Default::default(),
        };
        let spec = oci::runtime_spec(&pulled.config, &run).map_err(|e| format!("{name}: {e}"))?;
        let process = spec.process().clone().unwrap_or_default();
        plan.services.push(ServicePlan {
            name: name.to_string(),
            container_id: container_id(app_id, name),
            image: pulled.name.clone(),
            digest: pulled.digest.clone(),
            depends_on: service.depends_on.0.clone(),
            health: health_plan(service)?,
            stop_signal: stop_signal(service, &pulled.config.stop_signal)?,
            stop_grace_ms: duration_ms(&service.stop_grace_period, Duration::from_secs(10))?,
            process,
        });
        containers.push(ContainerToCreate {
            id: container_id(app_id, name),
            image: pulled.name.clone(),
            chain_id: pulled.chain_id.clone(),
            spec,
        });
    }
    Ok(Prepared {
        plan,
        containers,
        hosts,
        folders,
        seeds,
    })
}

/// The container's mounts: the app's /etc/hosts, the host's resolv.conf (its upstream
/// servers' on a systemd-resolved host) and the
/// service's volumes. Folders the volumes need, and the named volumes to fill from
/// the image, are added to `folders` and `seeds`.
fn service_binds(
    service: &Service,
    pulled: &PulledImage,
    app_folder: &AppFolder,
    folders: &mut Vec<PathBuf>,
    seeds: &mut Vec<VolumeSeed>,
) -> Result<Vec<Bind>, String> {
    let mut binds = vec![
        Bind {
            source: app_folder.hosts_file(),
            target: "/etc/hosts".into(),
            read_only: true,
        },
        Bind {
            source: oci::resolv_conf(),
            target: "/etc/resolv.conf".into(),
            read_only: true,
        },
    ];
    for volume in &service.volumes {
        let bind = volume_bind(volume, app_folder)?;
        if bind.source.starts_with(app_folder.path()) {
            folders.push(bind.source.clone());
        }
        if bind.source.starts_with(app_folder.data()) {
            seeds.push(VolumeSeed {
                folder: bind.source.clone(),
                chain_id: pulled.chain_id.clone(),
                path: bind.target.clone(),
            });
        }
        binds.push(bind);
    }
    Ok(binds)
}

/// A compose command: a list as is, a string split the way a shell would.
fn words(command: &Command) -> Result<Vec<String>, String> {
    match command {
        Command::Exec(args) => Ok(args.clone()),
        Command::Shell(text) => shell_words::split(text).map_err(|e| format!("{text:?}: {e}")),
    }
}

fn environment(environment: &Environment) -> Result<Vec<(String, String)>, String> {
    match environment {
        Environment::None => Ok(Vec::new()),
        Environment::List(items) => Ok(items
            .iter()
            .map(|item| {
                let (name, value) = item.split_once('=').unwrap_or((item, ""));
                (name.to_string(), value.to_string())
            })
            .collect()),
        Environment::Map(map) => map
            .iter()
            .map(|(name, value)| {
                let text = match value {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Bool(b)) => b.to_string(),
                    Some(Value::Number(n)) => n.to_string(),
                    Some(other) => {
                        return Err(format!("environment.{name}: {other:?} is not a scalar"));
                    }
                };
                Ok((name.clone(), text))
            })
            .collect(),
    }
}

/// `SOURCE:TARGET[:ro|rw]`: a named volume lives in the app's data folder.
fn volume_bind(spec: &str, app_folder: &AppFolder) -> Result<Bind, String> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (source, target, mode) = match parts.as_slice() {
        [source, target] => (*source, *target, "rw"),
        [source, target, mode] => (*source, *target, *mode),
        _ => return Err(format!("volume {spec:?}: must be SOURCE:TARGET[:ro|rw]")),
    };
    let source = if source.starts_with('/') {
        PathBuf::from(source)
    } else if let Some(relative) = source.strip_prefix("./") {
        app_folder.path().join(relative)
    } else {
        app_folder.data().join(source)
    };
    Ok(Bind {
        source,
        target: target.into(),
        read_only: mode == "ro",
    })
}

fn health_plan(service: &Service) -> Result<Option<HealthPlan>, String> {
    let Some(check) = &service.healthcheck else {
        return Ok(None);
    };
    let args = match &check.test {
        Command::Shell(text) => vec!["/bin/sh".into(), "-c".into(), text.clone()],
        Command::Exec(args) => match args.split_first() {
            Some((kind, rest)) if kind == "CMD" => rest.to_vec(),
            Some((kind, rest)) if kind == "CMD-SHELL" => {
                vec!["/bin/sh".into(), "-c".into(), rest.join(" ")]
            }
            _ => return Ok(None),
        },
    };
    // Compose's defaults.
    Ok(Some(HealthPlan {
        args,
        interval_ms: duration_ms(&check.interval, Duration::from_secs(30))?,
        timeout_ms: duration_ms(&check.timeout, Duration::from_secs(30))?,
        start_period_ms: duration_ms(&check.start_period, Duration::ZERO)?,
        start_interval_ms: duration_ms(&check.start_interval, Duration::from_secs(5))?,
        retries: check.retries.unwrap_or(3),
    }))
}

fn stop_signal(service: &Service, image_signal: &str) -> Result<i32, String> {
    let name = service
        .stop_signal
        .as_deref()
        .filter(|s| !s.is_empty())
        .or(Some(image_signal).filter(|s| !s.is_empty()))
        .unwrap_or("SIGTERM");
    let name = if name.starts_with("SIG") {
        name.to_string()
    } else {
        format!("SIG{name}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .map(|signal| signal as i32)
        .map_err(|_| format!("stop_signal {name:?} is not a signal"))
}

fn duration_ms(text: &Option<String>, default: Duration) -> Result<u64, String> {
    let duration = match text {
        Some(text) => humantime::parse_duration(text).map_err(|e| format!("{text:?}: {e}"))?,
        None => default,
    };
    Ok(duration.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::oci::ImageConfig;
    use std::path::Path;

    const APP: &str = r#"
services:
  web:
    image: reg/web:1
    command: sh -c "echo 'hi there'; exec httpd -f"
    environment: {DB: "db:3306", DEBUG: true}
    volumes: ["site:/www", "/etc/ssl:/etc/ssl:ro"]
    depends_on: {db: {condition: service_healthy}}
    stop_grace_period: 3s
  db:
    image: reg/db:1
    healthcheck:
      test: ["CMD-SHELL", "test -f /tmp/ready"]
      interval: 1s
      retries: 5
    stop_signal: SIGINT
volumes:
  site: {}
"#;

    fn pulled(name: &str) -> PulledImage {
        PulledImage {
            name: name.into(),
            digest: "sha256:abc".into(),
            config: ImageConfig {
                cmd: vec!["serve".into()],
                ..ImageConfig::default()
            },
            chain_id: "sha256:chain".into(),
        }
    }

    #[test]
    fn plan_follows_the_compose_file() {
        let compose = Compose::parse(APP).unwrap();
        let images = BTreeMap::from([
            ("reg/web:1".to_string(), pulled("reg/web:1")),
            ("reg/db:1".to_string(), pulled("reg/db:1")),
        ]);
        let app_folder = AppFolder::new(Path::new("/var/lib/appunit"), "blog");
        let folder = app_folder.path();
        let prepared = prepare("blog", &compose, &images, &BTreeMap::new(), &app_folder).unwrap();
        let order: Vec<&str> = prepared
            .plan
            .services
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(order, ["db", "web"]);
        let (db, web) = (&prepared.plan.services[0], &prepared.plan.services[1]);
        assert_eq!(db.container_id, "blog-db");
        assert!(prepared.plan.ports.is_empty(), "APP has no host ports");
        assert_eq!(db.stop_signal, 2);
        let health = db.health.as_ref().unwrap();
        assert_eq!(health.args, ["/bin/sh", "-c", "test -f /tmp/ready"]);
        assert_eq!(
            (health.interval_ms, health.retries, health.timeout_ms),
            (1000, 5, 30_000)
        );
        // Compose's defaults: no start period, checks every 5 s while one lasts.
        assert_eq!(
            (health.start_period_ms, health.start_interval_ms),
            (0, 5000)
        );
        assert_eq!(web.stop_grace_ms, 3000);
        assert_eq!(web.depends_on["db"], Condition::ServiceHealthy);
        assert_eq!(
            web.process.args().clone().unwrap(),
            ["sh", "-c", "echo 'hi there'; exec httpd -f"]
        );
        let env = web.process.env().clone().unwrap();
        assert!(env.contains(&"DB=db:3306".to_string()) && env.contains(&"DEBUG=true".to_string()));
        assert_eq!(prepared.folders, [folder.join("data/site")]);
        // Only the named volume starts with the image's content; a host folder is as is.
        assert_eq!(
            prepared.seeds,
            [VolumeSeed {
                folder: folder.join("data/site"),
                chain_id: "sha256:chain".into(),
                path: "/www".into(),
            }]
        );
        assert!(prepared.hosts.starts_with("127.0.0.1\tlocalhost db web\n"));
        let spec = serde_json::to_value(&prepared.containers[1].spec).unwrap();
        assert_eq!(
            spec["linux"]["cgroupsPath"],
            "appunit-blog.slice:appunit:blog-web"
        );
        let mounts = spec["mounts"].as_array().unwrap();
        assert!(
            mounts.iter().any(|m| m["destination"] == "/www"
                && m["source"] == "/var/lib/appunit/apps/blog/data/site")
        );
    }
}
