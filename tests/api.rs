//! The API contract (SPEC) against the real daemon binary over its Unix socket.

mod common;

use appunit::store::{Store, Transition};
use common::{Call, Daemon, assert_envelope};
use serde_json::json;

/// SPEC's Chinese messages, which clients may show verbatim.
const ZH: &[(&str, &str)] = &[
    ("Param.AppName.Blank", "APP名称为空"),
    ("Param.AppName.NotExis", "不支持安装指定的App"),
    ("Param.CustomerAppName.Blank", "用户自定义APP名称为空"),
    (
        "Param.CustomerAppName.FormatError",
        "用户自定义APP名称只能是数字和小写字母组成",
    ),
    (
        "Param.CustomerAppName.Repeat",
        "已经安装了此应用，请重新指定APP名称",
    ),
    (
        "Param.CustomerAppName.Wait",
        "同名应用已经在安装等待中，请重新指定APP名称",
    ),
    ("Param.AppVersion.Blank", "安装App的版本不能为空"),
    ("Param.AppVersion.NotExist", "不支持安装指定的版本"),
    (
        "Requirement.NotEnough",
        "系统资源（cpu，内存，磁盘空间）不足",
    ),
    ("Param.APPID.Blank", "APP_ID 不能为空"),
    ("Param.APPID.FormatError", "APP_ID 只能是数字和小写字母组成"),
    ("Param.APPID.NotExist", "APP不存在"),
];

fn zh(code: &str) -> Option<&'static str> {
    ZH.iter().find(|(c, _)| *c == code).map(|(_, m)| *m)
}

const INSTALL_OK: &str = "app_name=nginx&customer_app_name=web1&app_version=1.30";

/// Every SPEC code of every Action, in the seed's order, in both languages.
#[tokio::test]
async fn every_error_code_in_both_languages() {
    let daemon = Daemon::start();
    assert_eq!(
        daemon
            .call(
                "AppInstall",
                "app_name=nginx&customer_app_name=queued1&app_version=1.30"
            )
            .await
            .status,
        200
    );
    assert_eq!(
        daemon
            .call(
                "AppInstall",
                "app_name=nginx&customer_app_name=done1&app_version=1.30"
            )
            .await
            .status,
        200
    );
    // An app past its install: only the pipeline moves records there (the queue is
    // paused here), so the test walks it through the store's state machine.
    let store = Store::open(&daemon.database()).unwrap();
    let done = store.get("done1").unwrap().unwrap();
    for step in [
        Transition::Dequeue,
        Transition::Pulled,
        Transition::Created,
        Transition::Started,
    ] {
        store.transition(&done, step, None).unwrap();
    }

    let cases: &[(&str, &str, &str)] = &[
        ("AppInstall", "", "Param.AppName.Blank"),
        (
            "AppInstall",
            "app_name=&customer_app_name=x1&app_version=1",
            "Param.AppName.Blank",
        ),
        (
            "AppInstall",
            "app_name=nosuchapp&customer_app_name=Bad!",
            "Param.AppName.NotExis",
        ),
        (
            "AppInstall",
            "app_name=nginx",
            "Param.CustomerAppName.Blank",
        ),
        (
            "AppInstall",
            "app_name=nginx&customer_app_name=My-App&app_version=",
            "Param.CustomerAppName.FormatError",
        ),
        (
            "AppInstall",
            "app_name=nginx&customer_app_name=a",
            "Param.CustomerAppName.FormatError",
        ),
        (
            "AppInstall",
            &format!("app_name=nginx&customer_app_name={}", "a".repeat(33)),
            "Param.CustomerAppName.FormatError",
        ),
        (
            "AppInstall",
            "app_name=nginx&customer_app_name=done1",
            "Param.CustomerAppName.Repeat",
        ),
        (
            "AppInstall",
            "app_name=nginx&customer_app_name=queued1",
            "Param.CustomerAppName.Wait",
        ),
        (
            "AppInstall",
            "app_name=nginx&customer_app_name=new1",
            "Param.AppVersion.Blank",
        ),
        (
            "AppInstall",
            "app_name=nginx&customer_app_name=new1&app_version=0.0.1",
            "Param.AppVersion.NotExist",
        ),
        (
            "AppInstall",
            "app_name=bigapp&customer_app_name=new1&app_version=1.0",
            "Requirement.NotEnough",
        ),
        (
            "AppList",
            "customer_app_name=NOT_VALID",
            "Param.CustomerAppName.FormatError",
        ),
        (
            "AppUninstall",
            "app_id=queued1&delete_data=perhaps",
            "Param.Format.Error",
        ),
        ("AppStop", "app_id=queued1", "App.Busy"),
        ("NoSuchAction", "", "Action.NotExist"),
    ];
    let mut all: Vec<(String, String, String)> = cases
        .iter()
        .map(|(a, q, c)| (a.to_string(), q.to_string(), c.to_string()))
        .collect();
    for action in [
        "AppUninstall",
        "AppStart",
        "AppStop",
        "AppRestart",
        "AppStatus",
    ] {
        for (query, code) in [
            ("", "Param.APPID.Blank"),
            ("app_id=", "Param.APPID.Blank"),
            ("app_id=UPPER", "Param.APPID.FormatError"),
            ("app_id=a%2Fb", "Param.APPID.FormatError"),
            ("app_id=nosuchapp", "Param.APPID.NotExist"),
        ] {
            all.push((action.into(), query.into(), code.into()));
        }
    }
    for (action, query, code) in &all {
        for language in ["zh-CN", "en-US"] {
            let reply = daemon
                .send(Call::get(action, query).header("Language", language))
                .await;
            assert_envelope(&reply);
            assert_eq!(reply.status, 404, "{action}?{query}: {reply:?}");
            assert_eq!(reply.code(), code, "{action}?{query}");
            if language == "zh-CN" {
                if let Some(text) = zh(code) {
                    assert_eq!(reply.message(), text, "{action}?{query}");
                }
                assert!(
                    !reply.message().is_ascii(),
                    "{code} needs Chinese: {reply:?}"
                );
            } else {
                assert!(
                    reply.message().is_ascii() && !reply.message().is_empty(),
                    "{reply:?}"
                );
            }
        }
    }
    // Without a Language header: English.
    let reply = daemon.call("AppStatus", "").await;
    assert_eq!(reply.message(), "APP_ID must not be empty.");
}

