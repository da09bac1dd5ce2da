//! Backups on real systemd and containerd: a bundle with images, restored under a new
//! name with the registry stopped; the bundle read by `tar --zstd` and
//! `ctr images import`; list, delete, and a backup that does not fit.

mod common;

use common::host::Host;
use std::time::Duration;

async fn wait_backup(host: &Host, app_id: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let status = host.status(app_id).await;
        if status["operation"].is_null() && !status["last_operation"].is_null() {
            return status;
        }
        assert!(std::time::Instant::now() < deadline, "{status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn backup_with_images_restores_offline_under_a_new_name() {
    let host = Host::boot();
    let install = "app_name=duo&customer_app_name=orig&app_version=1";
    assert_eq!(host.call("AppInstall", install).await.status, 200);
    let status = host.running("orig", Duration::from_secs(120)).await;
    let password = status["running_info"]["password"].clone();
    let owner_file = host.sandbox.path("appunit/apps/orig/data/dbdata/owner");
    let owner = std::fs::read(&owner_file).unwrap();
    xattr::set(&owner_file, "user.appunit", b"kept").unwrap();

    let reply = host
        .call("AppBackup", "app_id=orig&include_images=true")
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let backup = reply.data()["backup"].as_str().unwrap().to_string();
    let done = wait_backup(&host, "orig").await;
    let last = &done["last_operation"];
    assert_eq!(last["kind"], "backup", "{done}");
    assert_eq!(last["result"], "succeeded", "{done}");
    assert!(last["downtime_ms"].as_u64().unwrap() > 0, "{done}");
    assert_eq!(done["status"], "running", "{done}");
    let bundle = host.sandbox.path(&format!("appunit/backups/{backup}"));
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&bundle).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);

    let listed = host.call("AppBackupList", "app_id=orig").await;
    let entries = listed.data().as_array().unwrap().clone();
    assert_eq!(entries.len(), 1, "{listed:?}");
    assert_eq!(entries[0]["backup"], backup.as_str());
    assert_eq!(entries[0]["include_images"], true);

    // Plain tools read it: tar --zstd unpacks it; ctr imports its images/.
    let unpacked = tempfile::tempdir().unwrap();
    let tar = std::process::Command::new("tar")
        .args(["--zstd", "-xf"])
        .arg(&bundle)
        .arg("-C")
        .arg(unpacked.path())
        .status()
        .unwrap();
    assert!(tar.success());
    assert_eq!(
        std::fs::read(unpacked.path().join("data/dbdata/owner")).unwrap(),
        owner
    );
    let layout = unpacked.path().join("images");
    assert!(layout.join("index.json").exists() && layout.join("oci-layout").exists());
    let archive = unpacked.path().join("images.tar");
    assert!(
        std::process::Command::new("tar")
            .arg("-cf")
            .arg(&archive)
            .arg("-C")
            .arg(&layout)
            .arg(".")
            .status()
            .unwrap()
            .success()
    );
    let inside = host.sandbox.path("run/images.tar");
    std::fs::copy(&archive, &inside).unwrap();
    let imported = host.sandbox.run(
        "ctr",
        &["-n", "ctrcheck", "images", "import", "/run/images.tar"],
    );
    assert!(
        imported.status.success(),
        "{}",
        String::from_utf8_lossy(&imported.stderr)
    );

    let gone = host
        .call("AppUninstall", "app_id=orig&delete_image=true")
        .await;
    assert_eq!(gone.status, 200, "{gone:?}");
    host.sandbox.systemctl(&["stop", "test-registry.service"]);

    let restore = host
        .call(
            "AppRestore",
            &format!("backup={backup}&customer_app_name=copy"),
        )
        .await;
    assert_eq!(restore.status, 200, "{restore:?}");
    let status = host.running("copy", Duration::from_secs(120)).await;
    assert_eq!(status["running_info"]["password"], password);
    assert_eq!(status["last_operation"]["kind"], "restore", "{status}");
    assert_eq!(status["last_operation"]["result"], "succeeded", "{status}");
    let restored = host.sandbox.path("appunit/apps/copy/data/dbdata/owner");
    assert_eq!(std::fs::read(&restored).unwrap(), owner);
    assert_eq!(
        xattr::get(&restored, "user.appunit").unwrap().as_deref(),
        Some(&b"kept"[..])
    );

    // Delete; a name that is not a bundle; one that is gone.
    let deleted = host
        .call("AppBackupDelete", &format!("backup={backup}"))
        .await;
    assert_eq!(deleted.status, 200, "{deleted:?}");
    assert!(!bundle.exists());
    let again = host
        .call("AppBackupDelete", &format!("backup={backup}"))
        .await;
    assert_eq!(again.code(), "Param.Backup.NotExist");
    assert_eq!(
        host.call("AppBackupDelete", "").await.code(),
        "Param.Backup.Blank"
    );
    assert_eq!(
        host.call("AppRestore", "backup=../x.tar.zst").await.code(),
        "Param.Backup.NotExist"
    );
}

