//! What an installed app runs: its containers (with their OCI specs) and the plan the
//! supervisor follows (start order, dependencies, health checks, how to stop). Derived
//! from the rendered compose file and the pulled images.

use super::{AppFolder, container_id, slice_name};
use crate::catalog::compose::{
    self, Compose, Condition, MountSource, NetworkMode, Restart, Service,
};
use crate::images::PulledImage;
use crate::runtime::net::{PortMapping, netns_path};
use crate::runtime::oci::{self, Accounts, Bind, DeviceNode, RunSettings, Security, Tmpfs};
use serde::{Deserialize, Serialize};
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
    /// What the supervisor does when the container exits.
    #[serde(default)]
    pub restart: Restart,
    /// The container's process (environment, working folder, user) as its runtime spec
    /// has it: health checks run with it, only their arguments differ. Kept as JSON:
    /// the supervisor only swaps the arguments, and reading oci-spec's typed Process
    /// would put a regex engine (its CPU-affinity check) in every app's supervisor.
    pub process: serde_json::Map<String, serde_json::Value>,
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
    /// `/etc/hosts` of the app: every name of the app is 127.0.0.1, as in a pod.
    pub hosts: String,
    /// Further files of the app folder (a service's own resolv.conf), with their text.
    pub files: Vec<(PathBuf, String)>,
    /// Folders the app's volumes need.
    pub folders: Vec<PathBuf>,
    /// Named volumes, which start with what the image has at their path (as Docker's).
    pub seeds: Vec<VolumeSeed>,
    /// Files and folders of the catalog folder that relative binds name: (from, to).
    pub copies: Vec<(PathBuf, PathBuf)>,
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
    host_gateway: std::net::Ipv4Addr,
) -> Result<Prepared, String> {
    // Checked here, where the app can end in error with the reason: in one network
    // namespace the second listener's bind would fail.
    if let Some((port, protocol, first, second)) = compose.port_collisions().into_iter().next() {
        return Err(format!(
            "services {first} and {second} both listen on {port}/{protocol}: they cannot share the app's network namespace"
        ));
    }
    let mut hosts = format!(
        "127.0.0.1\tlocalhost {}\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        compose.host_names().join(" ")
    );
    for service in compose.services.values() {
        for (name, ip) in &service.extra_hosts {
            let ip = if ip == compose::HOST_GATEWAY {
                host_gateway.to_string()
            } else {
                ip.clone()
            };
            hosts.push_str(&format!("{ip}\t{name}\n"));
        }
    }
    let mut prepared = Prepared {
        plan: AppPlan {
            app_id: app_id.to_string(),
            ports: Vec::new(),
            services: Vec::new(),
            secrets: Vec::new(),
        },
        containers: Vec::new(),
        hosts,
        files: Vec::new(),
        folders: Vec::new(),
        seeds: Vec::new(),
        copies: Vec::new(),
    };
    for name in compose.start_order()? {
        let service = &compose.services[name];
        let pulled = images
            .get(&service.image)
            .ok_or_else(|| format!("{name}: image {} was not pulled", service.image))?;
        let (binds, tmpfs) =
            service_mounts(name, service, compose, pulled, app_folder, &mut prepared)?;
        // On the host's network a service's ports are the host's: Docker discards
        // `ports` there, and so does the plan.
        let published = match service.network_mode {
            NetworkMode::Host => &[][..],
            NetworkMode::App => &service.ports[..],
        };
        for port in published {
            if let Some(host_port) = port.host {
                prepared.plan.ports.push(PortMapping {
                    host_ip: port.host_ip.clone(),
                    host_port,
                    container_port: port.container,
                    protocol: port.protocol.to_string(),
                });
            }
        }
        let run = RunSettings {
            hostname: service.hostname.clone().unwrap_or_else(|| name.to_string()),
            domainname: service.domainname.clone(),
            entrypoint: service.entrypoint.clone(),
            command: service.command.clone(),
            environment: service.environment.clone(),
            user: service.user.clone(),
            accounts: accounts.get(&service.image).cloned(),
            working_dir: service.working_dir.clone(),
            binds,
            tmpfs,
            read_only: service.read_only,
            ulimits: service
                .ulimits
                .iter()
                .map(|(kind, (soft, hard))| Ok((compose::rlimit_type(kind)?, *soft, *hard)))
                .collect::<Result<_, String>>()
                .map_err(|e| format!("{name}: {e}"))?,
            sysctls: service.sysctls.clone(),
            limits: service.limits(),
            netns: netns_path(app_id),
            host_network: service.network_mode == NetworkMode::Host,
            host_pid: service.pid,
            host_ipc: service.ipc,
            host_cgroup: service.cgroup,
            cgroups_path: format!(
                "{}:appunit:{}",
                slice_name(app_id),
                container_id(app_id, name)
            ),
            security: security(service).map_err(|e| format!("{name}: {e}"))?,
        };
        let spec = oci::runtime_spec(&pulled.config, &run).map_err(|e| format!("{name}: {e}"))?;
        let process = serde_json::to_value(spec.process().clone().unwrap_or_default());
        let Ok(serde_json::Value::Object(process)) = process else {
            return Err(format!(
                "{name}: the runtime spec's process is no JSON object"
            ));
        };
        prepared.plan.services.push(ServicePlan {
            name: name.to_string(),
            container_id: container_id(app_id, name),
            image: pulled.name.clone(),
            digest: pulled.digest.clone(),
            depends_on: service.depends_on.clone(),
            health: health_plan(service),
            stop_signal: stop_signal(service, &pulled.config.stop_signal)?,
            stop_grace_ms: ms(service.stop_grace_period, Duration::from_secs(10)),
            restart: service.restart,
            process,
        });
        prepared.containers.push(ContainerToCreate {
            id: container_id(app_id, name),
            image: pulled.name.clone(),
            chain_id: pulled.chain_id.clone(),
            spec,
        });
    }
    Ok(prepared)
}

