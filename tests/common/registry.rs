//! Registries that speak like Docker Hub and private ones, inside a sandbox's network
//! namespace: distribution 2.8 with bearer-token auth (and the token service of
//! tests/fixtures/registry), with basic auth, a fault proxy and a hostile registry.
//! Each runs as a service of the sandbox's systemd, on a loopback port of its own.

use super::sandbox::{REPO_INSIDE, Sandbox};
use std::path::PathBuf;
use std::process::Command;

const FIXTURES_INSIDE: &str = "tests/fixtures/registry";

/// A registry that wants credentials, and the account it accepts.
pub struct AuthRegistry {
    /// `127.0.0.1:PORT`, as a config key and an image reference's host.
    pub host: String,
    pub user: String,
    pub password: String,
}

impl AuthRegistry {
    /// distribution with `auth: token` on `port`, its token service on `port + 1`.
    /// Anonymous clients may pull (but not `private/*`); the account may push too.
    pub fn token(sandbox: &Sandbox, port: u16) -> AuthRegistry {
        let registry = AuthRegistry::account(port);
        let dir = registry_dir(sandbox, port);
        let openssl = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=appunit-test-token"])
            .arg("-keyout")
            .arg(dir.join("key.pem"))
            .arg("-out")
            .arg(dir.join("cert.pem"))
            .output()
            .unwrap();
        assert!(openssl.status.success(), "openssl: {openssl:?}");
        std::fs::write(
            dir.join("users"),
            format!("{}:{}\n", registry.user, registry.password),
        )
        .unwrap();
        let inside = format!("/run/registry-{port}");
        let token_port = (port + 1).to_string();
        sandbox.service(
            &format!("test-token-{port}"),
            &[
                "/usr/bin/python3",
                &format!("{REPO_INSIDE}/{FIXTURES_INSIDE}/token_service.py"),
                &token_port,
                &format!("{inside}/key.pem"),
                &format!("{inside}/cert.pem"),
                "appunit-test-issuer",
                "appunit-test",
                &format!("{inside}/users"),
            ],
        );
        let auth = format!(
            "auth:\n  token:\n    realm: http://127.0.0.1:{token_port}/token\n    service: appunit-test\n    issuer: appunit-test-issuer\n    rootcertbundle: {inside}/cert.pem\n"
        );
        serve(sandbox, port, &auth);
        registry
    }

    /// distribution with `auth: htpasswd` (bcrypt) on `port`.
    pub fn basic(sandbox: &Sandbox, port: u16) -> AuthRegistry {
        let registry = AuthRegistry::account(port);
        let dir = registry_dir(sandbox, port);
        let htpasswd = Command::new("htpasswd")
            .args(["-Bbc"])
            .arg(dir.join("htpasswd"))
            .args([&registry.user, &registry.password])
            .output()
            .expect("htpasswd (apache2-utils) is installed");
        assert!(htpasswd.status.success(), "htpasswd: {htpasswd:?}");
        let auth = format!(
            "auth:\n  htpasswd:\n    realm: appunit-test\n    path: /run/registry-{port}/htpasswd\n"
        );
        serve(sandbox, port, &auth);
        registry
    }

    fn account(port: u16) -> AuthRegistry {
        let password: String = (0..20)
            .map(|_| char::from(b'a' + rand::random_range(0..26u8)))
            .collect();
        AuthRegistry {
            host: format!("127.0.0.1:{port}"),
            user: "appunit-test".into(),
            password,
        }
    }

    /// Pushes an image layout below the sandbox's /run as `name`, with the account.
    pub fn push(&self, sandbox: &Sandbox, layout: &std::path::Path, name: &str) {
        let creds = format!("{}:{}", self.user, self.password);
        push_to(
            sandbox,
            layout,
            &format!("{}/{name}", self.host),
            &["--dest-creds", &creds],
        );
    }