/// A backup_dir too small for the data: Requirement.NotEnough, nothing written.
#[tokio::test]
async fn a_backup_that_does_not_fit_writes_nothing() {
    let host = Host::boot();
    let small = host.sandbox.path("run/small-backups");
    std::fs::create_dir_all(&small).unwrap();
    // Mounted inside the sandbox's own mount namespace, where the daemon sees it.
    let mounted = host.sandbox.run(
        "mount",
        &[
            "-t",
            "tmpfs",
            "-o",
            "size=1m",
            "tmpfs",
            "/run/small-backups",
        ],
    );
    assert!(mounted.status.success());
    let config = host.sandbox.path("etc-appunit/config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("backup_dir = \"/run/small-backups\"\n{text}"),
    )
    .unwrap();
    host.sandbox.systemctl(&["restart", "appunitd.service"]);
    let install = "app_name=duo&customer_app_name=full&app_version=1";
    assert_eq!(host.call("AppInstall", install).await.status, 200);
    host.running("full", Duration::from_secs(120)).await;
    let noise: Vec<u8> = (0..4 << 20)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(
        host.sandbox.path("appunit/apps/full/data/dbdata/noise"),
        noise,
    )
    .unwrap();
    let reply = host.call("AppBackup", "app_id=full").await;
    assert_eq!(reply.code(), "Requirement.NotEnough", "{reply:?}");
    let listing = host.sandbox.run("ls", &["-A", "/run/small-backups"]);
    assert!(listing.stdout.is_empty(), "{listing:?}");
    assert!(host.status("full").await["operation"].is_null());
}

/// kill -9 of appunitd while a backup has the app stopped: at the next start nothing of
/// the bundle is left in backup_dir or listed, the app runs again, and last_operation
/// says the backup failed, and why.
#[tokio::test]
async fn a_backup_cut_by_a_crash_leaves_no_bundle_and_the_app_running() {
    let host = Host::boot();
    let install = "app_name=duo&customer_app_name=cut&app_version=1";
    assert_eq!(host.call("AppInstall", install).await.status, 200);
    host.running("cut", Duration::from_secs(120)).await;
    // Incompressible data, enough that writing the bundle takes a while.
    let noise = host.sandbox.path("appunit/apps/cut/data/dbdata/noise");
    let dd = std::process::Command::new("dd")
        .args(["if=/dev/urandom", "bs=1M", "count=256", "status=none"])
        .arg(format!("of={}", noise.display()))
        .status()
        .unwrap();
    assert!(dd.success());

    let reply = host.call("AppBackup", "app_id=cut").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let backup = reply.data()["backup"].as_str().unwrap().to_string();
    let backups = host.sandbox.path("appunit/backups");
    let partial = backups.join(format!(".{backup}.partial"));
    // The app is stopped, and its data is being written.
    host.sandbox.wait_until("the backup to stop the app", |s| {
        s.systemctl(&["is-active", "appunit-cut.service"]) != "active" && partial.exists()
    });
    host.kill_daemon();
    assert!(!backups.join(&backup).exists(), "the backup was not cut");

    host.start_daemon();
    let ended = |s: &serde_json::Value| s["operation"].is_null() && s["status"] == "running";
    let (status, _) = host.watch("cut", Duration::from_secs(60), ended).await;
    let last = &status["last_operation"];
    assert_eq!(last["kind"], "backup", "{status}");
    assert_eq!(last["result"], "failed", "{status}");
    let detail = last["reason"]["Detail"].as_str().unwrap_or_default();
    assert!(detail.contains("no bundle was kept"), "{status}");
    assert_eq!(
        std::fs::read_dir(&backups).unwrap().count(),
        0,
        "{:?}",
        std::fs::read_dir(&backups).unwrap().collect::<Vec<_>>()
    );
    let listed = host.call("AppBackupList", "").await;
    assert_eq!(
        listed.data().as_array().map(Vec::len),
        Some(0),
        "{listed:?}"
    );
    assert!(host.page("cut").contains("duo"));
    // The app can be backed up again.
    let again = host.call("AppBackup", "app_id=cut").await;
    assert_eq!(again.status, 200, "{again:?}");
    let done = wait_backup(&host, "cut").await;
    assert_eq!(done["last_operation"]["result"], "succeeded", "{done}");
}
