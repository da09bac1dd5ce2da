//! An app's network: its own namespace, shared by its containers like a pod's, attached
//! to appunit's bridge with the CNI plugins (bridge + host-local, portmap, firewall),
//! which also publish its ports on the host. The plugins are run as a chain here, each
//! given the previous one's result. Everything here blocks: async callers use
//! `spawn_blocking`.

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const CNI_VERSION: &str = "1.0.0";
const NETWORK: &str = "appunit";
const BRIDGE: &str = "appunit0";
/// appunit's own chain in the filter table's FORWARD: what keeps apps apart.
const ISOLATE_CHAIN: &str = "APPUNIT-ISOLATE";

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("{tool} {args}: {cause}")]
    Tool {
        tool: &'static str,
        args: String,
        cause: String,
    },
    #[error("CNI {plugin} {command}: {message}")]
    Cni {
        plugin: String,
        command: &'static str,
        message: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Several(String),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> NetError + '_ {
    move |source| NetError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The app's network namespace, shared by all its containers.
pub fn netns_name(app_id: &str) -> String {
    format!("appunit-{app_id}")
}

pub fn netns_path(app_id: &str) -> PathBuf {
    Path::new("/run/netns").join(netns_name(app_id))
}

/// A published port: host address and port → container port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// "" publishes on every address of the host.
    #[serde(default)]
    pub host_ip: String,
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
            .map(|p| json!({"hostIP": p.host_ip, "hostPort": p.host_port, "containerPort": p.container_port, "protocol": p.protocol}))
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

    /// What ADD answered and which ports it published, kept for DEL.
    fn attachment_path(&self, app_id: &str) -> PathBuf {
        self.state_dir.join(format!("{app_id}.json"))
    }

    /// The app's namespace, attached to the bridge with `ports` published. It outlives
    /// the unit (a restart keeps it) and goes with the app; after a reboot it is made
    /// again.
    pub fn ensure(&self, app_id: &str, ports: &[PortMapping]) -> Result<(), NetError> {
        let _one_at_a_time = self.lock()?;
        let name = netns_name(app_id);
        if has_eth0(app_id) {
            return Ok(());
        }
        // Missing, half made, or a stale name whose namespace is gone: make it anew.
        let _ = run_ip(&["netns", "delete", &name]);
        run_ip(&["netns", "add", &name])?;
        run_ip(&["-n", &name, "link", "set", "lo", "up"])?;
        self.attach(app_id, &netns_path(app_id), ports)
    }

    /// Undoes `ensure`: unpublishes the app's ports and removes its namespace. The next
    /// start of the app makes them again.
    pub fn release(&self, app_id: &str) -> Result<(), NetError> {
        let netns = netns_path(app_id);
        if !netns.exists() {
            return Ok(());
        }
        let _one_at_a_time = self.lock()?;
        let detached = self.detach(app_id, &netns);
        let deleted = run_ip(&["netns", "delete", &netns_name(app_id)]);
        detached.and(deleted)
    }

    /// Holds the host's CNI work to one app at a time, across processes (each app's
    /// supervisor runs its own): the plugins check-then-create shared iptables chains,
    /// and two apps started at once after a boot both tried to create CNI-FORWARD.
    fn lock(&self) -> Result<Flock<File>, NetError> {
        std::fs::create_dir_all(&self.state_dir).map_err(io_error(&self.state_dir))?;
        let path = self.state_dir.join("lock");
        let file = File::create(&path).map_err(io_error(&path))?;
        Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| NetError::Io {
            path,
            source: errno.into(),
        })
    }

    /// Connects the namespace and publishes `ports` on the host.
    fn attach(&self, app_id: &str, netns: &Path, ports: &[PortMapping]) -> Result<(), NetError> {
        let mut previous: Option<Value> = None;
        for plugin in self.plugins(ports) {
            let result = self.run("ADD", app_id, netns, plugin, previous.as_ref())?;
            previous = Some(result);
        }
        isolate_apps()?;
        let attachment = Attachment {
            ports: ports.to_vec(),
            result: previous.unwrap_or(Value::Null),
        };
        let path = self.attachment_path(app_id);
        std::fs::write(&path, json!(attachment).to_string()).map_err(io_error(&path))
    }

    /// Undoes `attach`: rules, port mappings, veth and address. Every plugin is told,
    /// whatever an earlier one answered.
    fn detach(&self, app_id: &str, netns: &Path) -> Result<(), NetError> {
        let attachment: Option<Attachment> = std::fs::read(self.attachment_path(app_id))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        let (ports, previous) = match attachment {
            Some(Attachment { ports, result }) => (ports, Some(result)),
            None => (Vec::new(), None),
        };
        let mut failures = Vec::new();
        for plugin in self.plugins(&ports).into_iter().rev() {
            if let Err(err) = self.run("DEL", app_id, netns, plugin, previous.as_ref()) {
                failures.push(err.to_string());
            }
        }
        let _ = std::fs::remove_file(self.attachment_path(app_id));
        if failures.is_empty() {
            Ok(())
        } else {
            Err(NetError::Several(failures.join("; ")))
        }
    }

    fn run(
        &self,
        command: &'static str,
        app_id: &str,
        netns: &Path,
        mut config: Value,
        previous: Option<&Value>,
    ) -> Result<Value, NetError> {
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
            .map_err(cni_io(&plugin, command))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(config.to_string().as_bytes())
                .map_err(cni_io(&plugin, command))?;
        }
        let output = child.wait_with_output().map_err(cni_io(&plugin, command))?;
        if !output.status.success() {
            // CNI errors come as JSON on stdout: {"code", "msg", "details"}.
            let error: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
            let message = error["msg"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| String::from_utf8_lossy(&output.stderr).trim().to_string());
            let details = error["details"].as_str().unwrap_or_default();
            return Err(NetError::Cni {
                plugin,
                command,
                message: format!("{message} {details}").trim().to_string(),
            });
        }
        if output.stdout.is_empty() {
            return Ok(previous.cloned().unwrap_or(Value::Null));
        }
        serde_json::from_slice(&output.stdout).map_err(|e| NetError::Cni {
            plugin,
            command,
            message: e.to_string(),
        })
    }
}

