//! The systemd backend against a real systemd (PID 1 of a sandbox, TESTING.md).

mod common;

use appunit::runtime::systemd::{Systemd, SystemdError, UnitState};
use common::sandbox::Sandbox;
use std::time::{Duration, Instant};

const SLEEPER: &str = "[Unit]\nDescription=test sleeper\n[Service]\nExecStart=/bin/sleep 1000\n[Install]\nWantedBy=multi-user.target\n";

async fn connect(sandbox: &Sandbox) -> Systemd {
    Systemd::connect(Some(&sandbox.bus_address()), sandbox.path("units"))
        .await
        .unwrap()
}

#[tokio::test]
async fn unit_lifecycle_on_real_systemd() {
    let sandbox = Sandbox::boot("");
    let systemd = connect(&sandbox).await;
    let unit = "appunit-t1.service";
    assert_eq!(systemd.state(unit).await.unwrap(), UnitState::Inactive);

    systemd.install_unit(unit, SLEEPER).await.unwrap();
    systemd.start(unit).await.unwrap();
    assert_eq!(systemd.state(unit).await.unwrap(), UnitState::Active);
    assert_eq!(sandbox.systemctl(&["is-active", unit]), "active");
    let first = systemd.main_pid(unit).await.unwrap();
    assert!(first > 0);

    systemd.restart(unit).await.unwrap();
    let second = systemd.main_pid(unit).await.unwrap();
    assert!(second > 0 && second != first, "{first} → {second}");

    systemd.enable(unit).await.unwrap();
    assert_eq!(sandbox.systemctl(&["is-enabled", unit]), "enabled");
    systemd.disable(unit).await.unwrap();
    assert_eq!(sandbox.systemctl(&["is-enabled", unit]), "disabled");

    // A stop by hand shows within a second, from the signal, without polling systemd.
    sandbox.systemctl(&["stop", unit]);
    let deadline = Instant::now() + Duration::from_secs(1);
    while systemd.state(unit).await.unwrap() != UnitState::Inactive {
        assert!(
            Instant::now() < deadline,
            "the hand-made stop did not show within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    systemd.start(unit).await.unwrap();
    systemd.remove_unit(unit).await.unwrap();
    assert!(!sandbox.path("units").join(unit).exists());
    assert_eq!(systemd.state(unit).await.unwrap(), UnitState::Inactive);
    assert_eq!(sandbox.systemctl(&["is-active", unit]), "inactive");
}

#[tokio::test]
async fn a_failing_start_is_an_error_with_the_job_result() {
    let sandbox = Sandbox::boot("");
    let systemd = connect(&sandbox).await;
    let unit = "appunit-t2.service";
    systemd
        .install_unit(unit, "[Service]\nType=oneshot\nExecStart=/bin/false\n")
        .await
        .unwrap();
    let err = systemd.start(unit).await.unwrap_err();
    assert!(
        matches!(&err, SystemdError::Job { result, .. } if result == "failed"),
        "{err}"
    );
    assert!(err.to_string().contains(unit));
    assert_eq!(systemd.state(unit).await.unwrap(), UnitState::Failed);
    systemd.remove_unit(unit).await.unwrap();
    assert_eq!(sandbox.systemctl(&["is-failed", unit]), "inactive");
}

#[tokio::test]
async fn no_bus_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let address = format!("unix:path={}", dir.path().join("none").display());
    let err = Systemd::connect(Some(&address), dir.path().into())
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("not reachable"), "{err}");
}
