//! The packages, as an operator meets them: packaging/build makes the .deb and the .rpm;
//! inside systemd sandboxes whose /usr, /etc and /var are overlays, the .deb is
//! installed with dpkg, used, removed, reinstalled and purged, and the .rpm installed
//! and erased with rpm.

mod common;

use common::images::{Layer, build_image_in};
use common::sandbox::{REPO_INSIDE, Sandbox, TARGET};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// Runs packaging/build once per test binary; the .deb and the .rpm it made.
fn packages() -> &'static (PathBuf, PathBuf) {
    static BUILT: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BUILT.get_or_init(|| {
        let build = Command::new(format!("{}/packaging/build", common::REPO))
            .output()
            .unwrap();
        assert!(
            build.status.success(),
            "packaging/build: {}",
            String::from_utf8_lossy(&build.stderr)
        );
        let target = common::target_dir();
        let find = |extension: &str| {
            std::fs::read_dir(target.join("packages"))
                .unwrap()
                .map(|entry| entry.unwrap().path())
                .find(|path| path.extension().is_some_and(|e| e == extension))
                .unwrap_or_else(|| panic!("no .{extension} in target/packages"))
        };
        (find("deb"), find("rpm"))
    })
}

fn exists(sandbox: &Sandbox, path: &str) -> bool {
    sandbox.run("test", &["-e", path]).status.success()
}

/// Installs `package` in the sandbox with `command` (dpkg -i, rpm -i …): the socket is
/// then enabled and listening.
fn install(sandbox: &Sandbox, package: &Path, command: &[&str]) {
    let inside = format!("/run/{}", package.file_name().unwrap().to_string_lossy());
    std::fs::copy(package, sandbox.path(&inside[1..])).unwrap();
    let mut args = command[1..].to_vec();
    args.push(&inside);
    sandbox.must(command[0], &args);
    assert_eq!(
        sandbox.systemctl(&["is-enabled", "appunitd.socket"]),
        "enabled"
    );
    assert_eq!(
        sandbox.systemctl(&["is-active", "appunitd.socket"]),
        "active"
    );
}

/// `appunit ARGS…` as a user of the sandbox.
fn appunit_as(sandbox: &Sandbox, user: &str, args: &[&str]) -> Output {
    let mut command = vec!["-u", user, "--", "appunit"];
    command.extend_from_slice(args);
    sandbox.run("runuser", &command)
}

