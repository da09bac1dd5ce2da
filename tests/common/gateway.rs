//! The shipped nginx site (packaging/nginx/appunit.conf) in front of a daemon's socket.

use super::REPO;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command};

pub struct Nginx {
    child: Child,
    pub port: u16,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs nginx with the shipped site, changed only in its socket, port and password file
/// (user `admin`, password `s3cret`), keeping its files in `dir`.
pub fn nginx(socket: &Path, dir: &Path) -> Nginx {
    let port = super::images::free_port();
    let site = std::fs::read_to_string(Path::new(REPO).join("packaging/nginx/appunit.conf"))
        .unwrap()
        .replace("/run/appunit/appunit.sock", socket.to_str().unwrap())
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"))
        .replace(
            "/run/appunit-gateway/htpasswd",
            dir.join("htpasswd").to_str().unwrap(),
        );
    std::fs::write(dir.join("site.conf"), site).unwrap();
    std::fs::write(dir.join("htpasswd"), "admin:{PLAIN}s3cret\n").unwrap();
    let main = format!(
        "daemon off;\nmaster_process off;\nuser root;\npid {pid};\nerror_log {log};\nevents {{}}\nhttp {{\n  access_log off;\n  include {site};\n}}\n",
        pid = dir.join("nginx.pid").display(),
        log = dir.join("nginx.log").display(),
        site = dir.join("site.conf").display(),
    );
    std::fs::write(dir.join("nginx.conf"), main).unwrap();
    let child = Command::new("nginx")
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .spawn()
        .expect("nginx (nginx-light) is installed");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "nginx did not start");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Nginx { child, port }
}

/// A GET to nginx on loopback: (status, body).
pub fn get(port: u16, path: &str, credentials: Option<&str>) -> (u16, Vec<u8>) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let auth = credentials.map_or(String::new(), |c| {
        use base64::Engine;
        let encoded = base64::engine::general_purpose::STANDARD.encode(c);
        format!("Authorization: Basic {encoded}\r\n")
    });
    write!(stream, "GET {path} HTTP/1.0\r\nHost: appunit\r\n{auth}\r\n").unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).unwrap();
    let split = reply.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&reply[..split]).to_string();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, reply[split + 4..].to_vec())
}
