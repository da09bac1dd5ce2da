//! The confinement of app containers, seen from inside them on the real runtime: the
//! capabilities, seccomp filter, no-new-privileges, /dev/shm, rlimits and masked and
//! read-only /proc of containerd's and Docker's defaults; volumes seeded from an image
//! whose volume paths link to /etc copy nothing of the host; a setuid program planted
//! in a volume gives the host's users no root; and on a systemd-resolved host the
//! containers resolve names through its upstream servers.

mod common;

use common::host::Host;
use common::images::{Layer, build_image_in};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The capability bits of containerd's default set (CHOWN, DAC_OVERRIDE, FOWNER,
/// FSETID, KILL, SETGID, SETUID, SETPCAP, NET_BIND_SERVICE, NET_RAW, SYS_CHROOT,
/// MKNOD, AUDIT_WRITE, SETFCAP), as /proc/PID/status shows them.
const DEFAULT_CAPS: &str = "00000000a80425fb";

/// The test's DNS server, on the loopback of the sandbox's own network namespace (this
/// kernel has no dummy interfaces): containers reach it through their bridge.
const DNS_ADDRESS: &str = "10.253.0.1";

/// Answers every A question for `probe.test.` with 10.1.2.3, and others with NXDOMAIN.
const DNS_SERVER: &str = r#"
import socket, struct, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((sys.argv[1], 53))
while True:
    query, peer = sock.recvfrom(512)
    ident, _, qdcount = struct.unpack("!HHH", query[:6])
    end = 12
    while query[end] != 0:
        end += query[end] + 1
    question = query[12:end + 5]
    name = query[12:end + 1]
    qtype = struct.unpack("!H", query[end + 1:end + 3])[0]
    if name == b"\x05probe\x04test\x00" and qtype == 1:
        answer = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + bytes([10, 1, 2, 3])
        header = struct.pack("!HHHHHH", ident, 0x8180, 1, 1, 0, 0)
    elif name == b"\x05probe\x04test\x00":
        answer = b""
        header = struct.pack("!HHHHHH", ident, 0x8180, 1, 0, 0, 0)
    else:
        answer = b""
        header = struct.pack("!HHHHHH", ident, 0x8183, 1, 0, 0, 0)
    sock.sendto(header + question + answer, peer)
"#;

/// The probe's image carries the host's `id` (never run inside: it is what the
/// container plants as a setuid program); the evil one links its volume paths to
/// /etc, absolutely and relatively, past its root.
fn publish_probe_images(host: &Host) {
    let sandbox = &host.sandbox;
    let images = sandbox.path("run/images");
    let id = std::fs::read("/usr/bin/id").unwrap();
    let probe = build_image_in(
        &images,
        &[
            Layer::busybox(),
            Layer {
                files: vec![("opt/id".into(), id, 0o755)],
                links: Vec::new(),
            },
        ],
        &["sh"],
    );
    sandbox.push(probe.layout.path(), "test/probe:1");
    let evil = build_image_in(
        &images,
        &[
            Layer::busybox(),
            Layer {
                files: vec![("etc/image-marker".into(), b"the image's\n".to_vec(), 0o644)],
                links: vec![
                    ("srv/abs".into(), "/etc".into()),
                    ("srv/rel".into(), "../../../../../../etc".into()),
                ],
            },
        ],
        &["sh"],
    );
    sandbox.push(evil.layout.path(), "test/evil:1");
}

/// Makes the sandbox look like a systemd-resolved host: /etc/resolv.conf names only
/// the 127.0.0.53 stub, and /run/systemd/resolve/resolv.conf the test's DNS server.
fn resolved_style_dns(host: &Host) {
    let sandbox = &host.sandbox;
    let address = format!("{DNS_ADDRESS}/32");
    let out = sandbox.run("ip", &["addr", "add", &address, "dev", "lo"]);
    assert!(out.status.success(), "{out:?}");
    std::fs::write(sandbox.path("run/dns.py"), DNS_SERVER).unwrap();
    sandbox.service(
        "test-dns",
        &["/usr/bin/python3", "/run/dns.py", DNS_ADDRESS],
    );
    sandbox.wait_until("the test DNS server", |s| {
        let out = s.run("busybox", &["nslookup", "probe.test", DNS_ADDRESS]);
        String::from_utf8_lossy(&out.stdout).contains("10.1.2.3")
    });
    std::fs::create_dir_all(sandbox.path("run/systemd/resolve")).unwrap();
    std::fs::write(
        sandbox.path("run/systemd/resolve/resolv.conf"),
        format!("nameserver {DNS_ADDRESS}\n"),
    )
    .unwrap();
    std::fs::write(
        sandbox.path("run/stub-resolv.conf"),
        "# systemd-resolved's stub\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n",
    )
    .unwrap();
    // Only in the sandbox's mount namespace, which propagates nothing to the host.
    let out = sandbox.run(
        "mount",
        &["--bind", "/run/stub-resolv.conf", "/etc/resolv.conf"],
    );
    assert!(out.status.success(), "{out:?}");
}

