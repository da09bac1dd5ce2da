//! What both sources share: a source compose file made into one appunit runs as Docker
//! Compose would. Variables are resolved (vars.rs), long port and volume forms are
//! written in the short form, the sources' plumbing that has no effect in a pod is left
//! out (and named), and keys outside SPEC's Compose table refuse the app.

use super::Refusal;
use super::vars::Vars;
use serde_yaml_ng::{Mapping, Value};

/// Service keys SPEC's Compose table gives a meaning ("Catalog format").
const SERVICE_KEYS: &[&str] = &[
    "image",
    "command",
    "entrypoint",
    "environment",
    "env_file",
    "user",
    "working_dir",
    "stop_signal",
    "stop_grace_period",
    "hostname",
    "domainname",
    "tty",
    "stdin_open",
    "labels",
    "init",
    "ports",
    "volumes",
    "tmpfs",
    "shm_size",
    "read_only",
    "ulimits",
    "sysctls",
    "extra_hosts",
    "dns",
    "dns_search",
    "depends_on",
    "healthcheck",
    "restart",
    "deploy",
    "mem_limit",
    "memswap_limit",
    "cpus",
    "cpu_shares",
    "pids_limit",
    "cap_add",
    "cap_drop",
    "security_opt",
    "container_name",
    "links",
    "networks",
    "network_mode",
    "expose",
    "logging",
    "platform",
    "pull_policy",
    "profiles",
    "privileged",
    "devices",
    "pid",
    "ipc",
    "cgroup_parent",
    "cgroup",
    "runtime",
    "configs",
    "cpu_percent",
    "attach",
];
const TOP_KEYS: &[&str] = &[
    "services", "volumes", "networks", "version", "name", "configs",
];
const DEPLOY_KEYS: &[&str] = &["resources", "restart_policy", "mode", "replicas"];

/// The first service whose `ports` publish a fixed TCP host port: its name, and that
/// host port as written.
pub fn first_fixed_port(doc: &Mapping) -> Option<(String, String)> {
    let services = doc.get("services")?.as_mapping()?;
    services.iter().find_map(|(name, service)| {
        let ports = service.get("ports")?.as_sequence()?;
        ports.iter().filter_map(Value::as_str).find_map(|spec| {
            let (body, proto) = spec.split_once('/').unwrap_or((spec, "tcp"));
            let parts: Vec<&str> = body.rsplitn(3, ':').collect();
            match parts.as_slice() {
                [container, host, ..]
                    if proto.eq_ignore_ascii_case("tcp")
                        && host.parse::<u16>().is_ok()
                        && container.parse::<u16>().is_ok() =>
                {
                    Some((text(name)?, host.to_string()))
                }
                _ => None,
            }
        })
    })
}

/// Whether any service publishes a port.
pub fn publishes_any(doc: &Mapping) -> bool {
    doc.get("services")
        .and_then(Value::as_mapping)
        .into_iter()
        .flatten()
        .any(|(_, s)| {
            s.get("ports")
                .and_then(Value::as_sequence)
                .is_some_and(|p| !p.is_empty())
        })
}

/// Refuses a service that only Docker can run: one built from a Dockerfile, or one that
/// drives Docker through its socket.
fn needs_no_docker(name: &str, service: &Mapping) -> Result<(), Refusal> {
    if service.contains_key("build") {
        return Err(Refusal::new(
            "build",
            format!("service {name} is built from a Dockerfile"),
        ));
    }
    if bind_sources(service).iter().any(|s| is_docker_socket(s)) {
        return Err(Refusal::new(
            "docker-socket",
            format!("service {name} drives Docker through its socket"),
        ));
    }
    Ok(())
}

/// The names of the services that some service depends on.
pub fn depended_on(services: &Mapping) -> Vec<String> {
    services
        .values()
        .filter_map(|s| s.get("depends_on"))
        .flat_map(|d| match d {
            Value::Sequence(items) => items.iter().filter_map(text).collect::<Vec<_>>(),
            Value::Mapping(m) => m.keys().filter_map(text).collect(),
            _ => Vec::new(),
        })
        .collect()
}

