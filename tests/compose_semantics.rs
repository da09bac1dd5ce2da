//! Compose as Docker runs it, on real containerd and systemd in a sandbox: env_file and
//! `.env`, names, limits and settings seen from inside the container, restart policies,
//! one-shot init containers, host access, and two listeners on one port.

mod common;

use common::host::{Host, is_code};
use common::sandbox::{REPO_INSIDE, TARGET};
use std::time::{Duration, Instant};

async fn install_running(host: &Host, app: &str, app_id: &str) -> serde_json::Value {
    let reply = host
        .call(
            "AppInstall",
            &format!("app_name={app}&customer_app_name={app_id}&app_version=1"),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    host.running(app_id, Duration::from_secs(90)).await
}

#[tokio::test]
async fn env_files_names_limits_and_settings_inside_the_container() {
    let host = Host::boot();

    install_running(&host, "envapp", "envs").await;
    let page = host.page("envs");
    // .env's default, env_file's value, environment over env_file, appunit's variable
    // over .env's; the backend reached by its container_name.
    assert!(
        page.contains("hello-from-dotenv file-value from-compose envs"),
        "{page}"
    );
    assert!(page.contains("reached-backend-box"), "{page}");

    install_running(&host, "limited", "limits").await;
    let page = host.page("limits");
    assert!(page.contains("memory.max 50331648"), "{page}");
    assert!(page.contains("nofile 2000"), "{page}");
    // /dev/shm of 32 MiB, a 1 MiB tmpfs, a read-only root.
    assert!(
        page.lines()
            .any(|l| l.contains("/dev/shm") && l.split_whitespace().nth(1) == Some("32768")),
        "{page}"
    );
    assert!(
        page.contains("tmpfs on /scratch type tmpfs") && page.contains("size=1024k"),
        "{page}"
    );
    assert!(page.contains("Read-only file system"), "{page}");
    // systemd carries the limits on the container's scope in the app's slice
    // (MemoryLimit= on cgroup v1, MemoryMax= on v2).
    let shown = host.sandbox.systemctl(&[
        "show",
        "-p",
        "MemoryMax",
        "-p",
        "MemoryLimit",
        "-p",
        "TasksMax",
        "appunit-limits-web.scope",
    ]);
    assert!(
        (shown.contains("MemoryMax=50331648") || shown.contains("MemoryLimit=50331648"))
            && shown.contains("TasksMax=64"),
        "{shown}"
    );
    for app_id in ["envs", "limits"] {
        let reply = host.call("AppUninstall", &format!("app_id={app_id}")).await;
        assert_eq!(reply.status, 200, "{reply:?}");
    }
}

#[tokio::test]
async fn restart_always_and_a_one_shot_init_container() {
    let host = Host::boot();
    install_running(&host, "restarter", "again").await;
    let starts = host.sandbox.path("appunit/apps/again/data/shared/starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    // web exits every 2 s; the supervisor starts it again while the app stays running.
    loop {
        let count = std::fs::read_to_string(&starts)
            .unwrap_or_default()
            .lines()
            .count();
        if count >= 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{count} starts\n{}",
            host.journal("appunit-again.service")
        );
        let status = host.status("again").await;
        assert_eq!(status["status"], "running", "{status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        host.sandbox
            .systemctl(&["is-active", "appunit-again.service"]),
        "active"
    );
    let journal = host.journal("appunit-again.service");
    // The init container ran once, before web, and its exit did not fail the app.
    assert_eq!(journal.matches("init ran").count(), 1, "{journal}");
    assert!(journal.contains("web exits"), "{journal}");
    assert!(
        host.sandbox
            .path("appunit/apps/again/data/shared/init-done")
            .exists()
    );
    let reply = host.call("AppUninstall", "app_id=again").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(host.leftovers("again").is_empty());
}

#[tokio::test]
async fn host_access_needs_the_configuration_and_one_port_cannot_be_shared() {
    let host = Host::boot();
    let reply = host
        .call(
            "AppInstall",
            "app_name=privy&customer_app_name=privy&app_version=1",
        )
        .await;
    assert_eq!(reply.code(), "Requirement.HostAccess", "{reply:?}");
    assert!(reply.message().contains("privileged"), "{reply:?}");

    // Two services on port 80 of one network namespace: the app ends in error, naming both.
    host.call(
        "AppInstall",
        "app_name=clash&customer_app_name=clash&app_version=1",
    )
    .await;
    let (clash, _) = host
        .watch("clash", Duration::from_secs(90), is_code("50"))
        .await;
    let detail = clash["status_reason"]["Detail"]
        .as_str()
        .unwrap_or_default();
    assert!(
        detail.contains("admin and web both listen on 80/tcp"),
        "{clash}"
    );

    // The operator allows host access: the daemon restarts with it, and installs.
    let config = format!(
        "catalog_dirs = [\"{REPO_INSIDE}/tests/fixtures/catalog\"]\npublic_host = \"127.0.0.1\"\n\
         unit_target = \"{TARGET}\"\nallow_host_access = true\n\
         [registries.\"127.0.0.1:5000\"]\ninsecure = true\n"
    );
    std::fs::write(host.sandbox.path("etc-appunit/config.toml"), config).unwrap();
    host.sandbox.systemctl(&["restart", "appunitd.service"]);
    install_running(&host, "privy", "privy").await;
    // Privileged: every capability (the default set is 00000000a80425fb).
    let page = host.page("privy");
    assert!(
        page.contains("CapEff") && !page.contains("00000000a80425fb"),
        "{page}"
    );
    for app_id in ["privy", "clash"] {
        let reply = host.call("AppUninstall", &format!("app_id={app_id}")).await;
        assert_eq!(reply.status, 200, "{reply:?}");
    }
}

#[test]
fn build_and_docker_socket_make_an_app_invalid_naming_the_service() {
    let catalog = tempfile::tempdir().unwrap();
    let fixture = std::path::Path::new(common::REPO).join("tests/fixtures/catalog/duo");
    for (name, service) in [
        ("builder", "    build: ./src\n"),
        (
            "socket",
            "    volumes: [\"/var/run/docker.sock:/var/run/docker.sock\"]\n",
        ),
    ] {
        let folder = catalog.path().join(name);
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::copy(fixture.join("logo.svg"), folder.join("logo.svg")).unwrap();
        let meta = std::fs::read_to_string(fixture.join("app.toml"))
            .unwrap()
            .replace("name = \"duo\"", &format!("name = \"{name}\""));
        std::fs::write(folder.join("app.toml"), meta).unwrap();
        let compose = format!(
            "services:\n  web:\n    image: busybox\n    ports: [\"80\"]\n  helper:\n    image: busybox\n{service}"
        );
        std::fs::write(folder.join("compose.yaml"), compose).unwrap();
    }
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_appunitd"))
        .arg("check-catalog")
        .arg(catalog.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let text = String::from_utf8_lossy(&output.stderr).to_string()
        + &String::from_utf8_lossy(&output.stdout);
    for key in ["services.helper.build", "services.helper.volumes"] {
        assert!(
            text.lines()
                .any(|l| l.contains(key) && l.contains("cannot run without Docker")),
            "{key}: {text}"
        );
    }
}
