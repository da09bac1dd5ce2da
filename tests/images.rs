//! Image pulls against real containerd 1.6 and a real registry (distribution 2.8).

mod common;

use appunit::config::RegistryConfig;
use appunit::images::progress::Progress;
use appunit::images::{PullError, Puller};
use appunit::runtime::containerd::Containerd;
use common::images::{ContainerdProcess, Layer, Registry, TestImage, build_image, push};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const NAMESPACE: &str = "appunit";

fn two_layer_image() -> TestImage {
    build_image(
        &[
            Layer::busybox(),
            Layer::file("www/index.html", "hello from appunit\n"),
        ],
        &["httpd", "-f", "-h", "/www"],
    )
}

fn registries(entries: &[(&str, RegistryConfig)]) -> BTreeMap<String, RegistryConfig> {
    entries
        .iter()
        .map(|(host, settings)| (host.to_string(), settings.clone()))
        .collect()
}

fn insecure(registry: &Registry) -> BTreeMap<String, RegistryConfig> {
    registries(&[(
        &registry.host,
        RegistryConfig {
            mirrors: vec![],
            insecure: true,
            ..RegistryConfig::default()
        },
    )])
}

async fn puller(
    containerd: &ContainerdProcess,
    registries: BTreeMap<String, RegistryConfig>,
) -> Puller {
    let client = Containerd::connect(&containerd.socket, NAMESPACE)
        .await
        .unwrap();
    Puller::new(client, registries)
}

#[tokio::test]
async fn a_two_layer_image_lands_and_a_second_pull_transfers_nothing() {
    let (containerd, registry) = (ContainerdProcess::start(), Registry::start());
    let image = two_layer_image();
    push(&image, &registry, "test/web:1.0");
    let puller = puller(&containerd, insecure(&registry)).await;
    let name = format!("{}/test/web:1.0", registry.host);

    // Sample the progress while the pull runs: it may only ever go up.
    let progress = Arc::new(Progress::default());
    let sampler = {
        let progress = progress.clone();
        tokio::spawn(async move {
            let mut samples = Vec::new();
            loop {
                samples.push(progress.info());
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                if samples.len() > 100_000 {
                    return samples;
                }
            }
        })
    };
    let pulled = puller
        .pull_all(std::slice::from_ref(&name), &progress)
        .await
        .unwrap();
    sampler.abort();
    assert_eq!(pulled[0].name, name);
    assert_eq!(pulled[0].digest, image.manifest_digest);

    let layer_bytes: u64 = image.layers.iter().map(|(_, size)| size).sum();
    let info = progress.info();
    assert_eq!(
        (info.done_bytes, info.total_bytes, info.percent),
        (layer_bytes, layer_bytes, 100)
    );
    assert_eq!(progress.transferred_bytes(), layer_bytes);

    assert_eq!(
        containerd.ctr(NAMESPACE, &["images", "ls", "-q"]),
        std::slice::from_ref(&name)
    );
    // The chain is unpacked: two committed snapshots, the second on top of the first.
    let snapshots = containerd.ctr(NAMESPACE, &["snapshots", "ls"]);
    let committed: Vec<&String> = snapshots
        .iter()
        .filter(|l| l.trim_end().ends_with("Committed"))
        .collect();
    assert_eq!(committed.len(), 2, "{snapshots:?}");
    let check = containerd.ctr(NAMESPACE, &["images", "check"]);
    assert!(check.iter().any(|l| l.contains("complete")), "{check:?}");
    // And it runs: ctr can mount the top snapshot and find both layers' files.
    let mount = tempfile::tempdir().unwrap();
    containerd.ctr(
        NAMESPACE,
        &["images", "mount", &name, mount.path().to_str().unwrap()],
    );
    let index = std::fs::read_to_string(mount.path().join("www/index.html"));
    let busybox = mount.path().join("bin/busybox").exists();
    containerd.ctr(
        NAMESPACE,
        &["images", "unmount", "--rm", mount.path().to_str().unwrap()],
    );
    assert_eq!(index.unwrap(), "hello from appunit\n");
    assert!(busybox);

    let again = Arc::new(Progress::default());
    let repulled = puller.pull_all(&[name], &again).await.unwrap();
    assert_eq!(repulled, pulled);
    assert_eq!(again.transferred_bytes(), 0);
    assert_eq!(again.info().percent, 100);
    assert!(
        containerd
            .ctr(NAMESPACE, &["leases", "ls", "-q"])
            .is_empty()
    );
}

