//! The app's password on real containerd and systemd: kept with kept data and reused by
//! a reinstall of the same app; never shown in a reason, a unit's status text or the
//! journal.

mod common;

use common::host::{Host, settled};
use std::time::Duration;

async fn install(host: &Host, app_name: &str, app_id: &str) -> common::Reply {
    let query = format!("app_name={app_name}&customer_app_name={app_id}&app_version=1");
    host.call("AppInstall", &query).await
}

async fn settle(host: &Host, app_id: &str) -> serde_json::Value {
    host.watch(app_id, Duration::from_secs(120), settled)
        .await
        .0
}

/// The owner file the duo app's db writes once into its volume.
fn owner(host: &Host, app_id: &str) -> String {
    let path = format!("appunit/apps/{app_id}/data/dbdata/owner");
    std::fs::read_to_string(host.sandbox.path(&path)).unwrap()
}

#[tokio::test]
async fn kept_data_keeps_its_password_and_its_app() {
    let host = Host::boot();
    assert_eq!(install(&host, "duo", "blog").await.status, 200);
    let first = settle(&host, "blog").await;
    assert_eq!(first["status"], "running", "{first}");
    let password = first["running_info"]["password"]
        .as_str()
        .unwrap()
        .to_string();
    let data_owner = owner(&host, "blog");

    let reply = host
        .call("AppUninstall", "app_id=blog&delete_data=false")
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let kept = host.sandbox.path("appunit/apps/blog/credentials.json");
    let mode = std::os::unix::fs::PermissionsExt::mode(&kept.metadata().unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);

    // Another catalog app under the kept name is refused, naming the kept app.
    let refused = install(&host, "ported", "blog").await;
    assert_eq!(
        refused.code(),
        "Param.CustomerAppName.Repeat",
        "{refused:?}"
    );
    let detail = refused.json["Error"]["Detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(detail.contains("duo"), "{detail}");

    // The same app again: the same data and the same password.
    assert_eq!(install(&host, "duo", "blog").await.status, 200);
    let again = settle(&host, "blog").await;
    assert_eq!(again["status"], "running", "{again}");
    assert_eq!(again["running_info"]["password"], password.as_str());
    assert_eq!(owner(&host, "blog"), data_owner);

    // delete_data=true deletes what was kept, even of a name with no app any more.
    let reply = host
        .call("AppUninstall", "app_id=blog&delete_data=false")
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let reply = host
        .call("AppUninstall", "app_id=blog&delete_data=true")
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(!host.sandbox.path("appunit/apps/blog").exists());
    let reply = host
        .call("AppUninstall", "app_id=blog&delete_data=true")
        .await;
    assert_eq!(reply.code(), "Param.APPID.NotExist", "{reply:?}");
    assert_eq!(install(&host, "duo", "blog").await.status, 200);
    let fresh = settle(&host, "blog").await;
    assert_ne!(fresh["running_info"]["password"], password.as_str());
}

#[tokio::test]
async fn a_failing_health_check_shows_no_password() {
    let host = Host::boot();
    assert_eq!(install(&host, "leaky", "leak").await.status, 200);
    let status = settle(&host, "leak").await;
    assert_eq!(status["status"], "error", "{status}");
    let kept = host.sandbox.path("appunit/apps/leak/credentials.json");
    let kept: serde_json::Value = serde_json::from_slice(&std::fs::read(kept).unwrap()).unwrap();
    let password = kept["password"].as_str().unwrap().to_string();
    assert!(password.len() >= 16, "{kept}");

    let unit = "appunit-leak.service";
    let mut seen = vec![
        ("status_reason", status["status_reason"].to_string()),
        (
            "systemctl status",
            host.sandbox.systemctl(&["status", unit]),
        ),
        (
            "the unit's status text",
            host.sandbox.systemctl(&["show", "-p", "StatusText", unit]),
        ),
    ];
    let journal = host.sandbox.run("journalctl", &["--no-pager", "-o", "cat"]);
    seen.push((
        "journal",
        String::from_utf8_lossy(&journal.stdout).to_string(),
    ));
    let failed_check = &seen[0].1;
    assert!(failed_check.contains("health check"), "{failed_check}");
    for (place, text) in seen {
        assert!(
            !text.contains(&password),
            "the password is in {place}:\n{text}"
        );
    }
}