/// What the service may change of the default confinement; its devices as the host has them.
fn security(service: &Service) -> Result<Security, String> {
    let capabilities = |names: &[String]| -> Result<(Vec<_>, bool), String> {
        let all = names.iter().any(|n| n == "ALL");
        let caps = names
            .iter()
            .filter(|n| *n != "ALL")
            .map(|n| compose::capability(n))
            .collect::<Result<_, _>>()?;
        Ok((caps, all))
    };
    let (cap_add, add_all) = capabilities(&service.cap_add)?;
    let (cap_drop, drop_all) = capabilities(&service.cap_drop)?;
    let devices = service
        .devices
        .iter()
        .map(|device| DeviceNode::of(&device.host, &device.container, &device.permissions))
        .collect::<Result<_, _>>()?;
    Ok(Security {
        cap_add,
        cap_drop,
        add_all_caps: add_all,
        drop_all_caps: drop_all,
        new_privileges: service.security_opt.no_new_privileges == Some(false),
        seccomp_unconfined: service.security_opt.seccomp_unconfined,
        apparmor: service.security_opt.apparmor.clone(),
        shm_size: service.shm_size,
        privileged: service.privileged,
        devices,
    })
}

/// The container's mounts: the app's /etc/hosts, a resolv.conf (the host's, its
/// upstream servers' on a systemd-resolved host, or the service's own `dns`), and the
/// service's volumes and tmpfs. What they need of the app folder goes to `prepared`.
fn service_mounts(
    name: &str,
    service: &Service,
    compose: &Compose,
    pulled: &PulledImage,
    app_folder: &AppFolder,
    prepared: &mut Prepared,
) -> Result<(Vec<Bind>, Vec<Tmpfs>), String> {
    let resolv = if service.dns.is_empty() && service.dns_search.is_empty() {
        oci::resolv_conf()
    } else {
        let file = app_folder.path().join(format!("resolv-{name}.conf"));
        let host = std::fs::read_to_string(oci::resolv_conf()).unwrap_or_default();
        prepared.files.push((
            file.clone(),
            resolv_text(&host, &service.dns, &service.dns_search),
        ));
        file
    };
    let mut binds = vec![
        Bind {
            source: app_folder.hosts_file(),
            target: "/etc/hosts".into(),
            read_only: true,
        },
        Bind {
            source: resolv,
            target: "/etc/resolv.conf".into(),
            read_only: true,
        },
    ];
    let mut tmpfs: Vec<Tmpfs> = service
        .tmpfs
        .iter()
        .map(|entry| {
            let (target, options) = entry.split_once(':').unwrap_or((entry, ""));
            Tmpfs {
                target: target.into(),
                options: options
                    .split(',')
                    .filter(|o| !o.is_empty())
                    .map(String::from)
                    .collect(),
            }
        })
        .collect();
    for (index, mount) in service.volumes.iter().enumerate() {
        let source = match &mount.source {
            MountSource::Tmpfs { size, mode } => {
                let mut options: Vec<String> = size.iter().map(|s| format!("size={s}")).collect();
                options.extend(mode.iter().map(|m| format!("mode={m:o}")));
                tmpfs.push(Tmpfs {
                    target: mount.target.clone(),
                    options,
                });
                continue;
            }
            MountSource::Named(volume) => app_folder.data().join(volume),
            MountSource::Anonymous => app_folder.data().join(format!("_{name}-{index}")),
            MountSource::AppData(inside) => app_folder.data().join(inside),
            MountSource::AppFolder(inside) => {
                let to = app_folder.path().join("files").join(inside);
                prepared
                    .copies
                    .push((compose.folder.join(inside), to.clone()));
                to
            }
            MountSource::Host(path) => path.clone(),
            MountSource::Text { name, text } => {
                let file = app_folder
                    .path()
                    .join(format!("config-{}", name.replace('/', "_")));
                if !prepared.files.iter().any(|(path, _)| *path == file) {
                    prepared.files.push((file.clone(), text.clone()));
                }
                file
            }
        };
        if matches!(
            mount.source,
            MountSource::Named(_) | MountSource::Anonymous | MountSource::AppData(_)
        ) {
            prepared.folders.push(source.clone());
        }
        if matches!(mount.source, MountSource::Named(_) | MountSource::Anonymous) {
            prepared.seeds.push(VolumeSeed {
                folder: source.clone(),
                chain_id: pulled.chain_id.clone(),
                path: mount.target.clone(),
            });
        }
        binds.push(Bind {
            source,
            target: mount.target.clone(),
            read_only: mount.read_only,
        });
    }
    Ok((binds, tmpfs))
}