/// Keeps apps apart: a new connection from one app's address to another's across the
/// bridge is refused, unless it was DNAT'ed to a published port. The bridge's frames
/// pass through iptables only with br_netfilter, which is loaded and enabled for it (as
/// Docker does); each app has one address, so bridged traffic between two addresses is
/// always between two apps.
fn isolate_apps() -> Result<(), NetError> {
    let bridge_calls_iptables = Path::new("/proc/sys/net/bridge/bridge-nf-call-iptables");
    if !bridge_calls_iptables.exists() {
        let _ = Command::new("modprobe").arg("br_netfilter").status();
    }
    std::fs::write(bridge_calls_iptables, "1").map_err(io_error(bridge_calls_iptables))?;
    let _ = run_iptables(&["-N", ISOLATE_CHAIN]);
    let jump = ["FORWARD", "-j", ISOLATE_CHAIN];
    let refuse = [
        ISOLATE_CHAIN,
        "-i",
        BRIDGE,
        "-o",
        BRIDGE,
        "-m",
        "conntrack",
        "--ctstate",
        "NEW",
        "-m",
        "conntrack",
        "!",
        "--ctstate",
        "DNAT",
        "-j",
        "REJECT",
    ];
    for (rule, add) in [(&jump[..], "-I"), (&refuse[..], "-A")] {
        if run_iptables(&[&["-C"], rule].concat()).is_err() {
            run_iptables(&[&[add], rule].concat())?;
        }
    }
    Ok(())
}

fn run_iptables(args: &[&str]) -> Result<(), NetError> {
    run_tool("iptables", &[&["-w"], args].concat())
}

#[derive(Serialize, Deserialize)]
struct Attachment {
    ports: Vec<PortMapping>,
    result: Value,
}

fn cni_io(plugin: &str, command: &'static str) -> impl FnOnce(std::io::Error) -> NetError {
    let plugin = plugin.to_string();
    move |e| NetError::Cni {
        plugin,
        command,
        message: e.to_string(),
    }
}

/// Whether the app's namespace exists and has its eth0 (the last thing attached). It
/// is entered from a thread of its own (setns changes only the calling thread), not by
/// `ip -n`: a process and a mount namespace on every app start cost 5–10 ms.
fn has_eth0(app_id: &str) -> bool {
    let Ok(netns) = File::open(netns_path(app_id)) else {
        return false;
    };
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET).is_ok()
                    && nix::net::if_::if_nametoindex("eth0").is_ok()
            })
            .join()
            .unwrap_or(false)
    })
}

fn run_ip(args: &[&str]) -> Result<(), NetError> {
    run_tool("ip", args)
}

/// Runs `ip` or `iptables`; their error output is the cause.
fn run_tool(tool: &'static str, args: &[&str]) -> Result<(), NetError> {
    let failed = |cause: String| NetError::Tool {
        tool,
        args: args.join(" "),
        cause,
    };
    let output = Command::new(tool)
        .args(args)
        .output()
        .map_err(|e| failed(e.to_string()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(failed(
            String::from_utf8_lossy(&output.stderr).trim().to_string(),
        ))
    }
}
