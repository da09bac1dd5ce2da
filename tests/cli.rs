//! The `appunit` command line against the real daemon.

mod common;

use common::Daemon;
use std::process::Output;

fn appunit(daemon: &Daemon, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_appunit"))
        .arg("--socket")
        .arg(&daemon.socket)
        .arg("--config")
        .arg(daemon.config_path())
        .args(args)
        .env("LANG", "C.UTF-8")
        .output()
        .unwrap()
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
