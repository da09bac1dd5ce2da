//! The Compose-specification subset that catalog apps may use. Parsing rejects any key
//! outside it (naming the key); `validate` checks what types alone cannot.

use super::interpolate::interpolate;
use serde::{Deserialize, Deserializer};
use serde_yaml_ng::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The variables appunit fills into a compose file at install time (SPEC).
pub const VARIABLES: [&str; 6] = [
    "APP_NAME",
    "APP_VERSION",
    "APP_HTTP_PORT",
    "APP_USER",
    "APP_PASSWORD",
    "APP_DATA",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compose {
    pub services: BTreeMap<String, Service>,
    #[serde(default)]
    pub volumes: BTreeMap<String, Option<NamedVolume>>,
}

/// Named volumes take no options: they are folders under the app's data folder.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedVolume {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub image: String,
    pub command: Option<Command>,
    pub entrypoint: Option<Command>,
    #[serde(default)]
    pub environment: Environment,
    #[serde(default)]
    pub ports: Vec<String>,
    #[serde(default)]
    pub volumes: Vec<String>,
    #[serde(default)]
    pub depends_on: DependsOn,
    pub healthcheck: Option<Healthcheck>,
    pub user: Option<String>,
    pub working_dir: Option<String>,
    pub stop_signal: Option<String>,
    pub stop_grace_period: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Command {
    Shell(String),
    Exec(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
pub enum Environment {
    #[default]
    None,
    Map(BTreeMap<String, Option<Value>>),
    List(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Healthcheck {
    pub test: Command,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub retries: Option<u32>,
    pub start_period: Option<String>,
    pub start_interval: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    ServiceStarted,
    ServiceHealthy,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Dependency {
    condition: Condition,
}

/// `depends_on`, either as a list of names or as a map with a condition each.
#[derive(Debug, Default)]
pub struct DependsOn(pub BTreeMap<String, Condition>);

impl<'de> Deserialize<'de> for DependsOn {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match Value::deserialize(deserializer)? {
            Value::Sequence(names) => names
                .into_iter()
                .map(|name| match name {
                    Value::String(name) => Ok((name, Condition::ServiceStarted)),
                    other => Err(D::Error::custom(format!(
                        "a service name must be a string, not {other:?}"
                    ))),
                })
                .collect::<Result<_, _>>()
                .map(DependsOn),
            Value::Mapping(entries) => entries
                .into_iter()
                .map(|(name, body)| {
                    let name = name
                        .as_str()
                        .ok_or_else(|| D::Error::custom("a service name must be a string"))?
                        .to_string();
                    let dependency: Dependency = serde_yaml_ng::from_value(body)
                        .map_err(|e| D::Error::custom(format!("{name}: {e}")))?;
                    Ok((name, dependency.condition))
                })
                .collect::<Result<_, _>>()
                .map(DependsOn),
            _ => Err(D::Error::custom("expected a list or a map of services")),
        }
    }
}

impl Compose {
    /// Parses compose text: `x-*` extension keys are dropped anywhere, as Compose does,
    /// and any other unknown key is an error that names its path.
    pub fn parse(text: &str) -> Result<Compose, String> {
        let mut value: Value = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
        strip_extensions(&mut value);
        from_value(value)
    }

    /// Parses compose text with every `${VAR}` filled from `lookup`. Also returns the
    /// filled-in document, which is what the app's folder keeps as its compose.yaml.
    pub fn render(
        text: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(Compose, String), String> {
        let mut value: Value = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
        strip_extensions(&mut value);
        fill_variables(&mut value, lookup)?;
        let rendered = serde_yaml_ng::to_string(&value).map_err(|e| e.to_string())?;
        Ok((from_value(value)?, rendered))
    }

    /// Checks references, formats and variables; `web_service` must publish `web_port`.
    pub fn validate(&self, web_service: &str, web_port: u16) -> Result<(), String> {
        if self.services.is_empty() {
            return Err("key `services`: at least one service is needed".into());
        }
        let web = self.services.get(web_service).ok_or_else(|| {
            format!("web_service {web_service:?} is not a service of the compose file")
        })?;
        for (name, service) in &self.services {
            service
                .validate(self)
                .map_err(|e| format!("key `services.{name}.{e}"))?;
        }
        if !web.published_container_ports().contains(&web_port) {
            return Err(format!(
                "key `services.{web_service}.ports`: web_port {web_port} is not published"
            ));
        }
        self.start_order().map(|_| ())
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
                            .0
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
}

impl Service {
    /// Validates one service; errors start with the key (the caller prefixes the path).
    fn validate(&self, compose: &Compose) -> Result<(), String> {
        if self.image.is_empty() || self.image.contains(char::is_whitespace) {
            return Err(format!(
                "image`: {:?} is not an image reference",
                self.image
            ));
        }
        for (key, text) in self.texts() {
            check_variables(text).map_err(|e| format!("{key}`: {e}"))?;
        }
        for port in &self.ports {
            parse_port(&sample(port)).map_err(|e| format!("ports`: {port:?}: {e}"))?;
        }
        for volume in &self.volumes {
            check_volume(volume, compose).map_err(|e| format!("volumes`: {volume:?}: {e}"))?;
        }
        for dependency in self.depends_on.0.keys() {
            if !compose.services.contains_key(dependency) {
                return Err(format!("depends_on`: no service {dependency:?}"));
            }
        }
        if let Some(check) = &self.healthcheck {
            let test_ok = match &check.test {
                Command::Shell(text) => !text.is_empty(),
                Command::Exec(args) => match args.first().map(String::as_str) {
                    Some("CMD") | Some("CMD-SHELL") => args.len() > 1,
                    Some("NONE") => args.len() == 1,
                    _ => false,
                },
            };
            if !test_ok {
                return Err("healthcheck.test`: must be a string, or a list starting with CMD, CMD-SHELL or NONE".into());
            }
            for (key, duration) in [
                ("interval", &check.interval),
                ("timeout", &check.timeout),
                ("start_period", &check.start_period),
                ("start_interval", &check.start_interval),
            ] {
                check_duration(duration).map_err(|e| format!("healthcheck.{key}`: {e}"))?;
            }
        }
        check_duration(&self.stop_grace_period).map_err(|e| format!("stop_grace_period`: {e}"))?;
        if let Some(signal) = &self.stop_signal {
            let name = if signal.starts_with("SIG") {
                signal.clone()
            } else {
                format!("SIG{signal}")
            };
            name.parse::<nix::sys::signal::Signal>()
                .map_err(|_| format!("stop_signal`: {signal:?} is not a signal"))?;
        }
        Ok(())
    }

    /// Every string of the service, with its key, for variable checks.
    fn texts(&self) -> Vec<(String, &str)> {
        let mut texts = vec![("image".to_string(), self.image.as_str())];
        for (key, command) in [("command", &self.command), ("entrypoint", &self.entrypoint)] {
            match command {
                Some(Command::Shell(text)) => texts.push((key.into(), text)),
                Some(Command::Exec(args)) => {
                    texts.extend(args.iter().map(|a| (key.to_string(), a.as_str())))
                }
                None => {}
            }
        }
        match &self.environment {
            Environment::Map(map) => {
                for (name, value) in map {
                    if let Some(Value::String(text)) = value {
                        texts.push((format!("environment.{name}"), text));
                    }
                }
            }
            Environment::List(items) => texts.extend(
                items
                    .iter()
                    .map(|i| ("environment".to_string(), i.as_str())),
            ),
            Environment::None => {}
        }
        texts.extend(self.ports.iter().map(|p| ("ports".to_string(), p.as_str())));
        texts.extend(
            self.volumes
                .iter()
                .map(|v| ("volumes".to_string(), v.as_str())),
        );
        for (key, text) in [("user", &self.user), ("working_dir", &self.working_dir)] {
            if let Some(text) = text {
                texts.push((key.into(), text));
            }
        }
        texts
    }

    /// Container ports this service publishes on the host.
    pub fn published_container_ports(&self) -> Vec<u16> {
        self.ports
            .iter()
            .filter_map(|p| parse_port(&sample(p)).ok())
            .map(|port| port.container)
            .collect()
    }

    /// The `ports` of a rendered service (its variables filled in).
    pub fn port_specs(&self) -> Result<Vec<PortSpec>, String> {
        self.ports
            .iter()
            .map(|p| parse_port(p).map_err(|e| format!("ports: {p:?}: {e}")))
            .collect()
    }
}

fn check_variables(text: &str) -> Result<(), String> {
    interpolate(text, &|name| VARIABLES.contains(&name).then(String::new))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Fills every variable with a placeholder that keeps ports and paths well-formed.
fn sample(text: &str) -> String {
    interpolate(text, &|name| {
        Some(match name {
            "APP_HTTP_PORT" => "1".into(),
            "APP_DATA" => "/data".into(),
            _ => "x".into(),
        })
    })
    .unwrap_or_default()
}

/// A `ports` entry: `[ip:]host:container[/proto]` or `container[/proto]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    /// The host address it is published on; "" for all of them.
    pub host_ip: String,
    pub host: Option<u16>,
    pub container: u16,
    pub protocol: &'static str,
}

fn parse_port(spec: &str) -> Result<PortSpec, String> {
    let (ports, proto) = spec.split_once('/').unwrap_or((spec, "tcp"));
    let protocol = match proto {
        "tcp" => "tcp",
        "udp" => "udp",
        other => return Err(format!("protocol {other:?} is neither tcp nor udp")),
    };
    let number = |text: &str| {
        text.parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("{text:?} is not a port number"))
    };
    let parts: Vec<&str> = ports.rsplitn(3, ':').collect();
    let (host_ip, host, container) = match parts.as_slice() {
        [container] => ("", None, number(container)?),
        [container, host] => ("", Some(number(host)?), number(container)?),
        [container, host, ip] => (*ip, Some(number(host)?), number(container)?),
        _ => return Err("empty".into()),
    };
    let host_ip = host_ip.trim_start_matches('[').trim_end_matches(']');
    if !host_ip.is_empty() && host_ip.parse::<std::net::IpAddr>().is_err() {
        return Err(format!("{host_ip:?} is not an IP address"));
    }
    Ok(PortSpec {
        host_ip: host_ip.to_string(),
        host,
        container,
        protocol,
    })
}

fn check_volume(spec: &str, compose: &Compose) -> Result<(), String> {
    let spec = sample(spec);
    let parts: Vec<&str> = spec.split(':').collect();
    let (source, target, mode) = match parts.as_slice() {
        [source, target] => (*source, *target, "rw"),
        [source, target, mode] => (*source, *target, *mode),
        _ => return Err("must be SOURCE:TARGET[:ro|rw]".into()),
    };
    if !Path::new(target).is_absolute() {
        return Err(format!("target {target:?} is not an absolute path"));
    }
    if mode != "ro" && mode != "rw" {
        return Err(format!("mode {mode:?} is neither ro nor rw"));
    }
    let declared = compose.volumes.contains_key(source);
    if !(source.starts_with('/') || source.starts_with("./") || declared) {
        return Err(format!(
            "named volume {source:?} is not declared under the top-level `volumes`"
        ));
    }
    Ok(())
}

fn check_duration(duration: &Option<String>) -> Result<(), String> {
    match duration {
        Some(text) => humantime::parse_duration(text)
            .map(|_| ())
            .map_err(|e| format!("{text:?}: {e}")),
        None => Ok(()),
    }
}

fn from_value(value: Value) -> Result<Compose, String> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        format!("key `{path}`: {}", e.into_inner())
    })
}

fn fill_variables(
    value: &mut Value,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), String> {
    match value {
        Value::String(text) => {
            *text = interpolate(text, lookup).map_err(|e| e.to_string())?;
        }
        Value::Mapping(map) => {
            for item in map.values_mut() {
                fill_variables(item, lookup)?;
            }
        }
        Value::Sequence(items) => {
            for item in items {
                fill_variables(item, lookup)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_SERVICES: &str = r#"
x-note: ignored
services:
  web:
    image: docker.io/library/wordpress:${APP_VERSION}
    ports: ["${APP_HTTP_PORT}:80"]
    environment:
      DB_HOST: db:3306
      DB_PASSWORD: ${APP_PASSWORD}
    depends_on:
      db: {condition: service_healthy}
    volumes: ["site:/var/www/html"]
    stop_grace_period: 1m30s
  db:
    image: docker.io/library/mysql:8.4
    x-comment: also ignored
    healthcheck:
      test: ["CMD", "mysqladmin", "ping"]
      interval: 10s
      retries: 5
    stop_signal: SIGINT
volumes:
  site: {}
"#;

    #[test]
    fn valid_file_parses_and_orders_dependencies() {
        let compose = Compose::parse(TWO_SERVICES).unwrap();
        compose.validate("web", 80).unwrap();
        assert_eq!(compose.start_order().unwrap(), ["db", "web"]);
        assert_eq!(
            compose.services["web"].depends_on.0["db"],
            Condition::ServiceHealthy
        );
    }

    #[test]
    fn unknown_service_key_is_named_with_its_path() {
        let text = TWO_SERVICES.replace("    stop_signal: SIGINT", "    restart: always");
        let err = Compose::parse(&text).unwrap_err();
        assert!(
            err.contains("services.db") && err.contains("restart"),
            "{err}"
        );
    }

    #[test]
    fn unknown_top_level_key_is_named() {
        let err = Compose::parse(&format!("{TWO_SERVICES}networks: {{}}\n")).unwrap_err();
        assert!(err.contains("networks"), "{err}");
    }

    #[test]
    fn semantic_errors() {
        let cases = [
            ("${APP_VERSION}", "${NOT_A_VAR}", "NOT_A_VAR"),
            (
                "db: {condition: service_healthy}",
                "cache: {condition: service_healthy}",
                "cache",
            ),
            (
                "site:/var/www/html",
                "undeclared:/var/www/html",
                "undeclared",
            ),
            ("1m30s", "soon", "stop_grace_period"),
            ("SIGINT", "SIGNOPE", "stop_signal"),
            (
                "${APP_HTTP_PORT}:80",
                "${APP_HTTP_PORT}:8080",
                "web_port 80",
            ),
        ];
        for (from, to, named) in cases {
            let compose = Compose::parse(&TWO_SERVICES.replace(from, to)).unwrap();
            let err = compose.validate("web", 80).unwrap_err();
            assert!(err.contains(named), "{to}: {err}");
        }
    }

    #[test]
    fn dependency_cycle_is_rejected() {
        let text = TWO_SERVICES.replace("    stop_signal: SIGINT", "    depends_on: [web]");
        let err = Compose::parse(&text)
            .unwrap()
            .validate("web", 80)
            .unwrap_err();
        assert!(err.contains("cycle"), "{err}");
    }

    #[test]
    fn render_fills_every_string() {
        let vars = |name: &str| match name {
            "APP_VERSION" => Some("6.8".to_string()),
            "APP_HTTP_PORT" => Some("9001".to_string()),
            "APP_PASSWORD" => Some("s3cret".to_string()),
            _ => None,
        };
        let (compose, text) = Compose::render(TWO_SERVICES, &vars).unwrap();
        assert_eq!(
            compose.services["web"].image,
            "docker.io/library/wordpress:6.8"
        );
        assert_eq!(compose.services["web"].ports, ["9001:80"]);
        assert!(text.contains("s3cret") && !text.contains("${"), "{text}");
        assert!(Compose::render(TWO_SERVICES, &|_| None).is_err());
    }

    #[test]
    fn port_forms() {
        let spec = |host_ip: &str, host, container, protocol| {
            Ok(PortSpec {
                host_ip: host_ip.to_string(),
                host,
                container,
                protocol,
            })
        };
        assert_eq!(parse_port("8080:80"), spec("", Some(8080), 80, "tcp"));
        assert_eq!(
            parse_port("127.0.0.1:8080:80/tcp"),
            spec("127.0.0.1", Some(8080), 80, "tcp")
        );
        assert_eq!(
            parse_port("[::1]:8080:80"),
            spec("::1", Some(8080), 80, "tcp")
        );
        assert_eq!(parse_port("53/udp"), spec("", None, 53, "udp"));
        assert!(parse_port("80/sctp").is_err());
        assert!(parse_port("localhost:8080:80").is_err());
        assert!(parse_port("0:80").is_err());
    }
}
