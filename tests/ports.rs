//! Published ports on real containerd, systemd and CNI: every `ports` entry is claimed
//! (a clash is a reason naming the holder), a host IP is kept, and apps cannot reach
//! each other's unpublished ports.

mod common;

use common::host::{Host, settled};
use std::time::Duration;

async fn install(host: &Host, app_name: &str, app_id: &str) -> serde_json::Value {
    let query = format!("app_name={app_name}&customer_app_name={app_id}&app_version=1");
    let reply = host.call("AppInstall", &query).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let (status, seen) = host.watch(app_id, Duration::from_secs(120), settled).await;
    eprintln!("{app_id}: {seen:?}");
    status
}

/// `curl` of a URL from the sandbox (the host), or from an app's network namespace.
fn fetch(host: &Host, from_app: Option<&str>, url: &str) -> Option<String> {
    let curl = ["curl", "-sf", "-m", "3", url];
    let out = match from_app {
        Some(app_id) => {
            let namespace = format!("appunit-{app_id}");
            let mut args = vec!["netns", "exec", namespace.as_str()];
            args.extend(curl);
            host.sandbox.run("ip", &args)
        }
        None => host.sandbox.run(curl[0], &curl[1..]),
    };
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).to_string())
}

/// The app's address on appunit's bridge.
fn app_address(host: &Host, app_id: &str) -> String {
    let namespace = format!("appunit-{app_id}");
    let out = host.sandbox.run(
        "ip",
        &["-n", &namespace, "-4", "-o", "addr", "show", "eth0"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let address = text
        .split_whitespace()
        .skip_while(|word| *word != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next())
        .map(str::to_string);
    address.unwrap_or_else(|| panic!("no address of {app_id}: {text}"))
}

#[tokio::test]
async fn every_port_is_claimed_kept_on_its_address_and_apps_are_apart() {
    let host = Host::boot();
    let first = install(&host, "ported", "pa").await;
    assert_eq!(first["status"], "running", "{first}");
    let web_port = first["running_info"]["port"].as_u64().unwrap();

    // The loopback-only port answers on loopback, and not on another address of the host.
    assert_eq!(
        fetch(&host, None, "http://127.0.0.1:17070/").as_deref(),
        Some("ported pa\n")
    );
    let bridge_side = host
        .sandbox
        .run("ip", &["-4", "-o", "addr", "show", "dev", "appunit0"]);
    let bridge_text = String::from_utf8_lossy(&bridge_side.stdout).to_string();
    let gateway = bridge_text
        .split_whitespace()
        .skip_while(|word| *word != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next())
        .unwrap_or_else(|| panic!("no bridge address: {bridge_text}"))
        .to_string();
    assert_eq!(
        fetch(&host, None, &format!("http://{gateway}:{web_port}/")).as_deref(),
        Some("ported pa\n"),
        "the web port is published on every address"
    );
    assert_eq!(
        fetch(&host, None, &format!("http://{gateway}:17070/")),
        None,
        "127.0.0.1:17070 must not be published on {gateway}"
    );
    let nat = host.sandbox.run("iptables-save", &["-t", "nat"]);
    let nat = String::from_utf8_lossy(&nat.stdout).to_string();
    assert!(
        nat.lines()
            .any(|l| l.contains("--dport 17071") && l.contains("udp")),
        "the UDP port is published:\n{nat}"
    );

    // A second app of the same catalog entry cannot have the fixed ports.
    let second = install(&host, "ported", "pb").await;
    assert_eq!(second["status"], "error", "{second}");
    let detail = second["status_reason"]["Detail"].as_str().unwrap();
    assert!(
        detail.contains("127.0.0.1:17070/tcp") && detail.contains("app pa"),
        "{detail}"
    );
    assert!(
        host.leftovers("pb").is_empty(),
        "{:?}",
        host.leftovers("pb")
    );

    // A program of the host that listens on a fixed port holds it too.
    let reply = host.call("AppUninstall", "app_id=pa").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let reply = host.call("AppUninstall", "app_id=pb").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    host.sandbox.service(
        "holder.service",
        &[
            "python3",
            "-c",
            "import socket, time; s = socket.socket(); s.bind(('127.0.0.1', 17070)); s.listen(); time.sleep(3600)",
        ],
    );
    host.sandbox.wait_until("the holder to listen", |s| {
        let out = s.run("busybox", &["netstat", "-ltn"]);
        String::from_utf8_lossy(&out.stdout).contains(":17070")
    });
    let held = install(&host, "ported", "pc").await;
    assert_eq!(held["status"], "error", "{held}");
    let detail = held["status_reason"]["Detail"].as_str().unwrap();
    assert!(detail.contains("listening on the host"), "{detail}");
    host.sandbox.systemctl(&["stop", "holder.service"]);
    let reply = host.call("AppUninstall", "app_id=pc").await;
    assert_eq!(reply.status, 200, "{reply:?}");

    // Two apps: neither reaches the other's unpublished port, both reach published ones.
    let ported = install(&host, "ported", "pd").await;
    assert_eq!(ported["status"], "running", "{ported}");
    let duo = install(&host, "duo", "dd").await;
    assert_eq!(duo["status"], "running", "{duo}");
    let duo_address = app_address(&host, "dd");
    assert!(
        fetch(&host, None, &format!("http://{duo_address}:7000/owner")).is_some(),
        "the host reaches the app's own address"
    );
    assert_eq!(
        fetch(
            &host,
            Some("pd"),
            &format!("http://{duo_address}:7000/owner")
        ),
        None,
        "app pd reached app dd's unpublished port 7000"
    );
    let duo_port = duo["running_info"]["port"].as_u64().unwrap();
    assert_eq!(
        fetch(&host, Some("pd"), &format!("http://{gateway}:{duo_port}/")).as_deref(),
        Some("duo dd\n"),
        "published ports stay reachable from other apps"
    );
}
