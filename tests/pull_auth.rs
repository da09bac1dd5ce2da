//! Pulls from registries that speak like Docker Hub, inside a systemd sandbox with the
//! real daemon: bearer-token auth (anonymous and with an account), a wrong password,
//! transient faults that are retried, and registries that declare impossible sizes.

mod common;

use common::host::{Host, settled};
use common::images::{Layer, build_image_in};
use common::registry::{AuthRegistry, fault_proxy, hostile_registry};
use common::sandbox::{REPO_INSIDE, TARGET};
use std::time::Duration;

/// duo's version 1: test/busybox:1 in the registries under test.
const TAG: &str = "1";

/// A sandbox whose plain registry (127.0.0.1:5000, which mirrors fall back to) is
/// stopped: only the registries under test serve.
fn boot() -> Host {
    let host = Host::boot();
    host.sandbox.systemctl(&["stop", "test-registry.service"]);
    host
}

/// Rewrites the daemon's config with `registries` and restarts it.
fn configure(host: &Host, registries: &str) {
    let config = format!(
        "catalog_dirs = [\"{REPO_INSIDE}/tests/fixtures/catalog\"]\npublic_host = \"127.0.0.1\"\n\
         unit_target = \"{TARGET}\"\n{registries}"
    );
    std::fs::write(host.sandbox.path("etc-appunit/config.toml"), config).unwrap();
    host.sandbox.systemctl(&["restart", "appunitd.service"]);
}

fn daemon_pid(host: &Host) -> String {
    host.sandbox
        .systemctl(&["show", "--property=MainPID", "--value", "appunitd.service"])
}

/// Installs duo (image 127.0.0.1:5000/test/busybox:VERSION) and waits until it settles.
async fn install(host: &Host, app_id: &str, version: &str) -> serde_json::Value {
    let query = format!("app_name=duo&app_version={version}&customer_app_name={app_id}");
    let reply = host.call("AppInstall", &query).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    host.watch(app_id, Duration::from_secs(180), settled)
        .await
        .0
}

fn small_image(host: &Host) -> common::images::TestImage {
    build_image_in(
        &host.sandbox.path("run/images"),
        &[Layer::busybox()],
        &["sh"],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn token_auth_pulls_anonymously_and_with_an_account_and_refuses_a_wrong_password() {
    let host = boot();
    let registry = AuthRegistry::token(&host.sandbox, 5001);
    let image = small_image(&host);
    registry.push(
        &host.sandbox,
        image.layout.path(),
        &format!("test/busybox:{TAG}"),
    );

    configure(&host, &registry.mirror_config("127.0.0.1:5000", false));
    let anonymous = install(&host, "anon", TAG).await;
    assert_eq!(anonymous["status"], "running", "{anonymous}");

    configure(&host, &registry.mirror_config("127.0.0.1:5000", true));
    // A fresh pull: the image of the first install goes with it.
    let reply = host
        .call("AppUninstall", "app_id=anon&delete_image=true")
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let account = install(&host, "account", TAG).await;
    assert_eq!(account["status"], "running", "{account}");
    let reply = host
        .call("AppUninstall", "app_id=account&delete_image=true")
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");

    let right = registry.password.clone();
    let wrong = AuthRegistry {
        password: "not-the-password-4711".into(),
        ..registry
    };
    configure(&host, &wrong.mirror_config("127.0.0.1:5000", true));
    let refused = install(&host, "refused", TAG).await;
    assert_eq!(refused["status"], "error", "{refused}");
    let detail = refused["status_reason"]["Detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        detail.contains("refused the credentials of user \"appunit-test\"")
            && detail.contains("test/busybox"),
        "{detail}"
    );
    let journal = host.journal("appunitd.service");
    for secret in [&wrong.password, &right] {
        assert!(!refused.to_string().contains(secret.as_str()), "{refused}");
        assert!(
            !journal.contains(secret.as_str()),
            "the journal shows a password"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_faults_are_retried_and_spent_retries_end_in_error() {
    let host = boot();
    let registry = AuthRegistry::token(&host.sandbox, 5001);
    let image = small_image(&host);
    registry.push(
        &host.sandbox,
        image.layout.path(),
        &format!("test/busybox:{TAG}"),
    );
    fault_proxy(
        &host.sandbox,
        5004,
        &registry.host,
        &["429", "503", "reset", "stall:25"],
    );
    configure(
        &host,
        "[registries.\"127.0.0.1:5000\"]\nmirrors = [\"http://127.0.0.1:5004\"]\n",
    );
    let reply = host
        .call(
            "AppInstall",
            &format!("app_name=duo&app_version={TAG}&customer_app_name=retried"),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let (retrying, _) = host
        .watch("retried", Duration::from_secs(60), |s| {
            s["progress"]["retrying"].is_string()
        })
        .await;
    assert_eq!(retrying["status"], "pulling", "{retrying}");
    assert!(
        retrying["progress"]["retrying"]
            .as_str()
            .unwrap()
            .contains("attempt 2 of 6"),
        "{retrying}"
    );
    let done = host
        .watch("retried", Duration::from_secs(180), settled)
        .await
        .0;
    assert_eq!(done["status"], "running", "{done}");
    assert!(done["progress"].is_null(), "{done}");

    fault_proxy(
        &host.sandbox,
        5006,
        &registry.host,
        &["503", "503", "503", "503", "503", "503"],
    );
    configure(
        &host,
        "[registries.\"127.0.0.1:5000\"]\nmirrors = [\"http://127.0.0.1:5006\"]\n",
    );
    let spent = install(&host, "spent", TAG).await;
    assert_eq!(spent["status"], "error", "{spent}");
    let detail = spent["status_reason"]["Detail"].as_str().unwrap();
    assert!(
        detail.contains("503") && detail.contains("gave up after 6 attempts"),
        "{detail}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_sizes_end_the_install_in_error_and_the_daemon_lives() {
    let host = boot();
    let modes = [
        ("layer", "huge-layer", 5005),
        ("index", "huge-index", 5006),
        ("manifest", "huge-manifest", 5007),
    ];
    for (_, mode, port) in modes {
        hostile_registry(&host.sandbox, port, mode);
    }
    for (app_id, mode, port) in modes {
        configure(
            &host,
            &format!("[registries.\"127.0.0.1:5000\"]\nmirrors = [\"http://127.0.0.1:{port}\"]\n"),
        );
        // The first request starts the daemon.
        host.call("AppList", "").await;
        let pid = daemon_pid(&host);
        let status = install(&host, app_id, TAG).await;
        assert_eq!(status["status"], "error", "{status}");
        let detail = status["status_reason"]["Detail"].as_str().unwrap();
        assert!(detail.contains("limit"), "{mode}: {detail}");
        assert_eq!(daemon_pid(&host), pid, "the daemon was restarted");
    }
}
