//! Property tests of what reads catalog files: the compose parser and the catalog loader
//! take arbitrary YAML, arbitrary text and arbitrary bytes, and answer with errors, never
//! a panic. Catalogs come from third parties, and the daemon loads them at every start.

use appunit::catalog::Catalog;
use appunit::catalog::compose::{Compose, Context};
use proptest::prelude::*;
use serde_yaml_ng::{Mapping, Value};

/// Strings that mean something to Compose or to the loader, beside arbitrary ones.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("80".to_string()),
        Just("8080:80".to_string()),
        Just("${APP_HTTP_PORT}:80".to_string()),
        Just("127.0.0.1:9000:9000/udp".to_string()),
        Just("65536:0".to_string()),
        Just("1-3:4-6".to_string()),
        Just("data:/var/lib/data".to_string()),
        Just("./conf:/etc/conf:ro".to_string()),
        Just("1m30s".to_string()),
        Just("999999999999h".to_string()),
        Just("service_healthy".to_string()),
        Just("CMD-SHELL".to_string()),
        Just("${".to_string()),
        Just("${APP_ID:-x}$${y}".to_string()),
        Just("web".to_string()),
        Just("db".to_string()),
        "\\PC{0,24}",
        ".{0,40}",
    ]
}

/// Keys of a compose file at any level, and some that are not.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "services", "volumes", "image", "command", "entrypoint", "environment",
            "ports", "depends_on", "healthcheck", "user", "working_dir", "stop_signal",
            "stop_grace_period", "test", "interval", "timeout", "retries", "start_period",
            "start_interval", "disable", "condition", "web", "db", "x-extra", "restart",
        ])
        .prop_map(str::to_string),
        1 => text(),
    ]
}

fn yaml() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| Value::Number(n.into())),
        any::<u64>().prop_map(|n| Value::Number(n.into())),
        any::<f64>().prop_map(|n| Value::Number(n.into())),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 96, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Sequence),
            prop::collection::vec((key(), inner), 0..6).prop_map(|pairs| {
                Value::Mapping(
                    pairs
                        .into_iter()
                        .map(|(k, v)| (Value::String(k), v))
                        .collect(),
                )
            }),
        ]
    })
}

/// A document shaped like a compose file (services of keyed values), so that the
/// parser's deeper paths run, not only its first type check.
fn compose_like() -> impl Strategy<Value = String> {
    let service = prop::collection::vec((key(), yaml()), 0..8);
    let services = prop::collection::vec((key(), service), 1..4);
    (services, prop::option::of(yaml())).prop_map(|(services, volumes)| {
        let mut root = Mapping::new();
        let services: Mapping = services
            .into_iter()
            .map(|(name, keys)| {
                let keys: Mapping = keys
                    .into_iter()
                    .map(|(k, v)| (Value::String(k), v))
                    .collect();
                (Value::String(name), Value::Mapping(keys))
            })
            .collect();
        root.insert("services".into(), Value::Mapping(services));
        if let Some(volumes) = volumes {
            root.insert("volumes".into(), volumes);
        }
        serde_yaml_ng::to_string(&Value::Mapping(root)).unwrap()
    })
}

/// Any YAML text, well-formed or not.
fn compose_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => compose_like(),
        2 => yaml().prop_map(|value| serde_yaml_ng::to_string(&value).unwrap()),
        1 => ".{0,200}",
        1 => prop::collection::vec(any::<u8>(), 0..200)
            .prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
    ]
}

fn variables(name: &str) -> Option<String> {
    match name {
        "APP_ID" => Some("blog".into()),
        "APP_HTTP_PORT" => Some("9400".into()),
        "APP_VERSION" => Some("1".into()),
        _ => None,
    }
}

const APP_TOML: &str = r#"name = "prop"
trademark = "Property"
versions = ["1"]
official = false
logo = "logo.svg"
web_service = "web"
web_port = 80
http_port = 9400
admin_path = ""
user_name = "admin"
[requirements]
cpu = 1
memory_mb = 16
disk_mb = 16
"#;

/// Loads a catalog of one app folder holding these files.
fn load(app_toml: &[u8], compose: &[u8]) {
    let root = tempfile::tempdir().unwrap();
    let folder = root.path().join("prop");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("app.toml"), app_toml).unwrap();
    std::fs::write(folder.join("compose.yaml"), compose).unwrap();
    std::fs::write(folder.join("logo.svg"), b"<svg/>").unwrap();
    let (catalog, errors) = Catalog::load(&[root.path().to_path_buf()]);
    assert_eq!(catalog.len() + errors.len(), 1, "{errors:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn compose_parse_never_panics(text in compose_text()) {
        let folder = std::env::temp_dir();
        let context = Context {
            folder: &folder,
            variables: &variables,
            app_data: std::path::Path::new("/var/lib/appunit/apps/x/data"),
        };
        if let Ok((compose, _)) = Compose::read(&text, &context) {
            let _ = compose.validate("web", 80, 9001);
            let _ = compose.start_order();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn catalog_load_never_panics_on_any_compose(compose in compose_text()) {
        load(APP_TOML.as_bytes(), compose.as_bytes());
    }

    #[test]
    fn catalog_load_never_panics_on_any_bytes(
        app_toml in prop::collection::vec(any::<u8>(), 0..400),
        compose in prop::collection::vec(any::<u8>(), 0..400),
    ) {
        load(&app_toml, &compose);
    }

    #[test]
    fn catalog_load_never_panics_on_any_app_toml_values(
        edits in prop::collection::vec((0..14usize, text()), 1..4),
        compose in compose_like(),
    ) {
        // Each edit replaces one line's value with arbitrary text, quoted or bare.
        let mut lines: Vec<String> = APP_TOML.lines().map(str::to_string).collect();
        for (line, value) in edits {
            if let Some((name, _)) = lines[line].split_once(" = ") {
                lines[line] = format!("{name} = {value}");
            }
        }
        load(lines.join("\n").as_bytes(), compose.as_bytes());
    }
}
