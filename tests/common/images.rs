//! Real containerd and a real registry for the tests, each in its own temporary folder,
//! and OCI test images built from busybox-static, pushed with skopeo.

use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// A containerd of the test's own: own root, state and socket.
pub struct ContainerdProcess {
    pub dir: TempDir,
    pub socket: PathBuf,
    child: Child,
}

impl ContainerdProcess {
    pub fn start() -> ContainerdProcess {
        let dir = tempfile::Builder::new()
            .prefix("appunit-ctd")
            .tempdir()
            .unwrap();
        let root = dir.path();
        let socket = root.join("containerd.sock");
        let config = format!(
            r#"version = 2
root = "{root}/root"
state = "{root}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{socket}"
[ttrpc]
  address = "{socket}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"
"#,
            root = root.display(),
            socket = socket.display()
        );
        std::fs::write(root.join("config.toml"), config).unwrap();
        let log = std::fs::File::create(root.join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(root.join("config.toml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("containerd is installed (scripts/test installs it)");
        wait_for("containerd", || socket.exists());
        ContainerdProcess { dir, socket, child }
    }

    /// `ctr -n NAMESPACE ARGS…`, its stdout lines; panics when ctr fails.
    pub fn ctr(&self, namespace: &str, args: &[&str]) -> Vec<String> {
        let output = Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(["--namespace", namespace])
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "ctr {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Images, content, snapshots and leases in `namespace`: all empty after a clean
    /// failure or removal.
    pub fn leftovers(&self, namespace: &str) -> Vec<String> {
        let mut left = Vec::new();
        for (what, args) in [
            ("image", &["images", "ls", "-q"][..]),
            ("content", &["content", "ls", "-q"][..]),
            ("snapshot", &["snapshots", "ls"][..]),
            ("lease", &["leases", "ls", "-q"][..]),
        ] {
            let lines = self.ctr(namespace, args);
            // `snapshots ls` prints a header line even when there are none.
            let skip = usize::from(what == "snapshot");
            left.extend(lines.into_iter().skip(skip).map(|l| format!("{what}: {l}")));
        }
        left
    }
}

impl Drop for ContainerdProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// distribution 2.8 (`docker-registry`) on a free loopback port.
pub struct Registry {
    pub dir: TempDir,
    pub host: String,
    child: Child,
}

impl Registry {
    pub fn start() -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("appunit-reg")
            .tempdir()
            .unwrap();
        let port = free_port();
        let host = format!("127.0.0.1:{port}");
        let config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n",
            dir.path().join("data").display()
        );
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry is installed (scripts/test installs it)");
        wait_for("the registry", || {
            http_get_status(&host, "/v2/") == Some(200)
        });
        Registry { dir, host, child }
    }

    /// The stored bytes of a blob, to corrupt them.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One layer: files (path, contents, mode) and symlinks (path, target).
#[derive(Default, Clone)]
pub struct Layer {
    pub files: Vec<(String, Vec<u8>, u32)>,
    pub links: Vec<(String, String)>,
}

impl Layer {
    /// busybox-static as /bin/busybox, with the applets the tests use as links.
    pub fn busybox() -> Layer {
        let busybox = std::fs::read("/bin/busybox").expect("busybox-static is installed");
        let links = [
            "sh", "httpd", "sleep", "cat", "echo", "nc", "wget", "ls", "test", "true",
        ]
        .iter()
        .map(|applet| (format!("bin/{applet}"), "busybox".to_string()))
        .collect();
        Layer {
            files: vec![("bin/busybox".into(), busybox, 0o755)],
            links,
        }
    }

    pub fn file(path: &str, contents: impl Into<Vec<u8>>) -> Layer {
        Layer {
            files: vec![(path.into(), contents.into(), 0o644)],
            links: Vec::new(),
        }
    }

    fn tar(&self) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut dirs = std::collections::BTreeSet::new();
        let paths = self
            .files
            .iter()
            .map(|f| &f.0)
            .chain(self.links.iter().map(|l| &l.0));
        for path in paths {
            let mut parent = Path::new(path).parent();
            while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
                dirs.insert(dir.to_path_buf());
                parent = dir.parent();
            }
        }
        for dir in dirs {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            builder
                .append_data(&mut header, &dir, std::io::empty())
                .unwrap();
        }
        for (path, contents, mode) in &self.files {
            let mut header = tar::Header::new_gnu();
            header.set_mode(*mode);
            header.set_size(contents.len() as u64);
            builder
                .append_data(&mut header, path, contents.as_slice())
                .unwrap();
        }
        for (path, target) in &self.links {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            header.set_mode(0o777);
            builder.append_link(&mut header, path, target).unwrap();
        }
        builder.into_inner().unwrap()
    }
}

/// A built image: its layers' compressed digests and sizes, and the manifest digest.
pub struct TestImage {
    pub layout: TempDir,
    pub manifest_digest: String,
    pub layers: Vec<(String, u64)>,
}

/// Writes an OCI image layout with `layers` and `cmd`.
pub fn build_image(layers: &[Layer], cmd: &[&str]) -> TestImage {
    build_image_in(&std::env::temp_dir(), layers, cmd)
}

/// The same, in a folder below `parent` (one a sandbox can see).
pub fn build_image_in(parent: &Path, layers: &[Layer], cmd: &[&str]) -> TestImage {
    let layout = tempfile::Builder::new()
        .prefix("appunit-img")
        .tempdir_in(parent)
        .unwrap();
    let blobs = layout.path().join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
        std::fs::write(blobs.join(&digest[7..]), bytes).unwrap();
        (digest, bytes.len() as u64)
    };
    let mut diff_ids = Vec::new();
    let mut layer_descriptors = Vec::new();
    let mut layer_list = Vec::new();
    for layer in layers {
        let tar = layer.tar();
        diff_ids.push(format!("sha256:{}", hex::encode(Sha256::digest(&tar))));
        let mut gzip = GzEncoder::new(Vec::new(), Compression::fast());
        gzip.write_all(&tar).unwrap();
        let (digest, size) = put(&gzip.finish().unwrap());
        layer_descriptors.push(json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": digest, "size": size,
        }));
        layer_list.push((digest, size));
    }
    let config = json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": cmd, "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let (config_digest, config_size) = put(&serde_json::to_vec(&config).unwrap());
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": layer_descriptors,
    });
    let (manifest_digest, manifest_size) = put(&serde_json::to_vec(&manifest).unwrap());
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": manifest_size,
            "annotations": {"org.opencontainers.image.ref.name": "latest"},
        }],
    });
    std::fs::write(
        layout.path().join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    std::fs::write(
        layout.path().join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    TestImage {
        layout,
        manifest_digest,
        layers: layer_list,
    }
}

/// `skopeo copy` the layout to `registry` as `name` (repository:tag), unchanged.
pub fn push(image: &TestImage, registry: &Registry, name: &str) {
    let output = Command::new("skopeo")
        .args([
            "--insecure-policy",
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            "--preserve-digests",
        ])
        .arg(format!("oci:{}:latest", image.layout.path().display()))
        .arg(format!("docker://{}/{name}", registry.host))
        .output()
        .expect("skopeo is installed (scripts/test installs it)");
    assert!(
        output.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for(what: &str, ready: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready() {
        assert!(Instant::now() < deadline, "{what} did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A bare HTTP/1.0 GET on loopback: the status code, if anything answered.
fn http_get_status(host: &str, path: &str) -> Option<u16> {
    let mut stream = std::net::TcpStream::connect(host).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").ok()?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).ok()?;
    reply.split(' ').nth(1)?.parse().ok()
}