/// A resolv.conf with the service's servers (else the host's) and search domains.
fn resolv_text(host: &str, dns: &[String], search: &[String]) -> String {
    let mut text = String::new();
    if dns.is_empty() {
        for line in host
            .lines()
            .filter(|l| l.trim_start().starts_with("nameserver"))
        {
            text.push_str(line.trim());
            text.push('\n');
        }
    }
    for server in dns {
        text.push_str(&format!("nameserver {server}\n"));
    }
    if !search.is_empty() {
        text.push_str(&format!("search {}\n", search.join(" ")));
    }
    text
}

fn health_plan(service: &Service) -> Option<HealthPlan> {
    let check = service.healthcheck.as_ref()?;
    // Compose's defaults.
    Some(HealthPlan {
        args: check.args()?.to_vec(),
        interval_ms: ms(check.interval, Duration::from_secs(30)),
        timeout_ms: ms(check.timeout, Duration::from_secs(30)),
        start_period_ms: ms(check.start_period, Duration::ZERO),
        start_interval_ms: ms(check.start_interval, Duration::from_secs(5)),
        retries: check.retries(),
    })
}

/// The service's stop signal, else the image's, else SIGTERM.
fn stop_signal(service: &Service, image_signal: &str) -> Result<i32, String> {
    match service.stop_signal {
        Some(signal) => Ok(signal),
        None if image_signal.is_empty() => Ok(nix::sys::signal::Signal::SIGTERM as i32),
        None => {
            compose::parse_signal(image_signal).map_err(|e| format!("the image's StopSignal: {e}"))
        }
    }
}

fn ms(duration: Option<Duration>, default: Duration) -> u64 {
    duration.unwrap_or(default).as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::oci::ImageConfig;
    use std::path::Path;

    const GATEWAY: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 89, 0, 1);

    const APP: &str = r#"
