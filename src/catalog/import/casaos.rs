//! CasaOS's app store: `Apps/<Name>/docker-compose.yml` whose `x-casaos` block gives the
//! title, icon, main service, port map and architectures; icon.svg/icon.png beside it.

use super::normalize::{self, text};
use super::vars::Vars;
use super::{Draft, Refusal};
use crate::catalog::{AppMeta, Requirements};
use serde_yaml_ng::{Mapping, Value};
use std::path::Path;

/// Where CasaOS keeps each app's own files: they become the app's named volumes.
const APP_DATA: &str = "/DATA/AppData/";

pub fn draft(folder: &Path) -> Result<Draft, Refusal> {
    let (source, name) = super::names(folder)?;
    let compose_text = ["docker-compose.yml", "docker-compose.yaml"]
        .iter()
        .find_map(|f| std::fs::read_to_string(folder.join(f)).ok())
        .ok_or_else(|| Refusal::new("unreadable", "no docker-compose.yml"))?;
    let (mut doc, meta) = normalize::parse(&compose_text)?;
    let meta = meta.unwrap_or_default();
    let mut notes = Vec::new();
    normalize::leave_out_profiled(&mut doc, &mut notes);
    normalize::refuse_first(&doc)?;
    let architectures: Vec<String> = meta["architectures"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(text)
        .collect();
    if !architectures.is_empty() && !architectures.iter().any(|a| a == "amd64") {
        return Err(Refusal::new(
            "no-amd64",
            format!("architectures: {}", architectures.join(", ")),
        ));
    }

    // CasaOS fills these when it installs an app; the app id is appunit's.
    let mut vars = Vars::default();
    vars.set_app("AppID", "APP_NAME");
    vars.set_literal("PUID", "1000");
    vars.set_literal("PGID", "1000");
    vars.set_literal("TZ", "Etc/UTC");
    notes.push("CasaOS's $PUID/$PGID are 1000 and $TZ is Etc/UTC, as CasaOS's defaults".into());
    let mut value = Value::Mapping(doc);
    normalize::resolve(&mut value, &mut vars)?;
    let Value::Mapping(mut doc) = value else {
        unreachable!("a mapping stays one")
    };
    if !vars.missing.is_empty() {
        notes.push(format!(
            "variables without a value, empty as in Compose: {}",
            vars.missing.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    notes.extend(normalize::tidy(&mut doc));
    app_data_volumes(&mut doc, &mut notes)?;
    let memory_mb = reservations_to_requirements(&mut doc, &mut notes)?;
    normalize::declare_volumes(&mut doc);
    normalize::refuse_unsupported(&doc)?;

    let services = normalize::services(&mut doc)?;
    let main = meta["main"]
        .as_str()
        .filter(|m| services.contains_key(*m))
        .map(str::to_string)
        .or_else(|| services.keys().next().and_then(text))
        .ok_or_else(|| Refusal::new("unreadable", "no services"))?;
    let port_map = meta["port_map"]
        .as_str()
        .map(|p| vars.resolve(p).unwrap_or_default())
        .filter(|p| !p.is_empty());
    let on_host = |name: &str| {
        services
            .get(name)
            .and_then(|s| s.get("network_mode"))
            .and_then(Value::as_str)
            == Some("host")
    };
    // CasaOS opens port_map on the host: the service that publishes it serves the UI,
    // whichever `main` names.
    let main = match &port_map {
        Some(port) if !on_host(&main) && !publishes(&services[main.as_str()], port) => services
            .iter()
            .find(|(_, s)| publishes(s, port))
            .and_then(|(n, _)| text(n))
            .unwrap_or(main),
        _ => main,
    };
    let (web_port, http_port) = if on_host(&main) {
        // On the host's network it listens on port_map itself.
        let port = port_map
            .as_deref()
            .and_then(|p| p.parse::<u16>().ok())
            .filter(|p| *p > 0)
            .ok_or_else(|| {
                Refusal::new(
                    "no-port",
                    format!("main service {main} is on the host's network and x-casaos names no port_map: the app has no web entry"),
                )
            })?;
        (port, port)
    } else {
        let service = services
            .get_mut(main.as_str())
            .and_then(Value::as_mapping_mut)
            .expect("services checked");
        let published = port_map.clone().or_else(|| first_published(service));
        let web_port = published
            .as_deref()
            .and_then(|p| normalize::claim_web_port(service, p))
            .ok_or_else(|| {
                Refusal::new(
                    if published.is_none() {
                        "no-port"
                    } else {
                        "no-web-port"
                    },
                    format!(
                        "main service {main} publishes no port_map {}",
                        port_map.clone().unwrap_or_default()
                    ),
                )
            })?;
        let http_port = published
            .and_then(|p| p.parse().ok())
            .filter(|p| *p > 0)
            .unwrap_or(web_port);
        (web_port, http_port)
    };
    let service = &services[main.as_str()];
    let image = service.get("image").and_then(text).unwrap_or_default();

    let trademark = meta["title"]["en_US"]
        .as_str()
        .or_else(|| {
            meta["title"]
                .as_mapping()
                .and_then(|t| t.values().next())
                .and_then(Value::as_str)
        })
        .unwrap_or(&source)
        .to_string();
    let version = meta["version"]
        .as_str()
        .map(str::to_string)
        .or_else(|| {
            image
                .rsplit_once(':')
                .map(|(_, tag)| tag.to_string())
                .filter(|t| !t.contains('/'))
        })
        .unwrap_or_else(|| "latest".into());
    let admin_path = meta["index"]
        .as_str()
        .filter(|i| i.starts_with('/') && *i != "/")
        .unwrap_or_default()
        .to_string();
    let logo = ["icon.svg", "icon.png", "icon.jpg", "icon.webp"]
        .iter()
        .map(|f| folder.join(f))
        .find(|p| p.is_file());
    let logo_name = logo
        .as_ref()
        .and_then(|p| p.extension())
        .map_or("logo.svg".to_string(), |e| {
            format!("logo.{}", e.to_string_lossy())
        });
    let mut files = Vec::new();
    let mut empty_dirs = Vec::new();
    super::relative_binds(&doc, folder, &mut files, &mut empty_dirs)?;
    let meta = AppMeta {
        name,
        trademark,
        versions: vec![version],
        official: false,
        logo: logo_name,
        web_service: main,
        web_port,
        http_port,
        admin_path,
        user_name: String::new(),
        requirements: Requirements {
            cpu: 1,
            memory_mb: memory_mb.unwrap_or(256),
            disk_mb: 1024,
        },
    };
    Ok(Draft {
        meta,
        compose: doc,
        files,
        empty_dirs,
        logo,
        notes,
    })
}

/// The host port of a service's first TCP `ports` entry.
/// Whether a service publishes host port `port` (TCP).
fn publishes(service: &Value, port: &str) -> bool {
    service
        .get("ports")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .any(|spec| {
            let (body, proto) = spec.split_once('/').unwrap_or((spec, "tcp"));
            let parts: Vec<&str> = body.rsplitn(3, ':').collect();
            proto.eq_ignore_ascii_case("tcp") && parts.get(1) == Some(&port)
        })
}

fn first_published(service: &Mapping) -> Option<String> {
    service
        .get("ports")?
        .as_sequence()?
        .iter()
        .filter_map(Value::as_str)
        .find_map(|spec| {
            let (body, proto) = spec.split_once('/').unwrap_or((spec, "tcp"));
            let parts: Vec<&str> = body.rsplitn(3, ':').collect();
            (proto == "tcp" && parts.len() >= 2).then(|| parts[1].to_string())
        })
}

/// Binds under /DATA/AppData/<app>/ become named volumes in the app's data folder: that
/// tree is CasaOS's per-app storage, which appunit keeps in `data/`.
fn app_data_volumes(doc: &mut Mapping, notes: &mut Vec<String>) -> Result<(), Refusal> {
    let services = normalize::services(doc)?;
    let mut moved = Vec::new();
    for service in services.values_mut().filter_map(Value::as_mapping_mut) {
        let Some(volumes) = service.get_mut("volumes").and_then(Value::as_sequence_mut) else {
            continue;
        };
        for volume in volumes.iter_mut() {
            let Some(spec) = volume.as_str() else {
                continue;
            };
            let Some(rest) = spec.strip_prefix(APP_DATA) else {
                continue;
            };
            let (path, target) = rest.split_once(':').unwrap_or((rest, ""));
            let inner = path
                .split_once('/')
                .map_or("", |(_, inner)| inner)
                .trim_matches('/');
            let volume_name: String = if inner.is_empty() {
                "data".into()
            } else {
                inner
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect()
            };
            let volume_name = volume_name.trim_start_matches(['.', '-', '_']).to_string();
            let volume_name = if volume_name.is_empty() {
                "data".to_string()
            } else {
                volume_name
            };
            moved.push(volume_name.clone());
            *volume = Value::String(format!("{volume_name}:{target}"));
        }
    }
    if !moved.is_empty() {
        moved.sort();
        moved.dedup();
        notes.push(format!(
            "binds under {APP_DATA}<app> became named volumes: {}",
            moved.join(", ")
        ));
    }
    Ok(())
}

/// `deploy.resources.reservations.memory` is CasaOS's requirement: it becomes app.toml's
/// `memory_mb` (SPEC accepts reservations and does not enforce them).
fn reservations_to_requirements(
    doc: &mut Mapping,
    notes: &mut Vec<String>,
) -> Result<Option<u64>, Refusal> {
    let services = normalize::services(doc)?;
    let mut total: Option<u64> = None;
    for (name, service) in services.iter_mut() {
        let name = text(name).unwrap_or_default();
        let service = service.as_mapping_mut().expect("services checked");
        let Some(deploy) = service.get_mut("deploy").and_then(Value::as_mapping_mut) else {
            continue;
        };
        let Some(resources) = deploy.get_mut("resources").and_then(Value::as_mapping_mut) else {
            continue;
        };
        if let Some(reservations) = resources.remove("reservations") {
            if let Some(mb) = reservations
                .get("memory")
                .and_then(text)
                .and_then(|m| megabytes(&m))
            {
                *total.get_or_insert(0) += mb;
            }
            notes.push(format!(
                "{name}: deploy.resources.reservations became app.toml's requirements"
            ));
        }
        if resources.is_empty() {
            deploy.remove("resources");
        }
        if deploy.is_empty() {
            service.remove("deploy");
        }
    }
    Ok(total)
}

/// Compose's byte sizes ("256M", "1g", "512mb", plain bytes) in megabytes.
fn megabytes(text: &str) -> Option<u64> {
    let text = text.trim().to_ascii_lowercase();
    let text = text.trim_end_matches('b');
    let (number, unit) = text.split_at(
        text.find(|c: char| c.is_ascii_alphabetic())
            .unwrap_or(text.len()),
    );
    let number: f64 = number.trim().parse().ok()?;
    let bytes = number
        * match unit {
            "" => 1.0,
            "k" => 1024.0,
            "m" => 1024.0 * 1024.0,
            "g" => 1024.0 * 1024.0 * 1024.0,
            _ => return None,
        };
    Some(((bytes / (1024.0 * 1024.0)).ceil() as u64).max(1))
}
