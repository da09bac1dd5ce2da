//! App containers on real containerd + runc inside the systemd sandbox: one network
//! namespace, the systemd cgroup driver, FIFO output, a graceful stop.

mod common;

use appunit::config::RegistryConfig;
use appunit::images::Puller;
use appunit::images::progress::Progress;
use appunit::runtime::containerd::Containerd;
use appunit::runtime::oci::{RunSettings, runtime_spec};
use common::images::{Layer, Registry, build_image, push};
use common::sandbox::Sandbox;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tokio::io::AsyncBufReadExt;

#[tokio::test]
async fn a_container_serves_in_the_app_network_and_slice() {
    let sandbox = Sandbox::boot("");
    let registry = Registry::start();
    let image = build_image(
        &[
            Layer::busybox(),
            Layer::file("www/index.html", "served by appunit\n"),
        ],
        &["httpd", "-f", "-h", "/www"],
    );
    push(&image, &registry, "test/web:1");
    let containerd =
        Containerd::connect(&sandbox.path("run/containerd/containerd.sock"), "appunit")
            .await
            .unwrap();
    let settings = RegistryConfig {
        mirrors: vec![],
        insecure: true,
        ..RegistryConfig::default()
    };
    let puller = Puller::new(
        containerd.clone(),
        BTreeMap::from([(registry.host.clone(), settings)]),
    );
    let name = format!("{}/test/web:1", registry.host);
    let pulled = puller
        .pull_all(std::slice::from_ref(&name), &Arc::new(Progress::default()))
        .await
        .unwrap();
    let pulled = &pulled[0];

    let netns = sandbox.run("ip", &["netns", "add", "appunit-t"]);
    assert!(
        netns.status.success(),
        "{}",
        String::from_utf8_lossy(&netns.stderr)
    );
    sandbox.run("ip", &["-n", "appunit-t", "link", "set", "lo", "up"]);
    let run = RunSettings {
        hostname: "web".into(),
        command: Some(vec![
            "sh".into(),
            "-c".into(),
            "echo started web; exec httpd -f -p 8080 -h /www".into(),
        ]),
        netns: "/run/netns/appunit-t".into(),
        cgroups_path: "appunit-t.slice:appunit:t-web".into(),
        ..RunSettings::default()
    };
    let spec = runtime_spec(&pulled.config, &run).unwrap();
    let labels = HashMap::from([("appunit.app".to_string(), "t".to_string())]);
    containerd
        .create_container("t-web", &name, &pulled.chain_id, &spec, labels)
        .await
        .unwrap();

    std::fs::create_dir_all(sandbox.path("run/appunit-test")).unwrap();
    let (out, err) = (
        sandbox.path("run/appunit-test/web.out"),
        sandbox.path("run/appunit-test/web.err"),
    );
    for fifo in [&out, &err] {
        nix::unistd::mkfifo(fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    }
    let reader = tokio::net::unix::pipe::OpenOptions::new()
        .read_write(true)
        .open_receiver(&out)
        .unwrap();
    let _stderr = tokio::net::unix::pipe::OpenOptions::new()
        .read_write(true)
        .open_receiver(&err)
        .unwrap();
    let inside = |p: &str| std::path::PathBuf::from(p);
    let pid = containerd
        .create_task(
            "t-web",
            &inside("/run/appunit-test/web.out"),
            &inside("/run/appunit-test/web.err"),
        )
        .await
        .unwrap();
    assert!(pid > 0);
    containerd.start_task("t-web").await.unwrap();

    let mut lines = tokio::io::BufReader::new(reader).lines();
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), lines.next_line()).await;
    assert_eq!(first.unwrap().unwrap().as_deref(), Some("started web"));

    // Reachable inside the app's network namespace, and nowhere else.
    let mut page = String::new();
    for _ in 0..50 {
        let fetched = sandbox.run(
            "ip",
            &[
                "netns",
                "exec",
                "appunit-t",
                "busybox",
                "wget",
                "-qO-",
                "http://127.0.0.1:8080/",
            ],
        );
        page = String::from_utf8_lossy(&fetched.stdout).to_string();
        if fetched.status.success() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(page, "served by appunit\n");
    // The container runs as a scope in the app's slice (runc's systemd cgroup driver).
    assert_eq!(
        sandbox.systemctl(&["is-active", "appunit-t-web.scope"]),
        "active"
    );
    let slice = sandbox.systemctl(&["status", "appunit-t.slice"]);
    assert!(slice.contains("appunit-t-web.scope"), "{slice}");

    let mut waiter = {
        let containerd = containerd.clone();
        tokio::spawn(async move { containerd.wait_task("t-web").await })
    };
    // httpd as PID 1 of its namespace ignores SIGTERM: after a grace period, SIGKILL.
    containerd.kill_task("t-web", 15).await.unwrap();
    let grace = tokio::time::timeout(std::time::Duration::from_secs(1), &mut waiter).await;
    assert!(
        grace.is_err(),
        "PID 1 without a handler should outlive SIGTERM"
    );
    containerd.kill_task("t-web", 9).await.unwrap();
    let status = tokio::time::timeout(std::time::Duration::from_secs(10), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(status, 137, "killed by SIGKILL");
    containerd.delete_container("t-web").await.unwrap();
    let containers = sandbox.run("ctr", &["-n", "appunit", "containers", "ls", "-q"]);
    assert!(
        String::from_utf8_lossy(&containers.stdout)
            .trim()
            .is_empty()
    );
    assert_ne!(
        sandbox.systemctl(&["is-active", "appunit-t-web.scope"]),
        "active"
    );
}
