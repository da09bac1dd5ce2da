//! Test harness: the real `appunitd` binary on a temporary socket and state folder,
//! and a real HTTP client (hyper) over that socket.

#![allow(dead_code)] // each test binary uses its own part of the harness

pub mod gateway;
pub mod host;
pub mod images;
pub mod real;
pub mod registry;
pub mod sandbox;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tokio::net::UnixStream;

pub const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// Cargo's target folder, where the builds and the packages go.
pub fn target_dir() -> PathBuf {
    std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(REPO).join("target"))
}

pub struct Daemon {
    pub dir: TempDir,
    pub socket: PathBuf,
    child: Option<Child>,
}

impl Daemon {
    /// Starts appunitd with the shipped catalog plus the test fixtures.
    pub fn start() -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("appunit-test")
            .tempdir()
            .unwrap();
        let socket = dir.path().join("run/appunit.sock");
        let config = format!(
            // The queue is paused: these tests look at the API and the queue itself.
            "socket = {socket:?}\nstate_dir = {state:?}\ncatalog_dirs = [{shipped:?}, {fixtures:?}]\npublic_host = \"127.0.0.1\"\nmax_parallel_installs = 0\n",
            state = dir.path().join("state"),
            shipped = Path::new(REPO).join("catalog"),
            fixtures = Path::new(REPO).join("tests/fixtures/catalog"),
        );
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        let mut daemon = Daemon {
            dir,
            socket,
            child: None,
        };
        daemon.restart();
        daemon
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    pub fn database(&self) -> PathBuf {
        self.dir.path().join("state/appunit.db")
    }

    /// (Re)starts the process and waits until the socket answers.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the daemon is already running");
        let child = Command::new(env!("CARGO_BIN_EXE_appunitd"))
            .arg("--config")
            .arg(self.config_path())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&self.socket).is_err() {
            assert!(
                Instant::now() < deadline,
                "appunitd did not start listening"
            );
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("appunitd exited at start: {status}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// `kill -9`: no chance to clean up, as in a crash.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        self.terminate_wait()
    }

    /// The exit status of a daemon that was told to stop.
    pub fn terminate_wait(&mut self) -> std::process::ExitStatus {
        self.child.take().expect("running").wait().unwrap()
    }

    pub async fn call(&self, action: &str, query: &str) -> Reply {
        self.send(Call::get(action, query)).await
    }

    pub async fn send(&self, call: Call) -> Reply {
        send(&self.socket, call).await
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One HTTP request, built up by the tests.
#[derive(Clone, Debug)]
pub struct Call {
    pub method: &'static str,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Call {
    pub fn get(action: &str, query: &str) -> Call {
        Call::new("GET", action, query)
    }

    pub fn new(method: &'static str, action: &str, query: &str) -> Call {
        let target = if query.is_empty() {
            format!("/{action}")
        } else {
            format!("/{action}?{query}")
        };
        Call {
            method,
            target,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Call {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn body(mut self, content_type: &str, body: impl Into<Vec<u8>>) -> Call {
        self.body = body.into();
        self.header("content-type", content_type)
    }
}

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub raw: Bytes,
    pub json: Value,
}

impl Reply {
    /// The error code, or "" on success.
    pub fn code(&self) -> &str {
        self.json["Error"]["Code"].as_str().unwrap_or("")
    }

    pub fn message(&self) -> &str {
        self.json["Error"]["Message"].as_str().unwrap_or("")
    }

    pub fn data(&self) -> &Value {
        &self.json["ResponseData"]
    }
}

/// A command's stdout and stderr, as one text (for failure messages).
pub fn text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Sends `call` on a new connection: the response with its status and content type;
/// its body is still to be read.
async fn request(socket: &Path, call: Call) -> (u16, String, hyper::Response<Incoming>) {
    let stream = UnixStream::connect(socket).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut request = Request::builder()
        .method(call.method)
        .uri(&call.target)
        .header("host", "appunit");
    for (name, value) in &call.headers {
        request = request.header(name, value);
    }
    let request = request.body(Full::new(Bytes::from(call.body))).unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, content_type, response)
}

/// One request's status, content type and body, unparsed: what timing the daemon sees.
pub async fn fetch(socket: &Path, call: Call) -> (u16, String, Bytes) {
    let (status, content_type, response) = request(socket, call).await;
    let raw = response.into_body().collect().await.unwrap().to_bytes();
    (status, content_type, raw)
}

pub async fn send(socket: &Path, call: Call) -> Reply {
    let (status, content_type, raw) = fetch(socket, call).await;
    let json = if content_type == "application/json" {
        serde_json::from_slice(&raw).unwrap()
    } else {
        Value::Null
    };
    Reply {
        status,
        content_type,
        raw,
        json,
    }
}

/// Asserts the SPEC envelope: ResponseData always present; Error absent on 200 and
/// present with Code/Message/Detail strings otherwise.
pub fn assert_envelope(reply: &Reply) {
    let object = reply
        .json
        .as_object()
        .unwrap_or_else(|| panic!("not an envelope: {reply:?}"));
    assert!(object.contains_key("ResponseData"), "{reply:?}");
    if reply.status == 200 {
        assert_eq!(object.len(), 1, "{reply:?}");
    } else {
        let error = &reply.json["Error"];
        for key in ["Code", "Message", "Detail"] {
            assert!(error[key].is_string(), "{key} missing: {reply:?}");
        }
        assert_eq!(object.len(), 2, "{reply:?}");
    }
}

/// One event of a `text/event-stream`: when it came, its `event:` name (empty for
/// unnamed events) and its `data:` as JSON.
#[derive(Debug, Clone)]
pub struct Event {
    pub at: Instant,
    pub name: String,
    pub data: Value,
}

/// GETs `target` and relays each event of the stream it answers with, until the
/// receiver is dropped; the response's status and content type come first.
pub async fn events(
    socket: &Path,
    target: &str,
) -> (u16, String, tokio::sync::mpsc::UnboundedReceiver<Event>) {
    let call = Call {
        method: "GET",
        target: target.to_string(),
        headers: Vec::new(),
        body: Vec::new(),
    };
    let (status, content_type, response) = request(socket, call).await;
    let (events, received) = tokio::sync::mpsc::unbounded_channel();
    let mut body = response.into_body();
    tokio::spawn(async move {
        let mut pending = String::new();
        while let Some(Ok(frame)) = body.frame().await {
            let Ok(data) = frame.into_data() else {
                continue;
            };
            pending.push_str(&String::from_utf8_lossy(&data));
            while let Some(end) = pending.find("\n\n") {
                let block: String = pending.drain(..end + 2).collect();
                let field = |name: &str| {
                    block
                        .lines()
                        .find_map(|line| line.strip_prefix(name))
                        .map(|value| value.trim().to_string())
                };
                let Some(data) = field("data:") else { continue };
                let event = Event {
                    at: Instant::now(),
                    name: field("event:").unwrap_or_default(),
                    data: serde_json::from_str(&data).unwrap_or(Value::Null),
                };
                if events.send(event).is_err() {
                    return;
                }
            }
        }
    });
    (status, content_type, received)
}
