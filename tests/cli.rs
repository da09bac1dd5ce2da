//! The `appunit` command line against the real daemon.

mod common;

use common::Daemon;
use common::host::Host;
use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn command(socket: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_appunit"));
    command
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env("LANG", "C.UTF-8");
    command
}

fn appunit(daemon: &Daemon, args: &[&str]) -> Output {
    command(&daemon.socket, &["--config"])
        .arg(daemon.config_path())
        .args(args)
        .output()
        .unwrap()
}

/// A command that runs until killed, and its stdout's lines as they come.
fn spawn_lines(socket: &Path, args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let mut child = command(socket, args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    (child, received)
}

/// The first line that `wanted` accepts, within `limit`; the lines before it.
fn line_until(
    lines: &mpsc::Receiver<String>,
    limit: Duration,
    wanted: impl Fn(&str) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                let found = wanted(&line);
                seen.push(line);
                if found {
                    return seen;
                }
            }
            Err(err) => panic!("{err}: no such line after {seen:#?}"),
        }
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).to_string()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).to_string()
}

#[tokio::test]
async fn commands_mirror_the_actions() {
    let daemon = Daemon::start();
    // No --version: the catalog's newest.
    let installed = appunit(
        &daemon,
        &["install", "wordpress", "--name", "blog", "--no-wait"],
    );
    assert!(installed.status.success(), "{}", stderr(&installed));
    let status = daemon.call("AppStatus", "app_id=blog").await;
    assert_eq!(status.data()["app_version"], "7.1");

    let listed = appunit(&daemon, &["--json", "list"]);
    let from_cli: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(&from_cli, daemon.call("AppList", "").await.data());

    let table = String::from_utf8_lossy(&appunit(&daemon, &["list"]).stdout).to_string();
    assert!(
        table.starts_with("APP_ID") && table.contains("blog") && table.contains("queuing"),
        "{table}"
    );
}

#[tokio::test]
async fn errors_carry_the_spec_code_and_an_exit_code_by_class() {
    let daemon = Daemon::start();
    appunit(
        &daemon,
        &["install", "wordpress", "--name", "blog", "--no-wait"],
    );
    let cases: [(&[&str], i32, &str); 4] = [
        (
            &["install", "nosuchapp", "--name", "x1", "--version", "1"],
            2,
            "Param.AppName.NotExis",
        ),
        (&["status", "nosuch"], 3, "Param.APPID.NotExist"),
        (&["stop", "blog"], 4, "App.Busy"),
        (&["status", "Not-An-Id"], 2, "Param.APPID.FormatError"),
    ];
    for (args, code, spec_code) in cases {
        let output = appunit(&daemon, args);
        assert_eq!(
            output.status.code(),
            Some(code),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(spec_code),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_appunit"))
        .args(["--socket", "/nonexistent/appunit.sock", "list"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("/nonexistent/appunit.sock"));
}

#[test]
fn completions_and_man_page_come_from_clap() {
    let run = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_appunit"))
            .args(args)
            .output()
            .unwrap();
        assert!(output.status.success());
        String::from_utf8_lossy(&output.stdout).to_string()
    };
    assert!(run(&["completions", "bash"]).contains("appunit"));
    let page = run(&["manpage"]);
    assert!(page.contains(".TH") && page.contains("uninstall"), "{page}");
}

/// On real systemd and containerd: `events` shows an install's phases, `logs` a known
/// line and `logs -f` a new one, `backup` → `backups` → `restore` under a new name runs.
#[tokio::test]
async fn backups_logs_and_events_from_the_command_line() {
    let host = Host::boot();
    let socket = host.socket();
    let run = |args: &[&str]| {
        let output = command(&socket, args).output().unwrap();
        assert!(output.status.success(), "{args:?}: {}", stderr(&output));
        stdout(&output)
    };
    let (mut events, event_lines) = spawn_lines(&socket, &["events"]);
    // `events` prints nothing until there is one: time to subscribe before the install.
    std::thread::sleep(Duration::from_secs(1));
    let installed = run(&["install", "duo", "--name", "orig", "--version", "1"]);
    assert!(installed.contains("orig (Duo 1): running"), "{installed}");
    let seen = line_until(&event_lines, Duration::from_secs(10), |line| {
        line.contains(" orig 30 ")
    });
    let mut codes: Vec<&str> = seen
        .iter()
        .filter_map(|line| line.split(' ').nth(2).filter(|_| line.contains(" orig ")))
        .collect();
    codes.dedup();
    assert_eq!(codes, ["00", "10", "11", "12", "30"], "{seen:#?}");
    events.kill().unwrap();
    events.wait().unwrap();

    let logs = run(&["logs", "orig"]);
    assert!(
        logs.contains("web: web starting") && logs.contains("db: db starting"),
        "{logs}"
    );
    let (mut follow, log_lines) = spawn_lines(
        &socket,
        &["logs", "-f", "orig", "--service", "db", "--lines", "1"],
    );
    line_until(&log_lines, Duration::from_secs(10), |l| {
        l.starts_with("db: ")
    });
    run(&["restart", "orig"]);
    line_until(&log_lines, Duration::from_secs(30), |l| {
        l == "db: db starting"
    });
    follow.kill().unwrap();
    follow.wait().unwrap();

    let backup = run(&["backup", "orig"]);
    let backup = backup.trim();
    assert!(
        backup.starts_with("orig-") && backup.ends_with(".tar.zst"),
        "{backup}"
    );
    assert!(run(&["backups"]).contains(backup));
    let listed: serde_json::Value =
        serde_json::from_str(&run(&["--json", "backups", "orig"])).unwrap();
    assert_eq!(listed[0]["backup"], backup, "{listed}");
    let restored = run(&["restore", backup, "--name", "copy"]);
    assert!(restored.contains("copy (Duo 1): running"), "{restored}");
    let (orig, copy) = (host.status("orig").await, host.status("copy").await);
    assert_eq!(copy["status"], "running", "{copy}");
    assert_eq!(
        orig["running_info"]["password"], copy["running_info"]["password"],
        "{copy}"
    );
    assert_eq!(copy["last_operation"]["kind"], "restore", "{copy}");

    run(&["backup-delete", backup]);
    assert!(!run(&["backups"]).contains(backup));
    let missing = command(&socket, &["restore", backup]).output().unwrap();
    assert_eq!(missing.status.code(), Some(2), "{}", stderr(&missing));
    assert!(
        stderr(&missing).contains("Param.Backup.NotExist"),
        "{}",
        stderr(&missing)
    );
}