/// Refuses, before anything else is looked at, what makes an app one that needs Docker
/// (`build`, a Docker socket) or that Docker would not run either (a service with
/// neither image nor build): these are the reasons, whatever else the app has.
pub fn refuse_first(doc: &Mapping) -> Result<(), Refusal> {
    let services = doc.get("services").and_then(Value::as_mapping);
    for (name, service) in services.into_iter().flatten() {
        let name = text(name).unwrap_or_default();
        let Some(service) = service.as_mapping() else {
            return Err(Refusal::new(
                "no-image",
                format!("service {name} is empty: it has no image"),
            ));
        };
        needs_no_docker(&name, service)?;
        if service
            .get("image")
            .and_then(text)
            .is_none_or(|i| i.is_empty())
        {
            return Err(Refusal::new(
                "no-image",
                format!("service {name} has no image"),
            ));
        }
    }
    Ok(())
}

/// Leaves out services with `profiles` that no other service needs: Docker Compose
/// does not start them unless asked for their profile.
pub fn leave_out_profiled(doc: &mut Mapping, notes: &mut Vec<String>) {
    let Some(services) = doc.get_mut("services").and_then(Value::as_mapping_mut) else {
        return;
    };
    let needed = depended_on(services);
    let profiled: Vec<String> = services
        .iter()
        .filter(|(_, s)| s.get("profiles").is_some())
        .filter_map(|(n, _)| text(n))
        .filter(|n| !needed.contains(n))
        .collect();
    for name in profiled {
        services.remove(name.as_str());
        notes.push(format!(
            "{name} left out: it has `profiles`, so Docker Compose does not start it by default"
        ));
    }
}

/// Docker's socket, wherever a host mounts it.
pub fn is_docker_socket(source: &str) -> bool {
    source.ends_with("/docker.sock") || source.ends_with("/docker.sock/")
}

pub fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Parses a source compose file: YAML merge keys applied, `x-*` keys dropped. Also
/// returns the top-level `x-casaos` block, CasaOS's metadata.
pub fn parse(text: &str) -> Result<(Mapping, Option<Value>), Refusal> {
    let mut value: Value = serde_yaml_ng::from_str(text)
        .map_err(|e| Refusal::new("unreadable", format!("docker-compose.yml: {e}")))?;
    value
        .apply_merge()
        .map_err(|e| Refusal::new("unreadable", format!("docker-compose.yml: {e}")))?;
    let meta = value.get("x-casaos").cloned();
    strip_extensions(&mut value);
    match value {
        Value::Mapping(map) if map.get("services").is_some_and(Value::is_mapping) => {
            Ok((map, meta))
        }
        _ => Err(Refusal::new(
            "unreadable",
            "docker-compose.yml has no services",
        )),
    }
}

fn strip_extensions(value: &mut Value) {
    match value {
        Value::Mapping(map) => {
            map.retain(|k, _| !k.as_str().is_some_and(|k| k.starts_with("x-")));
            map.values_mut().for_each(strip_extensions);
        }
        Value::Sequence(items) => items.iter_mut().for_each(strip_extensions),
        _ => {}
    }
}