/// busybox and 24 MiB of noise: big enough to catch its pull in flight.
fn big_image() -> TestImage {
    let noise: Vec<u8> = (0..24 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    build_image(
        &[Layer::busybox(), Layer::file("data/noise", noise)],
        &["sh"],
    )
}

#[tokio::test]
async fn progress_only_goes_up() {
    let (containerd, registry) = (ContainerdProcess::start(), Registry::start());
    let image = big_image();
    push(&image, &registry, "test/big:1");
    let puller = puller(&containerd, insecure(&registry)).await;
    let progress = Arc::new(Progress::default());
    let sampler = {
        let progress = progress.clone();
        tokio::spawn(async move {
            let mut samples = vec![progress.info()];
            while samples.last().unwrap().percent < 100 {
                tokio::time::sleep(std::time::Duration::from_micros(200)).await;
                samples.push(progress.info());
            }
            samples
        })
    };
    puller
        .pull_all(&[format!("{}/test/big:1", registry.host)], &progress)
        .await
        .unwrap();
    let samples = sampler.await.unwrap();
    let in_flight = samples
        .iter()
        .filter(|s| s.percent > 0 && s.percent < 100)
        .count();
    assert!(in_flight > 0, "no sample caught the pull in flight");
    for pair in samples.windows(2) {
        assert!(pair[1].done_bytes >= pair[0].done_bytes && pair[1].percent >= pair[0].percent);
        assert!(pair[1].total_bytes >= pair[0].total_bytes);
    }
}

#[tokio::test]
async fn docker_hub_names_resolve_through_a_mirror() {
    let (containerd, registry) = (ContainerdProcess::start(), Registry::start());
    let image = two_layer_image();
    push(&image, &registry, "library/appunittest:1.0");
    let dead_mirror = format!("http://127.0.0.1:{}", common::images::free_port());
    let settings = RegistryConfig {
        mirrors: vec![dead_mirror, format!("http://{}", registry.host)],
        insecure: false,
        ..RegistryConfig::default()
    };
    let puller = puller(&containerd, registries(&[("docker.io", settings)])).await;
    let progress = Arc::new(Progress::default());
    let pulled = puller
        .pull_all(&["appunittest:1.0".to_string()], &progress)
        .await
        .unwrap();
    assert_eq!(pulled[0].name, "docker.io/library/appunittest:1.0");
    assert_eq!(
        containerd.ctr(NAMESPACE, &["images", "ls", "-q"]),
        ["docker.io/library/appunittest:1.0"]
    );
}

/// A TCP proxy in front of the registry that serves at most `rate` bytes a second and
/// counts what it served: a pull through it can be caught half-way, and whether its
/// downloads go on after that is seen in the count.
struct SlowProxy {
    host: String,
    served: Arc<AtomicU64>,
}

impl SlowProxy {
    async fn start(upstream: String, rate: u64) -> SlowProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let served = Arc::new(AtomicU64::new(0));
        let counter = served.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (upstream, counter) = (upstream.clone(), counter.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let down = async {
                        let mut buffer = vec![0; 64 * 1024];
                        loop {
                            let n = server_read.read(&mut buffer).await?;
                            if n == 0 {
                                return Ok::<(), std::io::Error>(());
                            }
                            client_write.write_all(&buffer[..n]).await?;
                            counter.fetch_add(n as u64, Ordering::Relaxed);
                            let pause = Duration::from_secs_f64(n as f64 / rate as f64);
                            tokio::time::sleep(pause).await;
                        }
                    };
                    // Either side closing ends the connection.
                    tokio::select! {
                        _ = tokio::io::copy(&mut client_read, &mut server_write) => {}
                        _ = down => {}
                    }
                });
            }
        });
        SlowProxy { host, served }
    }

    fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }
}