    /// The config lines that make this registry the plain-HTTP mirror of `upstream`
    /// (e.g. `docker.io`), with its account unless `credentials` is false.
    pub fn mirror_config(&self, upstream: &str, credentials: bool) -> String {
        let account = if credentials {
            format!(
                "username = \"{}\"\npassword = \"{}\"\n",
                self.user, self.password
            )
        } else {
            String::new()
        };
        format!(
            "[registries.\"{upstream}\"]\nmirrors = [\"http://{host}\"]\n[registries.\"{host}\"]\ninsecure = true\n{account}",
            host = self.host
        )
    }
}

/// Pushes an OCI layout below the sandbox's /run to `target` (`HOST/NAME:TAG`).
pub fn push_to(sandbox: &Sandbox, layout: &std::path::Path, target: &str, extra: &[&str]) {
    let inside = PathBuf::from("/run").join(layout.strip_prefix(sandbox.path("run")).unwrap());
    let source = format!("oci:{}:latest", inside.display());
    let destination = format!("docker://{target}");
    let mut args = vec![
        "--insecure-policy",
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        "--preserve-digests",
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[&source, &destination]);
    let output = sandbox.run("skopeo", &args);
    assert!(
        output.status.success(),
        "skopeo copy to {target}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A proxy on `port` in front of `upstream` whose blob requests meet `faults` in turn
/// (`429`, `503`, `reset`, `stall:SECONDS`), one each, before they pass.
pub fn fault_proxy(sandbox: &Sandbox, port: u16, upstream: &str, faults: &[&str]) {
    let script = format!("{REPO_INSIDE}/{FIXTURES_INSIDE}/fault_proxy.py");
    let (port_text, faults) = (port.to_string(), faults.join(","));
    sandbox.service(
        &format!("test-proxy-{port}"),
        &["/usr/bin/python3", &script, &port_text, upstream, &faults],
    );
    wait_for_http(sandbox, port);
}

/// A registry on `port` that declares impossible sizes in `mode` (`huge-layer`,
/// `huge-index`, `huge-manifest`); see hostile_registry.py.
pub fn hostile_registry(sandbox: &Sandbox, port: u16, mode: &str) {
    let script = format!("{REPO_INSIDE}/{FIXTURES_INSIDE}/hostile_registry.py");
    sandbox.service(
        &format!("test-hostile-{port}"),
        &["/usr/bin/python3", &script, &port.to_string(), mode],
    );
    wait_for_http(sandbox, port);
}

fn registry_dir(sandbox: &Sandbox, port: u16) -> PathBuf {
    let dir = sandbox.path(&format!("run/registry-{port}"));
    std::fs::create_dir_all(dir.join("data")).unwrap();
    dir
}

/// distribution on `port` with `auth`, storing under /run/registry-PORT/data.
fn serve(sandbox: &Sandbox, port: u16, auth: &str) {
    let config = format!(
        "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: /run/registry-{port}/data\nhttp:\n  addr: 127.0.0.1:{port}\n{auth}"
    );
    std::fs::write(
        sandbox.path(&format!("run/registry-{port}/config.yml")),
        config,
    )
    .unwrap();
    sandbox.service(
        &format!("test-registry-{port}"),
        &[
            "/usr/bin/docker-registry",
            "serve",
            &format!("/run/registry-{port}/config.yml"),
        ],
    );
    wait_for_http(sandbox, port);
}

/// Until something answers HTTP on the port (any status: 401 counts).
fn wait_for_http(sandbox: &Sandbox, port: u16) {
    let url = format!("http://127.0.0.1:{port}/v2/");
    sandbox.wait_until(&format!("a server on port {port}"), |s| {
        let out = s.run(
            "curl",
            &["-s", "-o", "/dev/null", "-w", "%{http_code}", &url],
        );
        let code = String::from_utf8_lossy(&out.stdout).to_string();
        !code.is_empty() && code != "000"
    });
}
