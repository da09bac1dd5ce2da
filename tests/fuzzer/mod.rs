//! The request fuzzer: random and malformed requests, each on its own connection, and
//! a check that every reply is a SPEC status and envelope. Seeded per worker, so a
//! failure replays exactly. Shared by tests/fuzz.rs and examples/fuzz.rs (scripts/bench
//! fuzz), so both send the same requests.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Sends `requests` requests from `workers` threads at once (worker `w` seeded with
/// `seed + w`); the first bad reply or lost connection is the error, with the request.
pub fn run(socket: &Path, requests: usize, workers: u64, seed: u64) -> Result<(), String> {
    let per_worker = requests / workers as usize;
    let threads: Vec<_> = (0..workers)
        .map(|worker| {
            let socket = socket.to_path_buf();
            std::thread::spawn(move || {
                let mut rng = StdRng::seed_from_u64(seed + worker);
                for i in 0..per_worker {
                    let request = random_request(&mut rng);
                    if let Err(problem) = exchange(&socket, &request) {
                        return Err(format!(
                            "worker {worker} request {i}: {problem}\n{} bytes, cut at {:?}: {}",
                            request.bytes.len(),
                            request.cut_at,
                            String::from_utf8_lossy(&request.bytes[..request.bytes.len().min(600)])
                        ));
                    }
                }
                Ok(())
            })
        })
        .collect();
    // Every worker is joined before the first failure is reported.
    let outcomes: Vec<Result<(), String>> = threads
        .into_iter()
        .map(|thread| {
            thread
                .join()
                .unwrap_or_else(|_| Err("a worker panicked".into()))
        })
        .collect();
    outcomes.into_iter().collect()
}

const CODES: &[&str] = &[
    "Param.AppName.Blank",
    "Param.AppName.NotExis",
    "Param.CustomerAppName.Blank",
    "Param.CustomerAppName.FormatError",
    "Param.CustomerAppName.Repeat",
    "Param.CustomerAppName.Wait",
    "Param.AppVersion.Blank",
    "Param.AppVersion.NotExist",
    "Requirement.NotEnough",
    "Param.APPID.Blank",
    "Param.APPID.FormatError",
    "Param.APPID.NotExist",
    "Action.NotExist",
    "Param.Version.NotSupport",
    "Param.TooLarge",
    "Param.Format.Error",
    "App.Busy",
    "Server.Container.Error",
    "Server.SystemError",
];

const ACTIONS: &[&str] = &[
    "AppInstall",
    "AppUninstall",
    "AppStart",
    "AppStop",
    "AppRestart",
    "AppStatus",
    "AppList",
];
const NAMES: &[&str] = &[
    "app_name",
    "customer_app_name",
    "app_version",
    "app_id",
    "delete_image",
    "delete_data",
    "x",
];

struct Request {
    bytes: Vec<u8>,
    /// Send only this many bytes, then half-close: a truncated body.
    cut_at: Option<usize>,
    head: bool,
}

fn random_request(rng: &mut StdRng) -> Request {
    let method = *pick(
        rng,
        &[
            "GET", "GET", "POST", "POST", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH",
        ],
    );
    let action = match rng.random_range(0..10) {
        0 => percent_encode(&random_bytes(rng, 12)),
        1 => "catalog/wordpress/logo.svg".to_string(),
        2 => format!("catalog/{}", percent_encode(&random_bytes(rng, 8))),
        _ => pick(rng, ACTIONS).to_string(),
    };
    let query = random_params(rng);
    let (content_type, body) = random_body(rng);
    let mut head = format!("{method} /{action}");
    if !query.is_empty() {
        head.push('?');
        head.push_str(&query);
    }
    head.push_str(" HTTP/1.1\r\nhost: appunit\r\nconnection: close\r\n");
    let mut bytes = head.into_bytes();
    if rng.random_bool(0.2) {
        bytes.extend_from_slice(b"Version: ");
        let version: &[u8] = match rng.random_range(0..4) {
            0 => b"1",
            1 => b"2",
            2 => b"\xff\xfe",
            _ => b"v1.0",
        };
        bytes.extend_from_slice(version);
        bytes.extend_from_slice(b"\r\n");
    }
    if rng.random_bool(0.3) {
        let language = *pick(rng, &["zh-CN", "en", "zh", "fr", "\u{7a}h-TW"]);
        bytes.extend_from_slice(format!("Language: {language}\r\n").as_bytes());
    }
    if let Some(content_type) = content_type {
        bytes.extend_from_slice(format!("Content-Type: {content_type}\r\n").as_bytes());
    }
    let truncate = !body.is_empty() && rng.random_bool(0.05);
    let declared = if truncate {
        body.len() + 10
    } else {
        body.len()
    };
    if method != "GET" || !body.is_empty() {
        bytes.extend_from_slice(format!("Content-Length: {declared}\r\n").as_bytes());
    }
    bytes.extend_from_slice(b"\r\n");
    let cut_at = truncate.then(|| bytes.len() + body.len());
    bytes.extend_from_slice(&body);
    Request {
        bytes,
        cut_at,
        head: method == "HEAD",
    }
}