/// Resolves every string value (not keys) through `vars`.
pub fn resolve(value: &mut Value, vars: &mut Vars) -> Result<(), Refusal> {
    match value {
        Value::String(text) => {
            *text = vars.resolve(text).map_err(|e| Refusal::new("invalid", e))?;
        }
        Value::Mapping(map) => {
            for item in map.values_mut() {
                resolve(item, vars)?;
            }
        }
        Value::Sequence(items) => {
            for item in items {
                resolve(item, vars)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// The services, each a mapping (an empty service is refused as Compose refuses it).
pub fn services(doc: &mut Mapping) -> Result<&mut Mapping, Refusal> {
    let services = doc
        .get_mut("services")
        .and_then(Value::as_mapping_mut)
        .ok_or_else(|| Refusal::new("unreadable", "no services"))?;
    for (name, service) in services.iter() {
        if !service.is_mapping() {
            return Err(Refusal::new(
                "no-image",
                format!(
                    "service {} is empty: it has no image",
                    text(name).unwrap_or_default()
                ),
            ));
        }
    }
    Ok(services)
}

/// Refuses what cannot run without Docker (`build`, a Docker socket) and keys that SPEC's
/// table does not accept. Run on the services that will be emitted.
pub fn refuse_unsupported(doc: &Mapping) -> Result<(), Refusal> {
    let services = doc.get("services").and_then(Value::as_mapping);
    for (name, service) in services.into_iter().flatten() {
        let name = text(name).unwrap_or_default();
        let Some(service) = service.as_mapping() else {
            continue;
        };
        needs_no_docker(&name, service)?;
        for key in service.keys().filter_map(Value::as_str) {
            if !SERVICE_KEYS.contains(&key) {
                return Err(Refusal::unsupported(key, format!("service {name}")));
            }
        }
        if let Some(mode) = service.get("network_mode").and_then(Value::as_str)
            && mode != "host"
        {
            return Err(Refusal::unsupported(
                &format!("network_mode: {mode}"),
                format!("service {name}"),
            ));
        }
        for key in ["pid", "ipc"] {
            if let Some(mode) = service.get(key).and_then(Value::as_str)
                && mode != "host"
            {
                return Err(Refusal::unsupported(
                    &format!("{key}: {mode}"),
                    format!("service {name}"),
                ));
            }
        }
        if let Some(runtime) = service.get("runtime").and_then(text)
            && runtime != "runc"
        {
            return Err(if runtime.contains("nvidia") {
                Refusal::new(
                    "gpu-runtime",
                    format!(
                        "service {name} runs on the {runtime} runtime (a GPU): appunit runs containers with runc"
                    ),
                )
            } else {
                Refusal::unsupported(&format!("runtime: {runtime}"), format!("service {name}"))
            });
        }
        if let Some(mode) = service.get("cgroup").and_then(text)
            && mode != "host"
            && mode != "private"
        {
            return Err(Refusal::unsupported(
                &format!("cgroup: {mode}"),
                format!("service {name}"),
            ));
        }
        if let Some(deploy) = service.get("deploy").and_then(Value::as_mapping) {
            for key in deploy.keys().filter_map(Value::as_str) {
                if !DEPLOY_KEYS.contains(&key) {
                    return Err(Refusal::unsupported(
                        &format!("deploy.{key}"),
                        format!("service {name}"),
                    ));
                }
            }
            let resources = deploy.get("resources").and_then(Value::as_mapping);
            for (key, body) in resources.into_iter().flatten() {
                let key = text(key).unwrap_or_default();
                let Some(body) = body.as_mapping() else {
                    continue;
                };
                for sub in body.keys().filter_map(Value::as_str) {
                    let allowed = match key.as_str() {
                        "limits" => ["cpus", "memory", "pids"].contains(&sub),
                        "reservations" => ["cpus", "memory"].contains(&sub),
                        _ => false,
                    };
                    if !allowed {
                        return Err(Refusal::unsupported(
                            &format!("deploy.resources.{key}.{sub}"),
                            format!("service {name}"),
                        ));
                    }
                }
            }
        }
    }
    for key in doc.keys().filter_map(Value::as_str) {
        if !TOP_KEYS.contains(&key) {
            return Err(Refusal::unsupported(key, "top level".into()));
        }
    }
    Ok(())
}

/// Sources of a service's bind mounts (short and long syntax).
pub fn bind_sources(service: &Mapping) -> Vec<String> {
    let volumes = service.get("volumes").and_then(Value::as_sequence);
    volumes
        .into_iter()
        .flatten()
        .filter_map(|v| match v {
            Value::String(s) => s.split(':').next().map(str::to_string),
            Value::Mapping(m) => m.get("source").and_then(text),
            _ => None,
        })
        .collect()
}

/// Writes `ports`, `volumes`, commands and environment lists in the forms with one
/// spelling, and drops what has no effect in a pod. Returns what was left out.
pub fn tidy(doc: &mut Mapping) -> Vec<String> {
    let mut notes = Vec::new();
    for key in ["version", "name"] {
        if doc.remove(key).is_some() {
            notes.push(format!("top-level `{key}` left out: appunit names the app"));
        }
    }
    let mut kept_networks = false;
    if let Some(services) = doc.get_mut("services").and_then(Value::as_mapping_mut) {
        for (name, service) in services.iter_mut() {
            let name = text(name).unwrap_or_default();
            let Some(service) = service.as_mapping_mut() else {
                continue;
            };
            if service.remove("logging").is_some() {
                notes.push(format!(
                    "{name}: `logging` left out: output goes to the journal"
                ));
            }
            if service.remove("expose").is_some() {
                notes.push(format!(
                    "{name}: `expose` left out: a pod's ports are all open inside it"
                ));
            }
            if let Some(mode) = service.get("network_mode").and_then(Value::as_str)
                && (mode == "bridge" || mode == "default" || mode.starts_with("service:"))
            {
                notes.push(format!("{name}: `network_mode: {mode}` left out: the app's containers share one network namespace"));
                service.remove("network_mode");
            }
            match service.get("networks") {
                Some(networks) if !has_aliases(networks) => {
                    service.remove("networks");
                    notes.push(format!("{name}: `networks` left out: the app's containers share one network namespace"));
                }
                Some(_) => kept_networks = true,
                None => {}
            }
            if service.get("network_mode").and_then(Value::as_str) == Some("host")
                && service.remove("ports").is_some()
            {
                notes.push(format!(
                    "{name}: `ports` left out: on the host's network Docker discards them"
                ));
            }
            if let Some(ports) = service.get_mut("ports").and_then(Value::as_sequence_mut) {
                for port in ports.iter_mut() {
                    *port = short_port(port);
                }
            }
            if let Some(volumes) = service.get_mut("volumes").and_then(Value::as_sequence_mut) {
                for volume in volumes.iter_mut() {
                    if let Some(short) = short_volume(volume) {
                        *volume = short;
                    }
                    if let Some((kept, dropped)) = volume.as_str().and_then(known_options) {
                        notes.push(format!(
                            "{name}: volume option {dropped} left out: Docker ignores it"
                        ));
                        *volume = Value::String(kept);
                    }
                }
            }
            for key in ["command", "entrypoint", "environment", "dns", "extra_hosts"] {
                if let Some(items) = service.get_mut(key).and_then(Value::as_sequence_mut) {
                    for item in items.iter_mut() {
                        if let Some(s) = text(item) {
                            *item = Value::String(s);
                        }
                    }
                }
            }
            if let Some(Value::Mapping(env)) = service.get_mut("environment") {
                for value in env.values_mut() {
                    if let Some(s) = text(value) {
                        *value = Value::String(s);
                    }
                }
            }
        }
    }
    if !kept_networks && doc.remove("networks").is_some() {
        notes.push(
            "top-level `networks` left out: the app's containers share one network namespace"
                .into(),
        );
    }
    notes
}

/// A short volume whose options Docker does not know (`rwz`): it without them, and them.
fn known_options(spec: &str) -> Option<(String, String)> {
    const KNOWN: &[&str] = &[
        "ro",
        "rw",
        "z",
        "Z",
        "cached",
        "delegated",
        "consistent",
        "nocopy",
        "shared",
        "rshared",
        "slave",
        "rslave",
        "private",
        "rprivate",
    ];
    let parts: Vec<&str> = spec.split(':').collect();
    let [source, target, options] = parts.as_slice() else {
        return None;
    };
    let (known, unknown): (Vec<&str>, Vec<&str>) =
        options.split(',').partition(|o| KNOWN.contains(o));
    if unknown.is_empty() {
        return None;
    }
    let kept = if known.is_empty() {
        format!("{source}:{target}")
    } else {
        format!("{source}:{target}:{}", known.join(","))
    };
    Some((kept, unknown.join(",")))
}

fn has_aliases(networks: &Value) -> bool {
    networks
        .as_mapping()
        .is_some_and(|m| m.values().any(|n| n.get("aliases").is_some()))
}

/// A long-syntax port as `[ip:]published:target[/protocol]`.
fn short_port(port: &Value) -> Value {
    match port {
        Value::Mapping(m) => {
            let target = m.get("target").and_then(text).unwrap_or_default();
            let mut spec = match m.get("published").and_then(text).filter(|p| !p.is_empty()) {
                Some(published) => format!("{published}:{target}"),
                None => target,
            };
            if let Some(ip) = m.get("host_ip").and_then(text) {
                spec = format!("{ip}:{spec}");
            }
            match m.get("protocol").and_then(text) {
                Some(proto) if proto != "tcp" => format!("{spec}/{proto}").into(),
                _ => spec.into(),
            }
        }
        other => text(other)
            .map(Value::String)
            .unwrap_or_else(|| other.clone()),
    }
}

/// A long-syntax volume or bind with no options beyond `read_only` as `source:target[:ro]`.
fn short_volume(volume: &Value) -> Option<Value> {
    let m = volume.as_mapping()?;
    let kind = m.get("type").and_then(Value::as_str).unwrap_or("volume");
    let plain = m.keys().filter_map(Value::as_str).all(|k| {
        ["type", "source", "target", "read_only"].contains(&k)
            || (k == "bind"
                && m.get("bind")
                    .and_then(Value::as_mapping)
                    .is_some_and(|b| b.keys().all(|k| k.as_str() == Some("create_host_path"))))
    });
    if !(plain && (kind == "bind" || kind == "volume")) {
        return None;
    }
    let source = m.get("source").and_then(text)?;
    let target = m.get("target").and_then(text)?;
    let ro = m.get("read_only").and_then(Value::as_bool).unwrap_or(false);
    Some(Value::String(if ro {
        format!("{source}:{target}:ro")
    } else {
        format!("{source}:{target}")
    }))
}

/// Named volumes a service uses, declared at the top level when they are not (Compose
/// refuses an undeclared one; both sources' files are run with it declared).
pub fn declare_volumes(doc: &mut Mapping) {
    let mut used = Vec::new();
    if let Some(services) = doc.get("services").and_then(Value::as_mapping) {
        for service in services.values().filter_map(Value::as_mapping) {
            for volume in service
                .get("volumes")
                .and_then(Value::as_sequence)
                .into_iter()
                .flatten()
            {
                if let Some(source) = volume.as_str().and_then(|s| s.split(':').next())
                    && volume.as_str().is_some_and(|s| s.contains(':'))
                    && !source.starts_with(['/', '.', '~', '$'])
                {
                    used.push(source.to_string());
                }
            }
        }
    }
    if used.is_empty() {
        return;
    }
    let top = doc
        .entry("volumes".into())
        .or_insert_with(|| Value::Mapping(Mapping::new()));
    if !top.is_mapping() {
        *top = Value::Mapping(Mapping::new());
    }
    let top = top.as_mapping_mut().expect("made a mapping above");
    for name in used {
        top.entry(name.into())
            .or_insert(Value::Mapping(Mapping::new()));
    }
    // `name:` with nothing is how both sources declare a volume; appunit's form is `{}`.
    for value in top.values_mut() {
        if value.is_null() {
            *value = Value::Mapping(Mapping::new());
        }
    }
}

/// The container port a service publishes on host port text `published`, and rewrites
/// that entry to publish on `${APP_HTTP_PORT}`.
pub fn claim_web_port(service: &mut Mapping, published: &str) -> Option<u16> {
    let ports = service.get_mut("ports")?.as_sequence_mut()?;
    for port in ports.iter_mut() {
        let spec = port.as_str()?.to_string();
        let (body, proto) = spec
            .split_once('/')
            .map_or((spec.as_str(), ""), |(b, p)| (b, p));
        if proto == "udp" {
            continue;
        }
        let parts: Vec<&str> = body.rsplitn(3, ':').collect();
        if let [container, host, rest @ ..] = parts.as_slice()
            && *host == published
            && let Ok(container) = container.parse::<u16>()
        {
            let ip = rest.first().map(|ip| format!("{ip}:")).unwrap_or_default();
            *port = Value::String(format!("{ip}${{APP_HTTP_PORT}}:{container}"));
            return Some(container);
        }
    }
    None
}
