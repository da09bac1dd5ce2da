//! 10,000 random and malformed requests against the running daemon: every one gets a
//! SPEC envelope, and the daemon never dies. Seeded, so a failure replays exactly.
//! `scripts/bench fuzz` sends 1,000,000 of the same requests (examples/fuzz.rs).

mod common;
mod fuzzer;

use common::Daemon;

#[tokio::test]
async fn ten_thousand_malformed_requests_get_envelopes() {
    let mut daemon = Daemon::start();
    let socket = daemon.socket.clone();
    let outcome = tokio::task::spawn_blocking(move || fuzzer::run(&socket, 10_000, 4, 0xA99)).await;
    if let Err(problem) = outcome.unwrap() {
        panic!("{problem}");
    }
    assert!(daemon.is_running(), "the daemon died");
    assert_eq!(daemon.call("AppList", "").await.status, 200);
}