/// Polls `done` (a blocking check) every 50 ms for up to `limit`; whether it came true.
async fn eventually(limit: Duration, done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

/// A pull aborted half-way, as an AppUninstall aborts an install that is pulling: its
/// downloads stop, its lease and half-written blobs go, and the next pull works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_pull_stops_downloading_and_leaves_nothing() {
    let (containerd, registry) = (ContainerdProcess::start(), Registry::start());
    let image = big_image();
    push(&image, &registry, "test/big:1");
    let total: u64 = image.layers.iter().map(|(_, size)| size).sum();
    // The whole image takes about three seconds through the proxy.
    let proxy = SlowProxy::start(registry.host.clone(), total / 3).await;
    let puller = puller(
        &containerd,
        registries(&[(
            &proxy.host,
            RegistryConfig {
                mirrors: vec![],
                insecure: true,
                ..RegistryConfig::default()
            },
        )]),
    )
    .await;
    let name = format!("{}/test/big:1", proxy.host);
    let progress = Arc::new(Progress::default());
    let pull = tokio::spawn({
        let (puller, name, progress) = (puller.clone(), name.clone(), progress.clone());
        async move { puller.pull_all(&[name], &progress).await }
    });
    let underway = eventually(Duration::from_secs(30), || {
        progress.transferred_bytes() > total / 10
    })
    .await;
    assert!(underway, "the pull did not start: {:?}", progress.info());
    pull.abort();
    assert!(pull.await.unwrap_err().is_cancelled());
    assert!(progress.info().percent < 100, "{:?}", progress.info());

    // What was in flight drains; then nothing more is fetched.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let served = proxy.served();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(proxy.served(), served, "downloads went on after the abort");
    let released = eventually(Duration::from_secs(10), || {
        containerd
            .ctr(NAMESPACE, &["leases", "ls", "-q"])
            .is_empty()
    })
    .await;
    assert!(released, "the lease was kept");
    let active = containerd.ctr(NAMESPACE, &["content", "active"]);
    let ingests = std::fs::read_dir(
        containerd
            .dir
            .path()
            .join("root/io.containerd.content.v1.content/ingest"),
    )
    .map(|dir| dir.count())
    .unwrap_or(0);
    assert!(
        active.len() <= 1 && ingests == 0,
        "half-written blobs were kept: {active:?}, {ingests} ingests"
    );
    let left = containerd.leftovers(NAMESPACE);
    assert!(left.is_empty(), "left behind: {left:?}");

    let pulled = puller
        .pull_all(std::slice::from_ref(&name), &Arc::new(Progress::default()))
        .await
        .unwrap();
    assert_eq!(pulled[0].digest, image.manifest_digest);
    assert!(
        containerd
            .ctr(NAMESPACE, &["leases", "ls", "-q"])
            .is_empty()
    );
}

/// Each failure names the image and its cause, and leaves nothing behind.
#[tokio::test]
async fn failures_are_clean() {
    let (containerd, registry) = (ContainerdProcess::start(), Registry::start());
    let image = two_layer_image();
    push(&image, &registry, "test/web:1.0");
    let puller = puller(&containerd, insecure(&registry)).await;

    let missing = format!("{}/test/web:no-such-tag", registry.host);
    let dead = format!("127.0.0.1:{}/test/web:1.0", common::images::free_port());
    let cases = [(missing.clone(), "unknown"), (dead.clone(), "connect")];
    for (name, cause) in &cases {
        let err = puller
            .pull_all(std::slice::from_ref(name), &Arc::new(Progress::default()))
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, PullError::Registry { .. }), "{text}");
        assert!(
            text.contains(name.as_str()) && text.to_lowercase().contains(cause),
            "{text}"
        );
    }

    // Corrupt the second layer in the registry's storage: same size, other bytes.
    let (digest, _) = &image.layers[1];
    let path = registry.blob_path(digest);
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let name = format!("{}/test/web:1.0", registry.host);
    let err = puller
        .pull_all(std::slice::from_ref(&name), &Arc::new(Progress::default()))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&name) && text.to_lowercase().contains("digest"),
        "{text}"
    );

    let left = containerd.leftovers(NAMESPACE);
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test]
async fn delete_image_keeps_what_another_app_runs() {
    let (containerd, registry) = (ContainerdProcess::start(), Registry::start());
    let image = two_layer_image();
    push(&image, &registry, "test/web:1.0");
    let puller = puller(&containerd, insecure(&registry)).await;
    let name = format!("{}/test/web:1.0", registry.host);
    puller
        .pull_all(std::slice::from_ref(&name), &Arc::new(Progress::default()))
        .await
        .unwrap();

    containerd.ctr(
        NAMESPACE,
        &[
            "containers",
            "create",
            "--label",
            "appunit.app=other",
            &name,
            "other-web",
        ],
    );
    assert!(!puller.remove_unless_used(&name, "mine").await.unwrap());
    assert_eq!(
        containerd.ctr(NAMESPACE, &["images", "ls", "-q"]),
        std::slice::from_ref(&name)
    );

    containerd.ctr(NAMESPACE, &["containers", "rm", "other-web"]);
    containerd.ctr(
        NAMESPACE,
        &[
            "containers",
            "create",
            "--label",
            "appunit.app=mine",
            &name,
            "my-web",
        ],
    );
    // Only the app's own container uses it (its uninstall removes that next).
    assert!(puller.remove_unless_used(&name, "mine").await.unwrap());
    containerd.ctr(NAMESPACE, &["containers", "rm", "my-web"]); // and its snapshot
    // Collect now what the container's snapshot still held when the image went.
    containerd.ctr(NAMESPACE, &["leases", "create", "--id", "collect"]);
    containerd.ctr(NAMESPACE, &["leases", "delete", "--sync", "collect"]);
    let left = containerd.leftovers(NAMESPACE);
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test]
async fn an_unreachable_containerd_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("none.sock");
    let err = Containerd::connect(&socket, NAMESPACE)
        .await
        .err()
        .expect("no containerd there");
    let text = err.to_string();
    assert!(
        text.contains("none.sock") && text.contains("not reachable"),
        "{text}"
    );
}
