//! An app's network: its namespace is attached to appunit's bridge with the CNI plugins
//! (bridge + host-local, portmap, firewall), which also publish its ports on the host.
//! The plugins are run as a chain here, each given the previous one's result.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const CNI_VERSION: &str = "1.0.0";
const NETWORK: &str = "appunit";
const BRIDGE: &str = "appunit0";

/// A published port: host port → container port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: String,
}

pub struct Network {
    plugin_dir: PathBuf,
    subnet: String,
    /// Where the results of ADD are kept for DEL, and host-local keeps its leases:
    /// under /run, so a reboot starts with no stale address.
    state_dir: PathBuf,
}

impl Network {
    pub fn new(plugin_dir: PathBuf, subnet: String, run_dir: &Path) -> Network {
        Network {
            plugin_dir,
            subnet,
            state_dir: run_dir.join("cni"),
        }
    }

    fn plugins(&self, ports: &[PortMapping]) -> [Value; 3] {
        let mappings: Vec<Value> = ports
            .iter()
            .map(|p| json!({"hostPort": p.host_port, "containerPort": p.container_port, "protocol": p.protocol}))
            .collect();
        [
            json!({
                "type": "bridge", "bridge": BRIDGE, "isGateway": true, "ipMasq": true, "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": self.subnet}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": self.state_dir.join("networks"),
                },
            }),
            json!({
                "type": "portmap", "snat": true,
                "capabilities": {"portMappings": true},
                "runtimeConfig": {"portMappings": mappings},
            }),
            json!({"type": "firewall", "backend": "iptables"}),
        ]
    }

    fn result_path(&self, app_id: &str) -> PathBuf {
        self.state_dir.join(format!("{app_id}.json"))
    }

    /// Connects the namespace and publishes `ports` on the host.
    pub fn attach(&self, app_id: &str, netns: &Path, ports: &[PortMapping]) -> Result<(), String> {
        std::fs::create_dir_all(&self.state_dir)
            .map_err(|e| format!("{}: {e}", self.state_dir.display()))?;
        let mut previous: Option<Value> = None;
        for plugin in self.plugins(ports) {
            let result = self.run("ADD", app_id, netns, plugin, previous.as_ref())?;
            previous = Some(result);
        }
        let result = previous.unwrap_or(Value::Null).to_string();
        std::fs::write(self.result_path(app_id), result).map_err(|e| e.to_string())
    }

    /// Undoes `attach`: rules, port mappings, veth and address. Every plugin is told,
    /// whatever an earlier one answered.
    pub fn detach(&self, app_id: &str, netns: &Path, ports: &[PortMapping]) -> Result<(), String> {
        let previous: Option<Value> = std::fs::read(self.result_path(app_id))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        let mut failures = Vec::new();
        for plugin in self.plugins(ports).into_iter().rev() {
            if let Err(err) = self.run("DEL", app_id, netns, plugin, previous.as_ref()) {
                failures.push(err);
            }
        }
        let _ = std::fs::remove_file(self.result_path(app_id));
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures.join("; "))
        }
    }

    fn run(
        &self,
        command: &str,
        app_id: &str,
        netns: &Path,
        mut config: Value,
        previous: Option<&Value>,
    ) -> Result<Value, String> {
        let plugin = config["type"].as_str().unwrap_or_default().to_string();
        config["cniVersion"] = json!(CNI_VERSION);
        config["name"] = json!(NETWORK);
        if let Some(previous) = previous {
            config["prevResult"] = previous.clone();
        }
        let mut child = Command::new(self.plugin_dir.join(&plugin))
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", format!("appunit-{app_id}"))
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", &self.plugin_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("CNI {plugin}: {e}"))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(config.to_string().as_bytes())
                .map_err(|e| format!("CNI {plugin}: {e}"))?;
        }
        let output = child
            .wait_with_output()
            .map_err(|e| format!("CNI {plugin}: {e}"))?;
        if !output.status.success() {
            // CNI errors come as JSON on stdout: {"code", "msg", "details"}.
            let error: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
            let message = error["msg"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| String::from_utf8_lossy(&output.stderr).trim().to_string());
            let details = error["details"].as_str().unwrap_or_default();
            return Err(format!("CNI {plugin} {command}: {message} {details}")
                .trim()
                .to_string());
        }
        if output.stdout.is_empty() {
            return Ok(previous.cloned().unwrap_or(Value::Null));
        }
        serde_json::from_slice(&output.stdout).map_err(|e| format!("CNI {plugin}: {e}"))
    }
}
