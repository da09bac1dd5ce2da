//! The HTTP server under hostile clients, against the real appunitd: slowloris
//! connections are closed by the header timeout while others are served fast, and
//! thousands of idle connections neither starve a new client nor cut a request that is
//! under way. Logos, which may be SVG documents, carry headers that keep them inert.

mod common;

use common::{Daemon, assert_envelope};
use std::io::{Read, Write};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The daemon's header-read timeout (api::server::HEADER_TIMEOUT).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

async fn daemon_with_an_app() -> Daemon {
    let daemon = Daemon::start();
    let reply = daemon
        .call(
            "AppInstall",
            "app_name=nginx&customer_app_name=web1&app_version=1.30",
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    daemon
}

/// One slowloris connection: a header byte a second, never the end of the head.
/// Returns how long it stayed open and how many bytes it sent.
async fn slowloris(socket: std::path::PathBuf) -> (Duration, usize) {
    let started = Instant::now();
    let stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let head = b"GET /AppList HTTP/1.1\r\nhost: appunit\r\nx-slow: ";
    let mut sent = 0;
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    let mut buffer = [0u8; 512];
    loop {
        tokio::select! {
            // EOF or a reset: the daemon closed it.
            _ = read.read(&mut buffer) => return (started.elapsed(), sent),
            _ = ticks.tick() => {
                let byte = head.get(sent).copied().unwrap_or(b'a');
                if write.write_all(&[byte]).await.is_err() {
                    return (started.elapsed(), sent);
                }
                sent += 1;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_closed_and_others_stay_fast() {
    let daemon = daemon_with_an_app().await;
    let attackers: Vec<_> = (0..200)
        .map(|_| tokio::spawn(slowloris(daemon.socket.clone())))
        .collect();

    // A normal client meanwhile: a fresh connection per AppStatus, as the CLI does.
    let mut latencies = Vec::new();
    let deadline = Instant::now() + HEADER_TIMEOUT + Duration::from_secs(2);
    while Instant::now() < deadline {
        let started = Instant::now();
        let reply = daemon.call("AppStatus", "app_id=web1").await;
        latencies.push(started.elapsed());
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_envelope(&reply);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    for attacker in attackers {
        let (open_for, sent) = tokio::time::timeout(Duration::from_secs(10), attacker)
            .await
            .expect("a slowloris connection is still open long after the header timeout")
            .unwrap();
        // Closed by the timeout, not before it, and while it was still sending.
        assert!(
            open_for >= HEADER_TIMEOUT - Duration::from_millis(500)
                && open_for <= HEADER_TIMEOUT + Duration::from_secs(3),
            "closed after {open_for:?}"
        );
        assert!(sent >= 8, "only {sent} bytes sent");
    }

    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    eprintln!(
        "AppStatus during slowloris: {} calls, p50 {:?}, p99 {p99:?}, max {:?}",
        latencies.len(),
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );
    assert!(latencies.len() >= 300, "only {} calls", latencies.len());
    assert!(p99 <= Duration::from_millis(50), "p99 {p99:?}");
}

/// Raises this process's open-file limit (the daemon, its child, inherits it and raises
/// its own to the hard limit besides).
fn allow_open_files(count: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    assert!(hard >= count, "the hard open-file limit is {hard}");
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_idle_connections_do_not_starve_a_new_client() {
    const IDLE: usize = 5_000;
    allow_open_files(IDLE as u64 + 1_000);
    let mut daemon = daemon_with_an_app().await;
    let socket = daemon.socket.clone();

    // A request under way before the flood: its head is read, its body is not complete.
    let body = b"app_id=web1";
    let mut under_way = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    write!(
        under_way,
        "POST /AppStatus HTTP/1.1\r\nhost: appunit\r\nconnection: close\r\n\
         content-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    under_way.write_all(&body[..4]).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let flood_started = Instant::now();
    let idle = tokio::task::spawn_blocking(move || {
        (0..IDLE)
            .map(|_| std::os::unix::net::UnixStream::connect(&socket).unwrap())
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let flood = flood_started.elapsed();

    let started = Instant::now();
    let reply = daemon.call("AppStatus", "app_id=web1").await;
    let served_in = started.elapsed();
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_envelope(&reply);

    // The request under way was not cut: it completes and is answered.
    under_way.write_all(&body[4..]).unwrap();
    under_way
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut answer = String::new();
    under_way.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"app_id\":\"web1\""), "{answer}");

    // The daemon made room by closing the connections idle the longest.
    let still_open = idle
        .iter()
        .filter(|stream| {
            stream.set_nonblocking(true).unwrap();
            let mut byte = [0u8; 1];
            matches!((&**stream).read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        })
        .count();
    eprintln!(
        "{IDLE} idle connections opened in {flood:?}; {still_open} still open; a new client served in {served_in:?}"
    );
    assert!(still_open < IDLE, "no idle connection was closed");
    assert!(
        served_in <= Duration::from_secs(1),
        "served in {served_in:?}"
    );
    assert!(daemon.is_running(), "the daemon died");
}

/// An SVG logo opened directly must not run scripts nor be sniffed as another type.
#[test]
fn logos_carry_nosniff_and_a_csp() {
    let daemon = Daemon::start();
    let mut stream = std::os::unix::net::UnixStream::connect(&daemon.socket).unwrap();
    stream
        .write_all(b"GET /catalog/wordpress/logo.svg HTTP/1.1\r\nhost: appunit\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    let head = reply.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains("\r\ncontent-type: image/svg+xml\r\n"),
        "{head}"
    );
    assert!(
        head.contains("\r\nx-content-type-options: nosniff\r\n"),
        "{head}"
    );
    assert!(
        head.contains(
            "\r\ncontent-security-policy: default-src 'none'; style-src 'unsafe-inline'\r\n"
        ),
        "{head}"
    );
}