#[tokio::test]
async fn failure_data_carries_a_well_formed_app_id() {
    let daemon = Daemon::start();
    let reply = daemon.call("AppStart", "app_id=nosuchapp").await;
    assert_eq!(reply.data(), &json!({"app_id": "nosuchapp"}));
    let reply = daemon.call("AppStart", "app_id=Bad").await;
    assert_eq!(reply.data(), &json!(null));
    let reply = daemon.call("AppStatus", "app_id=nosuchapp").await;
    assert_eq!(reply.data(), &json!(null));
    let reply = daemon.call("AppInstall", "customer_app_name=blog").await;
    assert_eq!(
        (reply.code(), reply.data()),
        ("Param.AppName.Blank", &json!({"app_id": "blog"}))
    );
}

/// GET, POST with a query string, POST with a form and POST with JSON are one call:
/// the same sequence of calls, each way on a daemon of its own, answers byte for byte
/// the same.
#[tokio::test]
async fn four_ways_of_calling_give_identical_answers() {
    let sequence = [
        (
            "AppInstall",
            INSTALL_OK,
            json!({"app_name": "nginx", "customer_app_name": "web1", "app_version": "1.30"}),
        ),
        (
            "AppInstall",
            INSTALL_OK,
            json!({"app_name": "nginx", "customer_app_name": "web1", "app_version": "1.30"}),
        ),
        ("AppStatus", "app_id=web1", json!({"app_id": "web1"})),
        ("AppList", "", json!({})),
        (
            "AppList",
            "customer_app_name=web1",
            json!({"customer_app_name": "web1"}),
        ),
        (
            "AppStop",
            "app_id=nosuchapp",
            json!({"app_id": "nosuchapp"}),
        ),
        (
            "AppUninstall",
            "app_id=web1&delete_data=maybe",
            json!({"app_id": "web1", "delete_data": "maybe"}),
        ),
        (
            "AppInstall",
            "app_name=nginx&customer_app_name=BAD",
            json!({"app_name": "nginx", "customer_app_name": "BAD"}),
        ),
        (
            "AppUninstall",
            "app_id=web1&delete_data=false",
            json!({"app_id": "web1", "delete_data": "false"}),
        ),
        ("AppStatus", "app_id=web1", json!({"app_id": "web1"})),
    ];
    let ways: [fn(&str, &str, &serde_json::Value) -> Call; 4] = [
        |action, query, _| Call::get(action, query),
        |action, query, _| Call::new("POST", action, query),
        |action, query, _| {
            Call::new("POST", action, "").body("application/x-www-form-urlencoded", query)
        },
        |action, _, body| Call::new("POST", action, "").body("application/json", body.to_string()),
    ];
    let mut answers = Vec::new();
    for way in ways {
        let daemon = Daemon::start();
        let mut replies = Vec::new();
        for (action, query, body) in &sequence {
            let reply = daemon.send(way(action, query, body)).await;
            assert_envelope(&reply);
            replies.push((reply.status, reply.raw));
        }
        answers.push(replies);
    }
    let statuses: Vec<u16> = answers[0].iter().map(|(status, _)| *status).collect();
    assert_eq!(statuses, [200, 404, 200, 200, 200, 404, 404, 404, 200, 404]);
    for other in &answers[1..] {
        assert_eq!(other, &answers[0]);
    }
}

