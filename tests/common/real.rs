//! Real server software in a sandbox: the images of scripts/real-images in a registry
//! that is appunitd's `docker.io` mirror, and commands run where the apps' ports are.

use super::host::Host;
use super::registry::AuthRegistry;
use super::sandbox::{Sandbox, TARGET};
use std::process::Command;

/// How the `docker.io` mirror of a test asks for credentials.
pub enum Mirror {
    /// Bearer tokens, as Docker Hub: pulls are anonymous.
    Token,
    /// Basic auth, as a private registry, with appunit's account in an `auth_file`.
    Basic,
}

/// appunitd serving the catalogs `catalog_dirs` (as the sandbox sees them), pulling
/// `docker.io` through a mirror that holds the real images.
pub fn real_host(host: Host, mirror: Mirror, catalog_dirs: &[&str]) -> Host {
    let registry = match mirror {
        Mirror::Token => AuthRegistry::token(&host.sandbox, 5100),
        Mirror::Basic => AuthRegistry::basic(&host.sandbox, 5200),
    };
    push_real_images(&host.sandbox, &registry);
    let mirror_config = match mirror {
        Mirror::Token => registry.mirror_config("docker.io", false),
        Mirror::Basic => {
            let auth_file = host.sandbox.path("etc-appunit/auth.json");
            let account = format!("{}:{}", registry.user, registry.password);
            let auths = serde_json::json!({"auths": {registry.host.as_str(): {
                "auth": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, account)
            }}});
            std::fs::write(auth_file, auths.to_string()).unwrap();
            format!(
                "{}auth_file = \"/etc/appunit/auth.json\"\n",
                registry.mirror_config("docker.io", false)
            )
        }
    };
    let config = format!(
        "catalog_dirs = {catalog_dirs:?}\npublic_host = \"127.0.0.1\"\n\
         unit_target = \"{TARGET}\"\n{mirror_config}"
    );
    std::fs::write(host.sandbox.path("etc-appunit/config.toml"), config).unwrap();
    host.sandbox.systemctl(&["restart", "appunitd.service"]);
    host
}

pub fn push_real_images(sandbox: &Sandbox, registry: &AuthRegistry) {
    let script = std::path::Path::new(super::REPO).join("scripts/real-images");
    let creds = format!("{}:{}", registry.user, registry.password);
    let out = in_network(sandbox.pid, script.to_str().unwrap())
        .args(["push", &registry.host, "--insecure", "--creds", &creds])
        .output()
        .unwrap();
    assert!(out.status.success(), "real-images push: {out:?}");
}

/// A command of the host's in the sandbox's network namespace, where the apps' ports are.
pub fn in_network(sandbox_pid: u32, program: &str) -> Command {
    let mut command = Command::new("nsenter");
    command
        .args(["-t", &sandbox_pid.to_string(), "-n", "--"])
        .arg(program);
    command
}