fn random_params(rng: &mut StdRng) -> String {
    let count = rng.random_range(0..5);
    let mut pairs = Vec::new();
    for _ in 0..count {
        let name = if rng.random_bool(0.9) {
            pick(rng, NAMES).to_string()
        } else {
            percent_encode(&random_bytes(rng, 6))
        };
        pairs.push(format!("{name}={}", random_value(rng)));
    }
    if rng.random_bool(0.01) {
        // hyper itself refuses request lines over 64 KiB (414), before the daemon sees them.
        pairs.push(format!(
            "pad={}",
            "y".repeat(rng.random_range(30_000..60_000))
        ));
    }
    pairs.join("&")
}

fn random_value(rng: &mut StdRng) -> String {
    match rng.random_range(0..8) {
        0 => String::new(),
        1 => pick(rng, &["wordpress", "nginx", "redis", "bigapp", "nosuch"]).to_string(),
        2 => format!("app{}", rng.random_range(0..50)),
        3 => pick(rng, &["true", "FALSE", "1", "0", "maybe"]).to_string(),
        4 => pick(rng, &["1.30", "8.10", "7.1", "0"]).to_string(),
        5 => percent_encode(&random_bytes(rng, 20)),
        6 => "%FF%FE%80".to_string(),
        _ => "A".repeat(rng.random_range(30..300)),
    }
}

fn random_body(rng: &mut StdRng) -> (Option<&'static str>, Vec<u8>) {
    match rng.random_range(0..9) {
        0 | 1 => (None, Vec::new()),
        2 => (
            Some("application/x-www-form-urlencoded"),
            random_params(rng).into_bytes(),
        ),
        3 => {
            let mut object = serde_json::Map::new();
            for _ in 0..rng.random_range(0..5) {
                let value = match rng.random_range(0..6) {
                    0 => serde_json::json!(random_value(rng)),
                    1 => serde_json::json!(rng.random::<bool>()),
                    2 => serde_json::json!(rng.random::<i32>()),
                    3 => serde_json::json!([1, "a"]),
                    4 => serde_json::json!({"nested": true}),
                    _ => serde_json::Value::Null,
                };
                object.insert(pick(rng, NAMES).to_string(), value);
            }
            (
                Some("application/json"),
                serde_json::to_vec(&object).unwrap(),
            )
        }
        4 => (Some("application/json"), b"{\"app_id\": \"ab".to_vec()),
        5 => (
            Some("application/json; charset=utf-8"),
            random_bytes(rng, 200),
        ),
        6 => (None, random_bytes(rng, 300)),
        7 => (Some("text/plain"), b"app_id=\xff\xfe".to_vec()),
        _ => (
            Some("application/x-www-form-urlencoded"),
            vec![b'z'; rng.random_range(65_000..70_000)],
        ),
    }
}

/// Sends one request and checks the reply: a SPEC status and envelope.
fn exchange(socket: &Path, request: &Request) -> Result<(), String> {
    let mut stream = UnixStream::connect(socket).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let end = request.cut_at.unwrap_or(request.bytes.len());
    // The daemon may answer (413) before it reads all of a large body; a broken pipe
    // on our side is then expected, and the reply is still there to read.
    let _ = stream.write_all(&request.bytes[..end]);
    if request.cut_at.is_some() {
        let _ = stream.shutdown(std::net::Shutdown::Write);
    }
    let mut reply = Vec::new();
    stream
        .read_to_end(&mut reply)
        .map_err(|e| format!("reading the reply: {e}"))?;
    check_reply(&reply, request.head)
}

fn check_reply(reply: &[u8], head: bool) -> Result<(), String> {
    let text = String::from_utf8_lossy(reply);
    let (head_text, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no complete reply: {text:?}"))?;
    let status: u16 = head_text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status: {head_text:?}"))?;
    if ![200, 404, 405, 413].contains(&status) {
        return Err(format!("status {status} is not a SPEC status: {text}"));
    }
    if head {
        // No body comes back for HEAD: the status alone is checked.
        return if status == 405 || status == 404 {
            Ok(())
        } else {
            Err(format!("HEAD got {status}"))
        };
    }
    if head_text
        .to_ascii_lowercase()
        .contains("content-type: image/")
    {
        return Ok(());
    }
    let envelope: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("not JSON ({e}): {text}"))?;
    let object = envelope.as_object().ok_or("not an object")?;
    if !object.contains_key("ResponseData") {
        return Err(format!("no ResponseData: {body}"));
    }
    match (status, object.get("Error")) {
        (200, None) => Ok(()),
        (200, Some(_)) => Err(format!("200 with an Error: {body}")),
        (_, Some(error)) => {
            let code = error["Code"].as_str().unwrap_or("");
            if !CODES.contains(&code)
                || !error["Message"].is_string()
                || !error["Detail"].is_string()
            {
                return Err(format!("not a SPEC error: {body}"));
            }
            Ok(())
        }
        (_, None) => Err(format!("{status} without an Error: {body}")),
    }
}

fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

fn random_bytes(rng: &mut StdRng, max: usize) -> Vec<u8> {
    let len = rng.random_range(0..=max);
    (0..len).map(|_| rng.random()).collect()
}

fn percent_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02X}")).collect()
}
