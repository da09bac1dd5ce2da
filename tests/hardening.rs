//! The host side of hardening, on real installs in systemd sandboxes: the state tree's
//! modes, the units' exposure as `systemd-analyze security` scores it, and the gateway
//! as the only web identity that may open appunitd's socket.

mod common;

use common::host::Host;
use common::sandbox::{APPUNITD_INSIDE, REPO_INSIDE, SUPERVISOR_INSIDE, Sandbox};
use std::time::Duration;

/// The overall exposure the README records for each unit (section "Hardening"): a
/// change that makes a unit more exposed fails here, and must be argued there.
const DAEMON_EXPOSURE: f64 = 5.0;
const APP_EXPOSURE: f64 = 4.4;
const GATEWAY_EXPOSURE: f64 = 1.4;

/// `systemd-analyze security UNIT`'s overall exposure level (0.0 safest … 10.0).
fn exposure(sandbox: &Sandbox, unit: &str) -> f64 {
    let report = sandbox.run("systemd-analyze", &["security", "--no-pager", unit]);
    let report = common::text(&report);
    let prefix = format!("Overall exposure level for {unit}: ");
    report
        .lines()
        .find_map(|line| line.split_once(&prefix))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no overall exposure in:\n{report}"))
}

#[tokio::test]
async fn an_install_leaves_a_root_only_state_tree_and_hardened_units() {
    let host = Host::boot();
    let reply = host
        .call(
            "AppInstall",
            "app_name=duo&customer_app_name=vault&app_version=1",
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    host.running("vault", Duration::from_secs(90)).await;

    // What holds secrets or data is root's alone; the hosts file is for any container
    // user. Under the daemon's UMask=0077, that 0644 was set, not requested.
    let sandbox = &host.sandbox;
    let app = "/var/lib/appunit/apps/vault";
    for (path, mode) in [
        ("/var/lib/appunit", "700"),
        ("/var/lib/appunit/apps", "700"),
        (app, "700"),
        (&format!("{app}/data"), "700"),
        (&format!("{app}/credentials.json"), "600"),
        (&format!("{app}/plan.json"), "600"),
        (&format!("{app}/compose.yaml"), "600"),
        (&format!("{app}/hosts"), "644"),
        ("/var/lib/appunit/appunit.db", "600"),
    ] {
        assert_eq!(
            sandbox.must("stat", &["-c", "%a %U", path]).trim(),
            format!("{mode} root"),
            "{path}"
        );
    }
    assert_eq!(
        sandbox.systemctl(&["show", "-P", "UMask", "appunitd.service"]),
        "0077"
    );

    // The unit runs the supervisor installed beside appunitd.
    let unit = std::fs::read_to_string(sandbox.path("units/appunit-vault.service")).unwrap();
    assert!(
        unit.contains(&format!("ExecStart={SUPERVISOR_INSIDE} --config")),
        "{unit}"
    );

    // Hardened, and still doing its work: the app above runs under these units.
    let daemon = exposure(sandbox, "appunitd.service");
    let app = exposure(sandbox, "appunit-vault.service");
    assert!(
        daemon <= DAEMON_EXPOSURE,
        "appunitd.service: {daemon} > {DAEMON_EXPOSURE}"
    );
    assert!(
        app <= APP_EXPOSURE,
        "appunit-vault.service: {app} > {APP_EXPOSURE}"
    );
}

/// Shipped files into the overlay root of `sandbox`, where the package puts them.
fn install_shipped(sandbox: &Sandbox) {
    let service = std::fs::read_to_string(format!("{}/systemd/appunitd.service", common::REPO))
        .unwrap()
        .replace("/usr/bin/appunitd", APPUNITD_INSIDE);
    std::fs::write(sandbox.path("units/appunitd.service"), service).unwrap();
    for (from, to, mode) in [
        ("systemd/appunitd.socket", "/etc/systemd/system/", "644"),
        (
            "systemd/appunit-gateway.service",
            "/etc/systemd/system/",
            "644",
        ),
        (
            "systemd/appunit.sysusers",
            "/usr/lib/sysusers.d/appunit.conf",
            "644",
        ),
        (
            "packaging/nginx/gateway.conf",
            "/usr/share/appunit/gateway/nginx.conf",
            "644",
        ),
        (
            "packaging/nginx/appunit.conf",
            "/etc/appunit/gateway.conf",
            "644",
        ),
    ] {
        sandbox.must(
            "install",
            &["-D", "-m", mode, &format!("{REPO_INSIDE}/{from}"), to],
        );
    }
    sandbox.must("systemd-sysusers", &["appunit.conf"]);
    sandbox.must("touch", &["/etc/appunit/config.toml"]);
    // The operator's password, root's alone (user admin, password s3cret).
    sandbox.must(
        "sh",
        &[
            "-c",
            "umask 077 && echo 'admin:{PLAIN}s3cret' > /etc/appunit/gateway.htpasswd",
        ],
    );
    sandbox.must("systemctl", &["daemon-reload"]);
}

/// `curl` inside the sandbox: (HTTP status, body).
fn curl(sandbox: &Sandbox, args: &[&str]) -> (String, String) {
    let mut all = vec!["-s", "-w", "\n%{http_code}"];
    all.extend_from_slice(args);
    let out = String::from_utf8_lossy(&sandbox.run("curl", &all).stdout).to_string();
    let (body, status) = out.rsplit_once('\n').unwrap_or(("", &out));
    (status.to_string(), body.to_string())
}

#[test]
fn only_the_gateway_opens_the_socket_and_it_asks_for_a_password() {
    let sandbox = Sandbox::boot_with_overlay_root("");
    install_shipped(&sandbox);
    sandbox.must(
        "systemctl",
        &["start", "appunitd.socket", "appunit-gateway.service"],
    );
    let api = "http://127.0.0.1:8080/api/AppList";
    sandbox.wait_until("the gateway", |s| curl(s, &[api]).0 != "000");

    // The gateway's own user is the socket group's only member.
    assert_eq!(
        sandbox
            .must("stat", &["-c", "%a %G", "/run/appunit/appunit.sock"])
            .trim(),
        "660 appunit"
    );
    let group = sandbox
        .must("getent", &["group", "appunit"])
        .trim()
        .to_string();
    assert_eq!(group.rsplit(':').next(), Some("appunit-gateway"), "{group}");
    let pid = sandbox.systemctl(&["show", "-P", "MainPID", "appunit-gateway.service"]);
    assert_eq!(
        sandbox.must("ps", &["-o", "user=", "-p", &pid]).trim(),
        "appunit-gateway"
    );

    // The host's web server, and every PHP or CGI program run as it, is refused by the
    // kernel: it cannot go around the gateway's authentication.
    let connect = "import socket\n\
        try:\n    socket.socket(socket.AF_UNIX).connect('/run/appunit/appunit.sock'); print('connected')\n\
        except OSError as e:\n    print(e.errno)";
    let www = sandbox.run(
        "runuser",
        &["-u", "www-data", "--", "python3", "-c", connect],
    );
    assert_eq!(
        String::from_utf8_lossy(&www.stdout).trim(),
        (nix::errno::Errno::EACCES as i32).to_string(),
        "{}",
        common::text(&www)
    );

    // Through the gateway: a password, then the API.
    let journal = || {
        common::text(&sandbox.run(
            "systemctl",
            &[
                "status",
                "--no-pager",
                "-l",
                "-n",
                "30",
                "appunit-gateway.service",
            ],
        ))
    };
    assert_eq!(curl(&sandbox, &[api]).0, "401", "{}", journal());
    assert_eq!(
        curl(&sandbox, &["-u", "admin:wrong", api]).0,
        "401",
        "{}",
        journal()
    );
    let (status, body) = curl(&sandbox, &["-u", "admin:s3cret", api]);
    assert_eq!(status, "200", "{body}\n{}", journal());
    // The same answer as the socket gives root.
    let direct = curl(
        &sandbox,
        &[
            "--unix-socket",
            "/run/appunit/appunit.sock",
            "http://appunit/AppList",
        ],
    );
    assert_eq!((status, body), direct);

    assert!(
        exposure(&sandbox, "appunit-gateway.service") <= GATEWAY_EXPOSURE,
        "appunit-gateway.service is more exposed than the README says"
    );
}
