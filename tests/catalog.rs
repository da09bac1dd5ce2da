//! The shipped catalog loads; broken apps are rejected naming the file and the key.

use appunit::catalog::Catalog;
use std::path::{Path, PathBuf};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn shipped() -> PathBuf {
    Path::new(REPO).join("catalog")
}

#[test]
fn every_shipped_app_loads() {
    let (catalog, errors) = Catalog::load(&[shipped()]);
    assert!(errors.is_empty(), "{errors:#?}");
    let folders = std::fs::read_dir(shipped())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().is_dir())
        .count();
    assert_eq!(catalog.len(), folders);
    assert!(catalog.len() >= 10);
    for name in [
        "wordpress",
        "mysql",
        "mariadb",
        "postgres",
        "redis",
        "nginx",
        "gitea",
        "nextcloud",
        "grafana",
    ] {
        let app = catalog
            .get(name)
            .unwrap_or_else(|| panic!("{name} is not shipped"));
        assert!(!app.meta.versions.is_empty());
        assert!(
            app.logo.bytes.starts_with(b"<svg"),
            "{name}: the logo is not an SVG"
        );
        for service in app.compose.services.values() {
            assert!(
                service.image.starts_with("docker.io/"),
                "{name}: {}",
                service.image
            );
        }
    }
}

/// Copies the shipped nginx app into a scratch catalog, lets `edit` break it, and
/// returns the one error the load reports.
fn broken(file: &str, edit: impl Fn(String) -> String) -> (PathBuf, String) {
    let dir = tempfile::tempdir().unwrap().keep();
    let app = dir.join("nginx");
    std::fs::create_dir(&app).unwrap();
    for entry in std::fs::read_dir(shipped().join("nginx")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), app.join(entry.file_name())).unwrap();
    }
    let path = app.join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, edit(text)).unwrap();
    let (catalog, errors) = Catalog::load(std::slice::from_ref(&dir));
    assert!(catalog.get("nginx").is_none());
    assert_eq!(errors.len(), 1, "{errors:?}");
    let message = errors[0].to_string();
    std::fs::remove_dir_all(dir).unwrap();
    (path, message)
}

#[test]
fn broken_app_toml_is_rejected_naming_file_and_key() {
    for (edit, key) in [
        (("trademark =", "trade_mark ="), "trade_mark"),
        (("http_port = 9006", "http_port = \"9006\""), "http_port"),
        (("memory_mb =", "memory ="), "memory"),
    ] {
        let (path, message) = broken("app.toml", |text| text.replacen(edit.0, edit.1, 1));
        assert!(message.contains(path.to_str().unwrap()), "{message}");
        assert!(message.contains(key), "{message}");
    }
}

#[test]
fn compose_with_an_unknown_key_is_rejected_naming_file_and_key() {
    let (path, message) = broken("compose.yaml", |text| {
        text.replacen("    image:", "    secrets: [token]\n    image:", 1)
    });
    assert!(message.contains(path.to_str().unwrap()), "{message}");
    assert!(
        message.contains("secrets") && message.contains("services.nginx"),
        "{message}"
    );

    let (_, message) = broken("compose.yaml", |text| {
        format!("{text}\nconfigs:\n  front: {{}}\n")
    });
    assert!(message.contains("configs"), "{message}");
}

#[test]
fn check_catalog_command_reports_and_fails() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_appunitd"))
        .args(["check-catalog"])
        .arg(shipped())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let fixtures = Path::new(REPO).join("tests/fixtures");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_appunitd"))
        .args(["check-catalog"])
        .arg(&fixtures)
        .output()
        .unwrap();
    // tests/fixtures holds `catalog/`, which is not an app folder: no app.toml.
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("app.toml"));
}