/// A mount's line of /proc/mounts, by its mount point.
fn mount_line<'a>(mounts: &'a str, point: &str) -> &'a str {
    mounts
        .lines()
        .find(|line| line.split(' ').nth(1) == Some(point))
        .unwrap_or_else(|| panic!("{point} is not mounted:\n{mounts}"))
}

fn options(line: &str) -> Vec<&str> {
    line.split(' ')
        .nth(3)
        .unwrap_or_default()
        .split(',')
        .collect()
}

#[tokio::test]
async fn containers_run_confined_as_containerd_and_docker_confine_them() {
    let host = Host::boot();
    publish_probe_images(&host);
    resolved_style_dns(&host);
    let reply = host
        .call(
            "AppInstall",
            "app_name=probe&customer_app_name=probe&app_version=1",
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    host.running("probe", Duration::from_secs(90)).await;
    let data = host.sandbox.path("appunit/apps/probe/data");
    let out = data.join("out");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !out.join("done").exists() {
        assert!(
            Instant::now() < deadline,
            "the probe wrote no report:\n{}",
            host.journal("appunit-probe.service")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap();

    // Capabilities, seccomp and no_new_privs of the container's own process.
    let status = read("status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no {name} in:\n{status}"))
    };
    assert_eq!(field("CapEff"), DEFAULT_CAPS, "{status}");
    assert_eq!(field("CapBnd"), DEFAULT_CAPS, "{status}");
    assert_eq!(field("Seccomp"), "2", "a filter is installed: {status}");
    assert_eq!(field("NoNewPrivs"), "1", "{status}");
    assert_eq!(read("nofile").trim(), "1024");

    // The filter refuses what needs CAP_SYS_ADMIN in Docker's profile: new user and
    // mount namespaces (a user namespace needs no capability, only the filter stops it).
    let unshare = read("unshare");
    assert!(
        unshare.contains("Operation not permitted") && !unshare.contains("exit 0"),
        "{unshare}"
    );

    let mounts = read("mounts");
    let shm = mount_line(&mounts, "/dev/shm");
    assert!(options(shm).contains(&"size=65536k"), "{shm}");
    let df = read("shm");
    assert!(
        df.lines()
            .nth(1)
            .is_some_and(|l| l.split_whitespace().nth(1) == Some("65536")),
        "{df}"
    );
    // Masked: something (runc binds /dev/null, or a read-only tmpfs) is mounted over
    // each of containerd's masked paths that this kernel has (/proc/kcore only where
    // the kernel is built with it).
    let masked = read("masked");
    assert!(masked.lines().count() >= 2, "{masked}");
    for path in masked.lines() {
        mount_line(&mounts, path);
    }
    let proc_sys = mount_line(&mounts, "/proc/sys");
    assert!(options(proc_sys).contains(&"ro"), "{proc_sys}");
    let procsys = read("procsys");
    assert!(
        procsys.contains("Read-only file system") && !procsys.contains("exit 0"),
        "{procsys}"
    );
    // Volumes and the other binds carry nosuid and nodev.
    for point in ["/out", "/etc/hosts", "/etc/resolv.conf"] {
        let line = mount_line(&mounts, point);
        let options = options(line);
        assert!(
            options.contains(&"nosuid") && options.contains(&"nodev"),
            "{line}"
        );
    }

    // DNS through the upstream servers of the sandbox's systemd-resolved.
    let dns = read("dns");
    assert!(dns.contains("10.1.2.3"), "{dns}");

    // Volumes seeded from links to /etc hold the image's /etc, nothing of the host's.
    for volume in ["etcabs", "etcrel"] {
        let mut names: Vec<String> = std::fs::read_dir(data.join(volume))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["image-marker"], "{volume}");
    }

    // The setuid-root program the container planted gives the host's users no root;
    // a copy of it where they can reach it does: nothing else stops it.
    use std::os::unix::fs::MetadataExt;
    let planted = out.join("id");
    let meta = std::fs::metadata(&planted).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o4000), (0, 0o4000));
    // runuser changes every uid, which drops all capabilities (setpriv keeps them).
    let as_nobody = |path: &str| {
        host.sandbox
            .run("runuser", &["-u", "nobody", "--", path, "-u"])
    };
    let inside = "/var/lib/appunit/apps/probe/data/out/id";
    let run = as_nobody(inside);
    assert!(
        !run.status.success() && String::from_utf8_lossy(&run.stdout).trim() != "0",
        "{run:?}"
    );
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("Permission denied"),
        "{run:?}"
    );
    // /run, not the state folder: that is root's alone (0700).
    let control: PathBuf = host.sandbox.path("run/control-id");
    let copied = host.sandbox.run("cp", &["-p", inside, "/run/control-id"]);
    assert!(copied.status.success(), "{copied:?}");
    assert!(control.exists());
    let run = as_nobody("/run/control-id");
    assert_eq!(
        String::from_utf8_lossy(&run.stdout).trim(),
        "0",
        "the control copy should run as root: {run:?}"
    );
}
