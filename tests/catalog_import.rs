//! `appunit catalog import` on fixtures written in each source's own format, and
//! `appunit catalog check` on what it wrote: every mapping rule and refusal reason.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn fixture(format: &str) -> PathBuf {
    Path::new(REPO).join("tests/fixtures/import").join(format)
}

fn appunit(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_appunit"))
        .args(args)
        .output()
        .unwrap()
}

/// Imports a fixture into `into`; returns the per-app outcomes by source name.
fn import(format: &str, src: &Path, into: &Path) -> serde_json::Map<String, Value> {
    let out = appunit(&[
        "--json",
        "catalog",
        "import",
        "--format",
        format,
        src.to_str().unwrap(),
        "--into",
        into.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let outcomes: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let summary = String::from_utf8_lossy(&out.stderr).to_string();
    let imported = outcomes
        .iter()
        .filter(|o| o["outcome"] == "imported")
        .count();
    assert!(
        summary.contains(&format!("imported {imported} of {} apps", outcomes.len())),
        "{summary}"
    );
    outcomes
        .into_iter()
        .map(|o| (o["source"].as_str().unwrap().to_string(), o))
        .collect()
}

fn check(dirs: &[&Path]) -> (bool, String, String) {
    let mut args = vec!["catalog", "check"];
    args.extend(dirs.iter().map(|d| d.to_str().unwrap()));
    let out = appunit(&args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn websoft9_variables_files_and_helpers_map_onto_an_app() {
    let into = tempfile::tempdir().unwrap();
    let outcomes = import("websoft9", &fixture("websoft9"), into.path());
    let blog = &outcomes["blog"];
    assert_eq!(blog["outcome"], "imported", "{blog}");
    let notes = blog["notes"].to_string();
    assert!(
        notes.contains("helper `init`") && notes.contains("/data/init.sh"),
        "{notes}"
    );

    let meta: toml::Table = read(into.path().join("blog/app.toml")).parse().unwrap();
    assert_eq!(meta["trademark"].as_str(), Some("Blog Press"));
    let versions: Vec<&str> = meta["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(versions, ["6.9", "6.8", "latest"]);
    assert_eq!(meta["http_port"].as_integer(), Some(9101));
    assert_eq!(meta["web_port"].as_integer(), Some(80));
    assert_eq!(meta["web_service"].as_str(), Some("wordpress"));
    assert_eq!(meta["admin_path"].as_str(), Some("/wp-admin"));
    assert_eq!(meta["user_name"].as_str(), Some("admin"));
    assert_eq!(meta["requirements"]["memory_mb"].as_integer(), Some(1024));
    assert_eq!(meta["requirements"]["cpu"].as_integer(), Some(2));

    let compose: Value =
        serde_yaml_ng::from_str(&read(into.path().join("blog/compose.yaml"))).unwrap();
    let services = compose["services"].as_object().unwrap();
    assert!(
        !services.contains_key("init"),
        "the Docker helper is left out"
    );
    assert!(compose.get("networks").is_none() && compose.get("version").is_none());
    let web = &services["wordpress"];
    assert_eq!(web["image"], "wordpress:${APP_VERSION}");
    assert_eq!(web["ports"][0], "${APP_HTTP_PORT}:80");
    assert!(web.get("env_file").is_none() && web.get("logging").is_none());
    // The env_file's values, interpolated as Compose does, appunit's variables kept.
    assert_eq!(web["environment"]["WORDPRESS_DB_HOST"], "${APP_NAME}-mysql");
    assert_eq!(
        web["environment"]["WORDPRESS_DB_PASSWORD"],
        "${APP_PASSWORD}"
    );
    assert_eq!(web["environment"]["LITERAL"], "$$notavar");
    assert_eq!(web["environment"]["EXTRA"], "community");
    let db = &services["mysql"];
    assert_eq!(db["image"], "mysql:8.0");
    assert_eq!(db["environment"]["MYSQL_PASSWORD"], "${APP_PASSWORD}");
    assert_eq!(db["environment"]["COST"], "$$5");
    // src/ travels with the app; no logo in the checkout: the initials.
    assert_eq!(
        read(into.path().join("blog/src/php.ini")),
        "memory_limit = 256M\n"
    );
    let logo = read(into.path().join("blog/logo.svg"));
    assert!(
        logo.starts_with("<svg") && logo.contains(">BP</text>"),
        "{logo}"
    );

    let (ok, stdout, stderr) = check(&[&into.path().join("blog")]);
    assert!(
        ok && stdout.contains("1 apps valid, 0 invalid"),
        "{stdout}{stderr}"
    );
}

#[test]
fn every_refusal_has_one_reason() {
    let into = tempfile::tempdir().unwrap();
    let mut outcomes = import("websoft9", &fixture("websoft9"), into.path());
    outcomes.extend(import("casaos", &fixture("casaos"), into.path()));
    let cases = [
        ("portainer", "docker-socket"),
        ("builder", "build"),
        ("gpu", "gpu-runtime"),
        ("noport", "no-port"),
        ("imageless", "no-image"),
        ("ArmOnly", "no-amd64"),
    ];
    for (source, reason) in cases {
        let outcome = &outcomes[source];
        assert_eq!(outcome["outcome"], "refused", "{outcome}");
        assert_eq!(outcome["reason"], reason, "{outcome}");
        assert!(
            !into.path().join(source.to_lowercase()).exists(),
            "{source} left a folder"
        );
    }
    // Once refused for keys the loader lacked, now imported: the widened table.
    for source in [
        "restarting",
        "dockerish",
        "fixedport",
        "HostNet",
        "Privileged",
        "Proxied",
    ] {
        assert_eq!(
            outcomes[source]["outcome"], "imported",
            "{}",
            outcomes[source]
        );
    }
    let (ok, stdout, _) = check(&[into.path()]);
    assert!(ok && stdout.contains("8 apps valid, 0 invalid"), "{stdout}");
}

#[test]
fn keys_docker_honours_and_ports_found_where_sources_put_them() {
    let into = tempfile::tempdir().unwrap();
    let websoft9 = import("websoft9", &fixture("websoft9"), into.path());
    let casaos = import("casaos", &fixture("casaos"), into.path());
    let meta = |app: &str| -> toml::Table {
        read(into.path().join(app).join("app.toml"))
            .parse()
            .unwrap()
    };
    let ports = |app: &str| {
        let meta = meta(app);
        (
            meta["web_service"].as_str().unwrap().to_string(),
            meta["web_port"].as_integer().unwrap(),
            meta["http_port"].as_integer().unwrap(),
        )
    };
    // `${PORT:-3002}` where .env says PORT=$W9_HTTP_PORT_SET.
    assert_eq!(ports("dockerish"), ("web".into(), 80, 9300));
    // No variable: the first fixed port is the web port, its number the default.
    assert_eq!(ports("fixedport"), ("fixedport".into(), 80, 8880));
    // On the host's network the web service listens on port_map itself.
    assert_eq!(ports("hostnet"), ("app".into(), 8123, 8123));
    // port_map is published by nginx, not by `main`.
    assert_eq!(ports("proxied"), ("nginx".into(), 80, 3701));

    let compose: Value =
        serde_yaml_ng::from_str(&read(into.path().join("dockerish/compose.yaml"))).unwrap();
    let web = &compose["services"]["web"];
    assert_eq!(web["ports"][0], "${APP_HTTP_PORT}:80");
    // `rwz` is no option Docker knows: it ignores it, and so it is left out.
    assert_eq!(web["volumes"][1], "spool:/var/spool");
    // `~` is root's home: Websoft9 runs Compose as root.
    assert_eq!(web["volumes"][2], "/root/.ssh:/root/.ssh:ro");
    assert!(
        compose["services"].get("gpu").is_none(),
        "profiled service kept"
    );
    assert_eq!(
        read(into.path().join("dockerish/start.sh")),
        read(fixture("websoft9").join("apps/dockerish/start.sh"))
    );
    let notes = websoft9["dockerish"]["notes"].to_string();
    for said in ["rwz", "/root/.ssh", "gpu left out"] {
        assert!(notes.contains(said), "{said}: {notes}");
    }
    assert!(casaos["HostNet"]["notes"].is_array());
    let (ok, stdout, stderr) = check(&[&into.path().join("dockerish")]);
    assert!(ok && stdout.contains("1 apps valid"), "{stdout}{stderr}");
}

#[test]
fn casaos_metadata_ports_and_app_data_map_onto_an_app() {
    let into = tempfile::tempdir().unwrap();
    let outcomes = import("casaos", &fixture("casaos"), into.path());
    assert_eq!(
        outcomes["MediaBox"]["outcome"], "imported",
        "{}",
        outcomes["MediaBox"]
    );
    let meta: toml::Table = read(into.path().join("mediabox/app.toml")).parse().unwrap();
    assert_eq!(meta["trademark"].as_str(), Some("Media Box"));
    assert_eq!(meta["web_service"].as_str(), Some("mediabox"));
    assert_eq!(meta["web_port"].as_integer(), Some(8096));
    assert_eq!(meta["http_port"].as_integer(), Some(8097));
    assert_eq!(meta["admin_path"].as_str(), Some("/web"));
    assert_eq!(
        meta["versions"].as_array().unwrap()[0].as_str(),
        Some("10.11.10")
    );
    assert_eq!(meta["requirements"]["memory_mb"].as_integer(), Some(300));
    // The checkout's icon is the logo.
    assert_eq!(
        std::fs::read(into.path().join("mediabox/logo.svg")).unwrap(),
        std::fs::read(fixture("casaos").join("Apps/MediaBox/icon.svg")).unwrap()
    );
    let compose: Value =
        serde_yaml_ng::from_str(&read(into.path().join("mediabox/compose.yaml"))).unwrap();
    let service = &compose["services"]["mediabox"];
    assert_eq!(
        service["ports"],
        serde_json::json!(["${APP_HTTP_PORT}:8096", "7359:7359/udp"])
    );
    assert_eq!(
        service["volumes"],
        serde_json::json!(["config:/config", "/DATA/Media:/Media:ro"])
    );
    assert_eq!(service["environment"]["PUID"], "1000");
    assert_eq!(service["environment"]["TZ"], "Etc/UTC");
    assert!(service.get("deploy").is_none() && service.get("network_mode").is_none());
    assert!(compose["volumes"]["config"].is_object());
}

#[test]
fn importing_again_replaces_only_what_an_import_wrote() {
    let src = tempfile::tempdir().unwrap();
    let apps = src.path().join("apps");
    std::fs::create_dir(&apps).unwrap();
    for app in ["blog", "noport"] {
        copy(&fixture("websoft9").join("apps").join(app), &apps.join(app));
    }
    let into = tempfile::tempdir().unwrap();
    copy(
        &Path::new(REPO).join("catalog/nginx"),
        &into.path().join("nginx"),
    );
    import("websoft9", src.path(), into.path());
    std::fs::write(into.path().join("blog/stale"), "from an earlier import").unwrap();

    // Same source again: the folder is written afresh.
    let again = import("websoft9", src.path(), into.path());
    assert_eq!(again["blog"]["outcome"], "imported");
    assert!(!into.path().join("blog/stale").exists());
    // The app leaves the source: its folder goes; the hand-made app stays.
    std::fs::remove_dir_all(apps.join("blog")).unwrap();
    import("websoft9", src.path(), into.path());
    assert!(!into.path().join("blog").exists());
    assert!(into.path().join("nginx/app.toml").exists());
    // An app of the same name that the import did not write is not replaced.
    copy(&fixture("websoft9").join("apps/blog"), &apps.join("nginx"));
    let taken = import("websoft9", src.path(), into.path());
    assert_eq!(taken["nginx"]["reason"], "name-taken");
    assert_eq!(
        read(into.path().join("nginx/app.toml")),
        read(Path::new(REPO).join("catalog/nginx/app.toml"))
    );
}

#[test]
fn check_takes_a_catalog_or_one_app_and_never_passes_an_empty_folder() {
    let shipped = Path::new(REPO).join("catalog");
    let (ok, stdout, _) = check(&[&shipped.join("wordpress")]);
    assert!(ok && stdout.contains("1 apps valid, 0 invalid"), "{stdout}");
    let (ok, stdout, _) = check(&[&shipped]);
    assert!(ok && !stdout.starts_with("0 apps"), "{stdout}");

    let empty = tempfile::tempdir().unwrap();
    let (ok, stdout, stderr) = check(&[empty.path()]);
    assert!(
        !ok && stdout.contains("0 apps valid, 1 invalid") && stderr.contains("no app folder"),
        "{stdout}{stderr}"
    );

    // A typo in one app folder is reported with the file and the key.
    let app = empty.path().join("nginx");
    copy(&shipped.join("nginx"), &app);
    let text = read(app.join("app.toml")).replacen("trademark", "trade_mark", 1);
    std::fs::write(app.join("app.toml"), text).unwrap();
    let (ok, stdout, stderr) = check(&[&app]);
    assert!(
        !ok && stdout.contains("0 apps valid, 1 invalid"),
        "{stdout}"
    );
    assert!(
        stderr.contains("app.toml") && stderr.contains("trade_mark"),
        "{stderr}"
    );
}

fn copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        if path.is_dir() {
            copy(&path, &to.join(entry.file_name()));
        } else {
            std::fs::copy(&path, to.join(entry.file_name())).unwrap();
        }
    }
}