#[test]
fn the_deb_runs_a_socket_activated_daemon_and_only_purge_deletes_state() {
    let (deb, _) = packages();
    let sandbox = Sandbox::boot_with_overlay_root("");
    // Installed: the socket listens; the daemon waits for the first request.
    install(&sandbox, deb, &["dpkg", "-i"]);
    assert_eq!(
        sandbox.systemctl(&["is-active", "appunitd.service"]),
        "inactive"
    );
    assert_eq!(
        sandbox
            .must("stat", &["-c", "%a %G", "/run/appunit/appunit.sock"])
            .trim(),
        "660 appunit"
    );
    // The state is root's alone; the gateway's user is the socket group's only member.
    assert_eq!(
        sandbox.must(
            "stat",
            &["-c", "%a", "/var/lib/appunit", "/var/lib/appunit/apps"]
        ),
        "700\n700\n"
    );
    assert_eq!(
        sandbox
            .must("getent", &["group", "appunit"])
            .trim()
            .rsplit(':')
            .next(),
        Some("appunit-gateway")
    );

    // A test app from the sandbox's registry, as an operator would add one.
    sandbox.start_registry();
    std::fs::create_dir_all(sandbox.path("run/images")).unwrap();
    let web = Layer::file("www/index.html", "duo web\n");
    let image = build_image_in(
        &sandbox.path("run/images"),
        &[Layer::busybox(), web],
        &["sh"],
    );
    sandbox.push(image.layout.path(), "test/busybox:1");
    sandbox.must(
        "cp",
        &[
            "-r",
            &format!("{REPO_INSIDE}/tests/fixtures/catalog/duo"),
            "/etc/appunit/catalog.d/",
        ],
    );
    let config = format!(
        "public_host = \"127.0.0.1\"\nunit_target = \"{TARGET}\"\n\
         [registries.\"127.0.0.1:5000\"]\ninsecure = true\n"
    );
    sandbox.must(
        "sh",
        &[
            "-c",
            &format!("echo '{config}' >> /etc/appunit/config.toml"),
        ],
    );
    // A watchdog short enough to be seen fed within the test.
    sandbox.must("mkdir", &["-p", "/etc/systemd/system/appunitd.service.d"]);
    sandbox.must("sh",
        &[
            "-c",
            "printf '[Service]\\nWatchdogSec=2\\n' > /etc/systemd/system/appunitd.service.d/watchdog.conf",
        ],
    );
    sandbox.must("systemctl", &["daemon-reload"]);

    // Members of group appunit may use it; the first request starts the daemon.
    sandbox.must("useradd", &["--no-create-home", "-G", "appunit", "member"]);
    sandbox.must("useradd", &["--no-create-home", "outsider"]);
    let listed = appunit_as(&sandbox, "member", &["list", "--json"]);
    assert!(
        listed.status.success(),
        "appunit list: {}",
        common::text(&listed)
    );
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&listed.stdout).unwrap(),
        serde_json::json!([])
    );
    let status = sandbox.run("systemctl", &["status", "appunitd.service"]);
    assert!(
        common::text(&status).contains("Active: active (running)"),
        "{}",
        common::text(&status)
    );
    let refused = appunit_as(&sandbox, "outsider", &["list"]);
    assert_eq!(refused.status.code(), Some(1), "{}", common::text(&refused));
    assert!(
        common::text(&refused).contains("ermission denied"),
        "{}",
        common::text(&refused)
    );

    // Fed, the watchdog (2 s) leaves the same daemon running.
    let main_pid = sandbox.systemctl(&["show", "-P", "MainPID", "appunitd.service"]);
    std::thread::sleep(std::time::Duration::from_secs(5));
    assert_eq!(
        sandbox.systemctl(&["show", "-P", "MainPID", "appunitd.service"]),
        main_pid
    );
    assert_eq!(
        sandbox.systemctl(&["is-active", "appunitd.service"]),
        "active"
    );
    assert_ne!(
        sandbox.systemctl(&[
            "show",
            "-P",
            "WatchdogTimestampMonotonic",
            "appunitd.service"
        ]),
        "0"
    );

    let installed = appunit_as(&sandbox, "member", &["install", "duo", "--name", "shop"]);
    assert!(
        installed.status.success(),
        "install: {}",
        common::text(&installed)
    );
    assert_eq!(
        sandbox.systemctl(&["is-active", "appunit-shop.service"]),
        "active"
    );
    let page = || {
        sandbox
            .run("busybox", &["wget", "-qO-", "http://127.0.0.1:9100/"])
            .status
            .success()
    };
    assert!(page(), "the app's port answers");

    // Removed: daemon and app stopped, units gone, ports released, state kept.
    sandbox.must("dpkg", &["-r", "appunit"]);
    for unit in [
        "appunitd.socket",
        "appunitd.service",
        "appunit-shop.service",
    ] {
        assert_ne!(sandbox.systemctl(&["is-active", unit]), "active", "{unit}");
    }
    assert!(!exists(&sandbox, "/usr/lib/systemd/system/appunitd.socket"));
    assert!(!exists(&sandbox, "/usr/bin/appunitd"));
    assert!(!exists(&sandbox, "/run/netns/appunit-shop"));
    assert!(!page(), "no port stays published");
    assert!(exists(&sandbox, "/var/lib/appunit/appunit.db"));
    assert!(exists(&sandbox, "/var/lib/appunit/apps/shop/data"));

    // Reinstalled: the app that ran before runs again.
    install(&sandbox, deb, &["dpkg", "-i"]);
    sandbox.wait_until("the app to run again", |s| {
        s.systemctl(&["is-active", "appunit-shop.service"]) == "active"
    });
    sandbox.wait_until("the app's page", |_| page());
    let shown = appunit_as(&sandbox, "member", &["status", "shop", "--json"]);
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown["status_code"], "30", "{shown}");

    // Purged: no state, unit file, container or image of appunit's is left.
    sandbox.must("dpkg", &["-P", "appunit"]);
    assert!(!exists(&sandbox, "/var/lib/appunit"));
    assert!(!exists(
        &sandbox,
        "/etc/systemd/system/appunit-shop.service"
    ));
    for kind in ["containers", "images"] {
        let left = sandbox.must("ctr", &["--namespace", "appunit", kind, "ls", "-q"]);
        assert_eq!(left.trim(), "", "{kind} left after purge");
    }
    let snapshots = sandbox.must("ctr", &["--namespace", "appunit", "snapshots", "ls"]);
    assert_eq!(snapshots.lines().count(), 1, "snapshots left: {snapshots}");
}

#[test]
fn the_rpm_lists_its_files_and_its_scriptlets_run() {
    let (_, rpm) = packages();
    let output = Command::new("rpm").arg("-qlp").arg(rpm).output().unwrap();
    assert!(
        output.status.success(),
        "rpm -qlp: {}",
        common::text(&output)
    );
    let files = String::from_utf8_lossy(&output.stdout);
    for expected in [
        "/usr/bin/appunitd",
        "/usr/bin/appunit",
        "/usr/bin/appunit-supervisor",
        "/usr/lib/systemd/system/appunitd.service",
        "/usr/lib/systemd/system/appunitd.socket",
        "/usr/lib/systemd/system/appunit-gateway.service",
        "/usr/share/appunit/gateway/nginx.conf",
        "/etc/appunit/gateway.conf",
        "/usr/lib/sysusers.d/appunit.conf",
        "/usr/lib/tmpfiles.d/appunit.conf",
        "/etc/appunit/config.toml",
        "/usr/share/appunit/catalog/wordpress/app.toml",
        "/usr/share/appunit/catalog/wordpress/compose.yaml",
        "/usr/share/man/man1/appunit.1.gz",
    ] {
        assert!(
            files.lines().any(|line| line == expected),
            "{expected} missing from:\n{files}"
        );
    }

    // Its scriptlets, run by Debian's rpm (without an RPM host's dependencies) in a
    // sandbox: installed, the socket listens and serves; erased, state stays.
    let sandbox = Sandbox::boot_with_overlay_root("");
    install(&sandbox, rpm, &["rpm", "-i", "--nodeps"]);
    assert_eq!(sandbox.must("appunit", &["list", "--json"]).trim(), "[]");
    assert_eq!(
        sandbox.systemctl(&["is-active", "appunitd.service"]),
        "active"
    );
    sandbox.must("rpm", &["-e", "appunit"]);
    for unit in ["appunitd.socket", "appunitd.service"] {
        assert_eq!(
            sandbox.systemctl(&["is-active", unit]),
            "inactive",
            "{unit}"
        );
    }
    assert!(!exists(&sandbox, "/usr/bin/appunitd"));
    assert!(exists(&sandbox, "/var/lib/appunit/appunit.db"));
}
