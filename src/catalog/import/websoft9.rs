//! Websoft9's docker-library: `apps/<name>/` with docker-compose.yml, .env (W9_* variables
//! and the app's own environment), variables.json (trademark, editions and versions,
//! requirements) and src/ (files the compose file binds).

use super::normalize::{self, text};
use super::vars::Vars;
use super::{Draft, Refusal};
use crate::catalog::{AppMeta, Requirements};
use serde_yaml_ng::{Mapping, Value};
use std::path::Path;

/// W9 variables that become appunit's install-time ones (SPEC).
const APP_VARIABLES: [(&str, &str); 4] = [
    ("W9_ID", "APP_NAME"),
    ("W9_POWER_PASSWORD", "APP_PASSWORD"),
    ("W9_VERSION", "APP_VERSION"),
    ("W9_LOGIN_USER", "APP_USER"),
];

/// Images of Websoft9's helpers: they drive Docker through its socket on the app's behalf.
const HELPER_IMAGES: [&str; 3] = ["docker", "library/docker", "containrrr/watchtower"];

pub fn draft(folder: &Path) -> Result<Draft, Refusal> {
    let (source, name) = super::names(folder)?;
    let compose_text = ["docker-compose.yml", "docker-compose.yaml", "compose.yaml"]
        .iter()
        .find_map(|f| std::fs::read_to_string(folder.join(f)).ok())
        .ok_or_else(|| Refusal::new("unreadable", "no docker-compose.yml"))?;
    let env_text = std::fs::read_to_string(folder.join(".env")).unwrap_or_default();
    let variables: serde_json::Value = std::fs::read(folder.join("variables.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();

    // The .env's own values, for app.toml (ports, versions, paths, user).
    let mut raw = Vars::default();
    raw.load_dotenv(&env_text)
        .map_err(|e| Refusal::new("invalid", format!(".env: {e}")))?;
    let plain = |name: &str| raw.get(name).map(|v| v.replace("$$", "$"));

    let (mut doc, _) = normalize::parse(&compose_text)?;
    let mut notes = Vec::new();
    leave_out_helpers(&mut doc, &mut notes)?;
    normalize::leave_out_profiled(&mut doc, &mut notes);
    normalize::refuse_first(&doc)?;
    let port_variable = web_port_variable(&doc, &raw);
    let mut vars = Vars::default();
    if let Some(variable) = &port_variable {
        vars.set_app(variable, "APP_HTTP_PORT");
    }
    for (w9, app) in APP_VARIABLES {
        if raw.get(w9).is_some() {
            vars.set_app(w9, app);
        }
    }
    vars.load_dotenv(&env_text)
        .map_err(|e| Refusal::new("invalid", format!(".env: {e}")))?;

    let mut value = Value::Mapping(doc);
    normalize::resolve(&mut value, &mut vars)?;
    let Value::Mapping(mut doc) = value else {
        unreachable!("a mapping stays one")
    };
    inline_env_files(&mut doc, folder, &vars, &mut notes)?;
    if !vars.missing.is_empty() {
        notes.push(format!(
            "variables without a value, empty as in Compose: {}",
            vars.missing.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    home_binds(&mut doc, &mut notes);
    notes.extend(normalize::tidy(&mut doc));
    normalize::declare_volumes(&mut doc);
    normalize::refuse_unsupported(&doc)?;

    let plain_port = |name: &str| {
        plain(name)
            .and_then(|p| p.trim().parse::<u16>().ok())
            .filter(|p| *p > 0)
    };
    let (web_service, web_port, http_port) = match &port_variable {
        Some(variable) => {
            let (service, port) = web_entry(&doc).ok_or_else(|| {
                Refusal::new("no-web-port", format!("no service publishes ${variable}"))
            })?;
            (service, port, plain_port(variable).unwrap_or(9000))
        }
        None => fixed_web_entry(&mut doc, plain_port("W9_HTTP_PORT"), &mut notes)?,
    };
    let mut files = Vec::new();
    if folder.join("src").is_dir() {
        files.push((folder.join("src"), "src".into()));
    }
    let mut empty_dirs = Vec::new();
    super::relative_binds(&doc, folder, &mut files, &mut empty_dirs)?;

    let trademark = variables["trademark"]
        .as_str()
        .filter(|t| !t.is_empty())
        .unwrap_or(&source)
        .to_string();
    let admin_path = plain("W9_ADMIN_PATH")
        .filter(|p| p.starts_with('/'))
        .unwrap_or_default();
    let user_name = plain("W9_LOGIN_USER")
        .filter(|u| !u.contains('$'))
        .unwrap_or_default();
    let meta = AppMeta {
        name,
        trademark,
        versions: versions(&variables, plain("W9_DIST"), plain("W9_VERSION")),
        official: false,
        logo: "logo.svg".into(),
        web_service,
        web_port,
        http_port,
        admin_path,
        user_name,
        requirements: requirements(&variables["requirements"]),
    };
    Ok(Draft {
        meta,
        compose: doc,
        files,
        empty_dirs,
        logo: None,
        notes,
    })
}

/// The variable whose value is the web port's host port: W9_HTTP_PORT_SET, else the first
/// other W9_*_PORT_SET that a service publishes (an app with no web UI: its main port).
fn web_port_variable(doc: &Mapping, raw: &Vars) -> Option<String> {
    let text = serde_yaml_ng::to_string(doc).ok()?;
    let mut candidates = vec![
        "W9_HTTP_PORT_SET".to_string(),
        "W9_HTTPS_PORT_SET".to_string(),
    ];
    let mut rest: Vec<String> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("W9_") && w.ends_with("_PORT_SET"))
        .map(str::to_string)
        .collect();
    candidates.append(&mut rest);
    // Older apps publish another variable (often W9_HTTP_PORT) as the host port.
    candidates.extend(host_port_variables(doc));
    candidates
        .into_iter()
        .find(|v| raw.get(v).is_some() && text.contains(v.as_str()))
}

/// The web entry of an app whose ports name no variable: the first fixed TCP port
/// published (made `${APP_HTTP_PORT}`, its number the default), else a service on the
/// host's network that listens on W9_HTTP_PORT itself.
fn fixed_web_entry(
    doc: &mut Mapping,
    w9_http_port: Option<u16>,
    notes: &mut Vec<String>,
) -> Result<(String, u16, u16), Refusal> {
    if let Some((name, published)) = normalize::first_fixed_port(doc) {
        let services = normalize::services(doc)?;
        let service = services
            .get_mut(name.as_str())
            .and_then(Value::as_mapping_mut)
            .expect("services checked");
        if let Some(port) = normalize::claim_web_port(service, &published) {
            notes.push(format!(
                "{name}: its first fixed port {published} is the web port (published as ${{APP_HTTP_PORT}})"
            ));
            return Ok((name, port, published.parse().unwrap_or(port)));
        }
    }
    let services = normalize::services(doc)?;
    let on_host = services.iter().find_map(|(name, service)| {
        (service.get("network_mode").and_then(Value::as_str) == Some("host")).then(|| text(name))?
    });
    match (on_host, w9_http_port) {
        (Some(name), Some(port)) => Ok((name, port, port)),
        _ if normalize::publishes_any(doc) => Err(Refusal::new(
            "no-web-port",
            "no service publishes a TCP port",
        )),
        _ => Err(Refusal::new(
            "no-port",
            "no service publishes a port: the app has no web entry",
        )),
    }
}

/// `~` in a bind source: Websoft9 runs Compose as root, whose home is /root.
fn home_binds(doc: &mut Mapping, notes: &mut Vec<String>) {
    let Some(services) = doc.get_mut("services").and_then(Value::as_mapping_mut) else {
        return;
    };
    for (name, service) in services.iter_mut() {
        let Some(volumes) = service.get_mut("volumes").and_then(Value::as_sequence_mut) else {
            continue;
        };
        for volume in volumes.iter_mut() {
            if let Value::String(spec) = volume
                && let Some(rest) = spec.strip_prefix("~/")
            {
                notes.push(format!(
                    "{}: bind ~/{rest} is /root/{rest}: Websoft9 runs Compose as root",
                    text(name).unwrap_or_default()
                ));
                *spec = format!("/root/{rest}");
            }
        }
    }
}

/// Variables written as the host part of a `ports` entry, in file order.
fn host_port_variables(doc: &Mapping) -> Vec<String> {
    let services = doc.get("services").and_then(Value::as_mapping);
    services
        .into_iter()
        .flatten()
        .filter_map(|(_, s)| s.get("ports")?.as_sequence())
        .flatten()
        .filter_map(Value::as_str)
        .filter_map(|spec| {
            let body = spec.split('/').next()?;
            let host = body.rsplit(':').nth(1)?;
            // `$P`, `${P}`, `${P:-3002}`: the variable's name.
            let name = host.strip_prefix('$')?.trim_start_matches('{');
            let name = name.split([':', '-', '?', '}']).next().unwrap_or_default();
            (!name.is_empty()).then(|| name.to_string())
        })
        .collect()
}

/// Leaves out the services that are Websoft9's own helpers: a Docker CLI or watchtower
/// image with the Docker socket bound, that no other service waits for.
fn leave_out_helpers(doc: &mut Mapping, notes: &mut Vec<String>) -> Result<(), Refusal> {
    let services = normalize::services(doc)?;
    let depended = normalize::depended_on(services);
    let helpers: Vec<(String, String, String)> = services
        .iter()
        .filter_map(|(name, service)| {
            let name = text(name)?;
            let service = service.as_mapping()?;
            let image = service.get("image").and_then(text)?;
            let repository = image.rsplit_once(':').map_or(image.as_str(), |(r, _)| r);
            let repository = repository.trim_start_matches("docker.io/");
            let socket = normalize::bind_sources(service)
                .iter()
                .any(|s| normalize::is_docker_socket(s));
            let helper = socket && HELPER_IMAGES.contains(&repository) && !depended.contains(&name);
            let command = match service.get("command") {
                Some(Value::Sequence(items)) => {
                    items.iter().filter_map(text).collect::<Vec<_>>().join(" ")
                }
                Some(other) => text(other).unwrap_or_default(),
                None => String::new(),
            };
            helper.then_some((name, image, command))
        })
        .collect();
    for (name, image, command) in helpers {
        services.remove(name.as_str());
        let did = if image.contains("watchtower") {
            "updated the app's images and recreated its containers".to_string()
        } else {
            format!("ran `{command}` with the Docker CLI (docker exec into the app's containers)")
        };
        notes.push(format!(
            "left out Websoft9 helper `{name}` ({image}): through the Docker socket it {did}"
        ));
    }
    Ok(())
}

/// `env_file` entries written into `environment` (which wins, as in Compose): the files'
/// values interpolated as Compose does, appunit's variables kept as references.
fn inline_env_files(
    doc: &mut Mapping,
    folder: &Path,
    vars: &Vars,
    notes: &mut Vec<String>,
) -> Result<(), Refusal> {
    let services = normalize::services(doc)?;
    for (name, service) in services.iter_mut() {
        let name = text(name).unwrap_or_default();
        let service = service.as_mapping_mut().expect("services checked");
        let files: Vec<(String, bool)> = match service.remove("env_file") {
            None => continue,
            Some(Value::Sequence(items)) => items
                .iter()
                .filter_map(|i| match i {
                    Value::Mapping(m) => Some((
                        m.get("path").and_then(text)?,
                        m.get("required").and_then(Value::as_bool).unwrap_or(true),
                    )),
                    other => text(other).map(|p| (p, true)),
                })
                .collect(),
            Some(other) => text(&other).map(|p| vec![(p, true)]).unwrap_or_default(),
        };
        let mut environment = Mapping::new();
        for (file, required) in &files {
            let path = folder.join(file.replace("$$", "$"));
            let content = match std::fs::read_to_string(&path) {
                Ok(content) => content,
                Err(_) if !required => continue,
                Err(e) => {
                    return Err(Refusal::new(
                        "invalid",
                        format!("{name}: env_file {file}: {e}"),
                    ));
                }
            };
            let mut scope = vars.clone();
            let names = scope
                .load_dotenv(&content)
                .map_err(|e| Refusal::new("invalid", format!("{name}: env_file {file}: {e}")))?;
            for variable in names {
                let value = scope.get(&variable).unwrap_or_default().to_string();
                environment.insert(variable.into(), value.into());
            }
        }
        match service.remove("environment") {
            Some(Value::Mapping(own)) => {
                for (key, value) in own {
                    let value = match value {
                        Value::Null => key
                            .as_str()
                            .and_then(|k| vars.get(k))
                            .map(|v| Value::String(v.to_string())),
                        other => Some(other),
                    };
                    if let Some(value) = value {
                        environment.insert(key, value);
                    }
                }
            }
            Some(Value::Sequence(items)) => {
                for item in items.iter().filter_map(text) {
                    match item.split_once('=') {
                        Some((key, value)) => {
                            environment.insert(key.into(), value.into());
                        }
                        None => {
                            if let Some(value) = vars.get(&item) {
                                environment.insert(item.into(), value.into());
                            }
                        }
                    }
                }
            }
            _ => {}
        }
        service.insert("environment".into(), Value::Mapping(environment));
        let list: Vec<&str> = files.iter().map(|(f, _)| f.as_str()).collect();
        notes.push(format!(
            "{name}: env_file {} written into `environment`",
            list.join(", ")
        ));
    }
    Ok(())
}

/// The service that publishes `${APP_HTTP_PORT}`, and the container port it maps to.
fn web_entry(doc: &Mapping) -> Option<(String, u16)> {
    let services = doc.get("services")?.as_mapping()?;
    services.iter().find_map(|(name, service)| {
        let ports = service.get("ports")?.as_sequence()?;
        ports.iter().filter_map(Value::as_str).find_map(|spec| {
            let rest = spec.split_once("${APP_HTTP_PORT}:")?.1;
            let port = rest.split('/').next()?.parse().ok()?;
            Some((text(name)?, port))
        })
    })
}

/// Versions of the edition the .env picks (W9_DIST), its W9_VERSION first.
fn versions(
    variables: &serde_json::Value,
    dist: Option<String>,
    current: Option<String>,
) -> Vec<String> {
    let editions = variables["edition"].as_array().cloned().unwrap_or_default();
    let edition = editions
        .iter()
        .find(|e| {
            dist.as_deref()
                .is_some_and(|d| e["dist"].as_str() == Some(d))
        })
        .or(editions.first());
    let mut versions: Vec<String> = current.into_iter().filter(|v| !v.is_empty()).collect();
    for version in edition
        .and_then(|e| e["version"].as_array())
        .into_iter()
        .flatten()
    {
        let version = match version {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if !version.is_empty() && !versions.contains(&version) {
            versions.push(version);
        }
    }
    if versions.is_empty() {
        versions.push("latest".into());
    }
    versions
}

/// variables.json gives cores and gigabytes, as strings or numbers.
fn requirements(json: &serde_json::Value) -> Requirements {
    let number = |key: &str| {
        match &json[key] {
            serde_json::Value::String(s) => s.trim().parse::<f64>().ok(),
            serde_json::Value::Number(n) => n.as_f64(),
            _ => None,
        }
        .filter(|n| *n > 0.0)
    };
    Requirements {
        cpu: number("cpu").map_or(1, |c| c.ceil() as u32),
        memory_mb: number("memory").map_or(512, |g| (g * 1024.0) as u64),
        disk_mb: number("disk").map_or(1024, |g| (g * 1024.0) as u64),
    }
}