services:
  web:
    image: reg/web:1
    command: sh -c "echo 'hi there'; exec httpd -f"
    environment: {DB: "db:3306", DEBUG: true}
    volumes: ["site:/www", "/etc/ssl:/etc/ssl:ro", "./conf:/conf", "/cache", "${APP_DATA}/up:/up"]
    depends_on: {db: {condition: service_healthy}, init: {condition: service_completed_successfully}}
    stop_grace_period: 3s
    container_name: blog-web
    extra_hosts: ["gw:10.0.0.1", "host.docker.internal:host-gateway"]
    dns: [10.0.0.53]
    restart: always
    deploy: {resources: {limits: {memory: 64m}}}
  init:
    image: reg/db:1
    command: ["true"]
    restart: "no"
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
        let data = Path::new("/var/lib/appunit/apps/blog/data");
        let vars = |name: &str| (name == "APP_DATA").then(|| data.display().to_string());
        let context = crate::catalog::compose::Context {
            folder: Path::new("/catalog/blog"),
            variables: &vars,
            app_data: data,
        };
        let (compose, _) = Compose::read(APP, &context).unwrap();
        let images = BTreeMap::from([
            ("reg/web:1".to_string(), pulled("reg/web:1")),
            ("reg/db:1".to_string(), pulled("reg/db:1")),
        ]);
        let app_folder = AppFolder::new(Path::new("/var/lib/appunit"), "blog");
        let folder = app_folder.path();
        let prepared = prepare(
            "blog",
            &compose,
            &images,
            &BTreeMap::new(),
            &app_folder,
            GATEWAY,
        )
        .unwrap();
        let order: Vec<&str> = prepared
            .plan
            .services
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(order, ["db", "init", "web"]);
        let (db, web) = (&prepared.plan.services[0], &prepared.plan.services[2]);
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
        assert_eq!(web.restart, Restart::Always);
        assert_eq!(web.depends_on["db"], Condition::ServiceHealthy);
        assert_eq!(
            web.depends_on["init"],
            Condition::ServiceCompletedSuccessfully
        );
        assert_eq!(
            web.process["args"],
            serde_json::json!(["sh", "-c", "echo 'hi there'; exec httpd -f"])
        );
        let env = web.process["env"].as_array().unwrap();
        assert!(env.contains(&"DB=db:3306".into()) && env.contains(&"DEBUG=true".into()));
        assert_eq!(
            prepared.folders,
            [
                folder.join("data/site"),
                folder.join("data/_web-3"),
                folder.join("data/up")
            ]
        );
        // Named and anonymous volumes start with the image's content; a host folder is as is.
        assert_eq!(
            prepared.seeds,
            [
                VolumeSeed {
                    folder: folder.join("data/site"),
                    chain_id: "sha256:chain".into(),
                    path: "/www".into(),
                },
                VolumeSeed {
                    folder: folder.join("data/_web-3"),
                    chain_id: "sha256:chain".into(),
                    path: "/cache".into(),
                }
            ]
        );
        assert_eq!(
            prepared.copies,
            [(
                PathBuf::from("/catalog/blog/conf"),
                folder.join("files/conf")
            )]
        );
        assert!(
            prepared
                .hosts
                .starts_with("127.0.0.1\tlocalhost db init web blog-web\n"),
            "{}",
            prepared.hosts
        );
        assert!(
            prepared
                .hosts
                .ends_with("10.0.0.1\tgw\n10.89.0.1\thost.docker.internal\n")
        );
        let (resolv, text) = &prepared.files[0];
        assert_eq!(resolv, &folder.join("resolv-web.conf"));
        assert_eq!(text, "nameserver 10.0.0.53\n");
        let spec = serde_json::to_value(&prepared.containers[2].spec).unwrap();
        assert_eq!(
            spec["linux"]["cgroupsPath"],
            "appunit-blog.slice:appunit:blog-web"
        );
        assert_eq!(spec["linux"]["resources"]["memory"]["limit"], 64 << 20);
        let mounts = spec["mounts"].as_array().unwrap();
        assert!(
            mounts.iter().any(|m| m["destination"] == "/www"
                && m["source"] == "/var/lib/appunit/apps/blog/data/site")
        );
        assert!(mounts.iter().any(|m| m["destination"] == "/etc/resolv.conf"
            && m["source"] == "/var/lib/appunit/apps/blog/resolv-web.conf"));
    }

    #[test]
    fn two_listeners_on_one_port_are_named() {
        let context = crate::catalog::compose::Context {
            folder: Path::new("/x"),
            variables: &|_| None,
            app_data: Path::new("/x/data"),
        };
        let text = "services:\n  web:\n    image: a\n    ports: [\"8080:80\"]\n  admin:\n    image: a\n    ports: [\"8081:80\"]\n";
        let (compose, _) = Compose::read(text, &context).unwrap();
        let app_folder = AppFolder::new(Path::new("/var/lib/appunit"), "two");
        let images = BTreeMap::from([("a".to_string(), pulled("a"))]);
        let err = prepare(
            "two",
            &compose,
            &images,
            &BTreeMap::new(),
            &app_folder,
            GATEWAY,
        )
        .err()
        .unwrap();
        assert!(err.contains("admin and web both listen on 80/tcp"), "{err}");
    }
}