/// Parameters given twice: the body wins; JSON booleans are booleans.
#[tokio::test]
async fn body_wins_and_json_booleans_work() {
    let daemon = Daemon::start();
    assert_eq!(daemon.call("AppInstall", INSTALL_OK).await.status, 200);
    let reply = daemon
        .send(
            Call::new("POST", "AppStatus", "app_id=nosuchapp")
                .body("application/json", r#"{"app_id":"web1"}"#),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let reply = daemon
        .send(Call::new("POST", "AppUninstall", "").body(
            "application/json",
            r#"{"app_id":"web1","delete_data":true}"#,
        ))
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
}

#[tokio::test]
async fn wrong_json_types_are_format_errors() {
    let daemon = Daemon::start();
    for body in [
        r#"{"app_id": 5}"#,
        r#"{"app_id": ["a"]}"#,
        r#"{"app_id": {"x": 1}}"#,
        r#"{"app_id": true}"#,
        r#"{"app_id": "web1", "delete_data": 1}"#,
        r#"{"app_id": "#,
        r#"[1, 2]"#,
    ] {
        let reply = daemon
            .send(Call::new("POST", "AppUninstall", "").body("application/json", body))
            .await;
        assert_envelope(&reply);
        assert_eq!(
            (reply.status, reply.code()),
            (404, "Param.Format.Error"),
            "{body}"
        );
    }
}

#[tokio::test]
async fn http_statuses_200_404_405_413() {
    let daemon = Daemon::start();
    assert_eq!(daemon.call("AppList", "").await.status, 200);
    assert_eq!(
        daemon.call("AppStatus", "app_id=nosuchapp").await.status,
        404
    );

    let unknown = daemon.call("appinstall", "").await;
    assert_eq!((unknown.status, unknown.code()), (404, "Action.NotExist"));
    let root = daemon.call("", "").await;
    assert_eq!((root.status, root.code()), (404, "Action.NotExist"));

    for method in ["PUT", "DELETE", "PATCH"] {
        let reply = daemon.send(Call::new(method, "AppList", "")).await;
        assert_eq!(reply.status, 405, "{method}");
        assert_envelope(&reply);
    }

    let limit = 64 * 1024;
    let at_limit = format!("app_id=nosuchapp&pad={}", "x".repeat(limit - 21));
    assert_eq!(at_limit.len(), limit);
    let reply = daemon
        .send(
            Call::new("POST", "AppStatus", "")
                .body("application/x-www-form-urlencoded", at_limit.clone()),
        )
        .await;
    assert_eq!((reply.status, reply.code()), (404, "Param.APPID.NotExist"));
    let reply = daemon
        .send(
            Call::new("POST", "AppStatus", "")
                .body("application/x-www-form-urlencoded", at_limit + "x"),
        )
        .await;
    assert_eq!((reply.status, reply.code()), (413, "Param.TooLarge"));
    assert_envelope(&reply);
}

#[tokio::test]
async fn version_header() {
    let daemon = Daemon::start();
    let reply = daemon
        .send(Call::get("AppList", "").header("Version", "2"))
        .await;
    assert_eq!(
        (reply.status, reply.code()),
        (404, "Param.Version.NotSupport")
    );
    let reply = daemon
        .send(Call::get("AppList", "").header("Version", "1"))
        .await;
    assert_eq!(reply.status, 200);
}

/// AppInstall queues; the queue survives `kill -9`; AppUninstall removes the app.
#[tokio::test]
async fn queued_install_survives_a_crash_and_uninstalls() {
    let mut daemon = Daemon::start();
    let reply = daemon
        .call(
            "AppInstall",
            "app_name=wordpress&customer_app_name=blog&app_version=7.1",
        )
        .await;
    assert_eq!(
        (reply.status, reply.data()),
        (200, &json!({"app_id": "blog"}))
    );

    let status = daemon.call("AppStatus", "app_id=blog").await;
    let info = status.data();
    assert_eq!(info["status_code"], "00");
    assert_eq!(info["status"], "queuing");
    assert_eq!(info["name"], "wordpress");
    assert_eq!(info["customer_name"], "blog");
    assert_eq!(info["trade_mark"], "WordPress");
    assert_eq!(info["app_version"], "7.1");
    assert_eq!(info["official_app"], true);
    assert_eq!(info["status_reason"], json!(null));
    assert_eq!(info["progress"], json!(null));
    assert_eq!(info["image_url"], "/catalog/wordpress/logo.svg");

    let list = daemon.call("AppList", "").await;
    let apps = list.data().as_array().unwrap();
    assert_eq!(apps.len(), 1);
    assert_eq!(apps[0]["app_id"], "blog");
    assert_eq!(apps[0]["running_info"], json!(null));

    let again = daemon
        .call(
            "AppInstall",
            "app_name=wordpress&customer_app_name=blog&app_version=7.1",
        )
        .await;
    assert_eq!(again.code(), "Param.CustomerAppName.Wait");

    daemon.kill();
    daemon.restart();
    let status = daemon.call("AppStatus", "app_id=blog").await;
    assert_eq!(status.data()["status"], "queuing", "{status:?}");

    let reply = daemon.call("AppUninstall", "app_id=blog").await;
    assert_eq!(
        (reply.status, reply.data()),
        (200, &json!({"app_id": "blog"}))
    );
    assert_eq!(
        daemon.call("AppStatus", "app_id=blog").await.code(),
        "Param.APPID.NotExist"
    );
    assert_eq!(daemon.call("AppList", "").await.data(), &json!([]));
    assert_eq!(
        daemon.call("AppUninstall", "app_id=blog").await.code(),
        "Param.APPID.NotExist"
    );
}

#[tokio::test]
async fn list_is_sorted_and_filters_by_exact_name() {
    let daemon = Daemon::start();
    for name in ["cc", "aa", "bb", "aaa"] {
        let query = format!("app_name=redis&customer_app_name={name}&app_version=8.10");
        assert_eq!(daemon.call("AppInstall", &query).await.status, 200);
    }
    let list = daemon.call("AppList", "").await;
    let ids: Vec<&str> = list
        .data()
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["app_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["aa", "aaa", "bb", "cc"]);
    let only = daemon.call("AppList", "customer_app_name=aa").await;
    assert_eq!(only.data().as_array().unwrap().len(), 1);
    let none = daemon.call("AppList", "customer_app_name=zz").await;
    assert_eq!(none.data(), &json!([]));
}

/// Concurrent installs: distinct names get distinct ports; one name is taken once.
#[tokio::test]
async fn concurrent_installs_allocate_distinct_ports() {
    let daemon = std::sync::Arc::new(Daemon::start());
    let mut tasks = Vec::new();
    for i in 0..20 {
        let daemon = daemon.clone();
        tasks.push(tokio::spawn(async move {
            daemon
                .call(
                    "AppInstall",
                    &format!("app_name=nginx&customer_app_name=site{i}&app_version=1.30"),
                )
                .await
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap().status, 200);
    }
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let daemon = daemon.clone();
        tasks.push(tokio::spawn(async move {
            daemon
                .call(
                    "AppInstall",
                    "app_name=nginx&customer_app_name=same&app_version=1.30",
                )
                .await
        }));
    }
    let mut codes = Vec::new();
    for task in tasks {
        codes.push(task.await.unwrap().code().to_string());
    }
    assert_eq!(
        codes.iter().filter(|c| c.is_empty()).count(),
        1,
        "{codes:?}"
    );
    assert!(
        codes
            .iter()
            .all(|c| c.is_empty() || c == "Param.CustomerAppName.Wait" || c == "App.Busy"),
        "{codes:?}"
    );

    let mut ports: Vec<u16> = Store::open(&daemon.database())
        .unwrap()
        .list(None)
        .unwrap()
        .iter()
        .map(|app| app.http_port)
        .collect();
    ports.sort();
    let distinct: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
    assert_eq!((ports.len(), distinct.len()), (21, 21));
    assert!(ports.iter().all(|p| *p >= 9006), "{ports:?}");
}

/// A port with a listener on the host is skipped.
#[tokio::test]
async fn a_port_taken_on_the_host_is_skipped() {
    let daemon = Daemon::start();
    // nginx's default port is 9006: hold it, and the install must take the next one.
    // If another program of this machine holds it already, that serves the test as well.
    let holder = std::net::TcpListener::bind("0.0.0.0:9006");
    daemon
        .call(
            "AppInstall",
            "app_name=nginx&customer_app_name=held&app_version=1.30",
        )
        .await;
    drop(holder);
    let store = Store::open(&daemon.database()).unwrap();
    let port = store.get("held").unwrap().unwrap().http_port;
    assert!(port > 9006, "{port}");
}

#[tokio::test]
async fn logos_are_served_where_image_url_points() {
    let daemon = Daemon::start();
    let logo = daemon
        .send(Call::get("catalog/wordpress/logo.svg", ""))
        .await;
    assert_eq!(
        (logo.status, logo.content_type.as_str()),
        (200, "image/svg+xml")
    );
    assert!(logo.raw.starts_with(b"<svg"));
    let missing = daemon
        .send(Call::get("catalog/wordpress/logo.png", ""))
        .await;
    assert_eq!(missing.status, 404);
    let missing = daemon.send(Call::get("catalog/nosuch/logo.svg", "")).await;
    assert_eq!(missing.status, 404);
}

#[tokio::test]
async fn sigterm_stops_cleanly() {
    let mut daemon = Daemon::start();
    assert_eq!(daemon.call("AppList", "").await.status, 200);
    assert!(daemon.terminate().success());
}

#[test]
fn bad_config_stops_the_daemon_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    for (text, key) in [
        ("sokcet = \"/tmp/x.sock\"\n", "sokcet"),
        ("state_dir = 42\n", "state_dir"),
        ("[registries.\"docker.io\"]\nmirors = []\n", "mirors"),
    ] {
        let path = dir.path().join("config.toml");
        std::fs::write(&path, text).unwrap();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_appunitd"))
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{text}");
        assert!(
            stderr.contains(key) && stderr.contains(path.to_str().unwrap()),
            "{stderr}"
        );
    }
}

/// SIGTERM lets a request that is already in flight finish, then the daemon exits 0.
#[test]
fn sigterm_finishes_requests_in_flight() {
    use std::io::{Read, Write};
    let mut daemon = Daemon::start();
    let mut stream = std::os::unix::net::UnixStream::connect(&daemon.socket).unwrap();
    stream
        .write_all(b"POST /AppList HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nx=123")
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let pid = daemon.pid().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    stream.write_all(b"45678").unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.ends_with(r#"{"ResponseData":[]}"#), "{reply}");
    assert!(daemon.terminate_wait().success());
}

/// Socket activation: the daemon serves the socket systemd passes (LISTEN_FDS), not its
/// configured path. `systemd-socket-activate` passes it as appunitd.socket would.
#[tokio::test]
async fn serves_a_socket_passed_by_systemd() {
    let daemon = Daemon::start();
    let passed = daemon.dir.path().join("passed.sock");
    let mut activator = std::process::Command::new("systemd-socket-activate")
        .arg("--listen")
        .arg(&passed)
        .arg(env!("CARGO_BIN_EXE_appunitd"))
        .arg("--config")
        .arg(daemon.config_path())
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("systemd-socket-activate (package systemd)");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !passed.exists() {
        assert!(std::time::Instant::now() < deadline, "no socket");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The first request starts appunitd, which answers on the passed socket.
    let reply = common::send(&passed, Call::get("AppList", "")).await;
    assert_eq!(reply.status, 200);
    activator.kill().unwrap();
    activator.wait().unwrap();
}
