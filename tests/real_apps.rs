//! Real server software from the shipped catalog, unchanged: WordPress with its database,
//! PostgreSQL, MariaDB and Redis, from images of Debian's packages (scripts/real-images)
//! served by a registry that is the `docker.io` mirror, on real containerd and systemd.
//! Each is checked by its own client.

mod common;

use common::gateway::{get, nginx};
use common::host::Host;
use common::real::{Mirror, in_network, push_real_images, real_host};
use common::registry::AuthRegistry;
use common::sandbox::{REPO_INSIDE, Sandbox};
use std::process::Command;
use std::time::Duration;

async fn install(host: &Host, app_name: &str, app_id: &str, version: &str) -> serde_json::Value {
    let query = format!("app_name={app_name}&customer_app_name={app_id}&app_version={version}");
    let reply = host.call("AppInstall", &query).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    running(host, app_id).await
}

async fn running(host: &Host, app_id: &str) -> serde_json::Value {
    host.running(app_id, Duration::from_secs(600)).await
}

/// WordPress as a browser in the sandbox sees it, with a cookie jar.
struct Site {
    sandbox_pid: u32,
    url: String,
    jar: std::path::PathBuf,
}

impl Site {
    fn curl(&self, args: &[&str]) -> String {
        let jar = self.jar.to_str().unwrap();
        let out = in_network(self.sandbox_pid, "curl")
            .args(["-sS", "-L", "-m", "60", "-b", jar, "-c", jar])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "curl {args:?}: {}",
            common::text(&out)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    fn get(&self, path: &str) -> String {
        self.curl(&[&format!("{}{path}", self.url)])
    }

    fn post(&self, path: &str, fields: &[(&str, &str)]) -> String {
        let mut args = vec![format!("{}{path}", self.url)];
        for (name, value) in fields {
            args.push("--data-urlencode".into());
            args.push(format!("{name}={value}"));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.curl(&args)
    }

    fn log_in(&self, user: &str, password: &str) -> String {
        // wp-login.php wants its test cookie first.
        self.get("/wp-login.php");
        self.post(
            "/wp-login.php",
            &[("log", user), ("pwd", password), ("testcookie", "1")],
        )
    }
}

#[tokio::test]
async fn wordpress_installs_serves_and_keeps_its_site() {
    let host = real_host(
        Host::boot(),
        Mirror::Token,
        &[&format!("{REPO_INSIDE}/catalog")],
    );
    let status = install(&host, "wordpress", "blog", "7.1").await;
    let info = &status["running_info"];
    let password = info["password"].as_str().unwrap().to_string();
    let site = Site {
        sandbox_pid: host.sandbox.pid,
        url: format!("http://127.0.0.1:{}", info["port"]),
        jar: host.sandbox.path("cookies"),
    };
    // The install page is PHP that reached MariaDB with the app's password.
    let page = site.get("/");
    assert!(
        page.contains("wp-admin/install.php") || page.contains("Installation"),
        "{page}"
    );
    let installed = site.post(
        "/wp-admin/install.php?step=2",
        &[
            ("weblog_title", "Appunit Blog"),
            ("user_name", "admin"),
            ("admin_password", &password),
            ("admin_password2", &password),
            ("pw_weak", "1"),
            ("admin_email", "admin@example.com"),
            ("blog_public", "0"),
        ],
    );
    assert!(installed.contains("Success!"), "{installed}");
    let dashboard = site.log_in("admin", &password);
    assert!(dashboard.contains("Dashboard"), "{dashboard}");

    // AppRestart keeps the site.
    let reply = host.call("AppRestart", "app_id=blog").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    running(&host, "blog").await;
    assert!(site.get("/").contains("Appunit Blog"));

    // A reboot keeps it too.
    let folders = host.sandbox.shut_down();
    let host = Host::on(Sandbox::boot_in(folders, ""));
    host.start_daemon();
    let site = Site {
        sandbox_pid: host.sandbox.pid,
        ..site
    };
    host.watch("blog", Duration::from_secs(300), |s| {
        s["status"] == "running"
    })
    .await;
    assert!(site.get("/").contains("Appunit Blog"));

    // Uninstalled with its data kept, then installed again: the same site, the same
    // session still logged in, the kept password still the database's.
    let reply = host
        .call("AppUninstall", "app_id=blog&delete_data=false")
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    // The registry does not outlive a boot (it keeps its images under /run).
    let registry = AuthRegistry::token(&host.sandbox, 5100);
    push_real_images(&host.sandbox, &registry);
    let again = install(&host, "wordpress", "blog", "7.1").await;
    assert_eq!(again["running_info"]["password"], password.as_str());
    assert!(site.get("/").contains("Appunit Blog"));
    let admin = site.get("/wp-admin/");
    assert!(admin.contains("Dashboard"), "{admin}");
}

/// `PGPASSWORD`/`MYSQL_PWD`/`REDISCLI_AUTH` carry the password: never an argument.
fn client(sandbox: &Sandbox, program: &str, password_variable: &str, password: &str) -> Command {
    let mut command = in_network(sandbox.pid, program);
    command.env(password_variable, password);
    command
}

#[tokio::test]
async fn databases_and_cache_answer_their_own_clients() {
    let host = real_host(
        Host::boot(),
        Mirror::Basic,
        &[&format!("{REPO_INSIDE}/catalog")],
    );
    let postgres = install(&host, "postgres", "pg", "18").await;
    let mariadb = install(&host, "mariadb", "maria", "11.4").await;
    // Through the gateway, as a dashboard would: nginx with basic auth on the socket.
    let gateway_dir = host.sandbox.path("gateway");
    std::fs::create_dir_all(&gateway_dir).unwrap();
    let gateway = nginx(&host.socket(), &gateway_dir);
    let credentials = Some("admin:s3cret");
    let path = "/api/AppInstall?app_name=redis&customer_app_name=cache&app_version=7.4";
    let (code, body) = get(gateway.port, path, credentials);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(get(gateway.port, path, None).0, 401);
    let redis = running(&host, "cache").await;
    let (code, body) = get(gateway.port, "/api/AppList", credentials);
    assert_eq!(code, 200);
    let listed: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let mut names: Vec<&str> = listed["ResponseData"]
        .as_array()
        .unwrap()
        .iter()
        .map(|app| app["app_id"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["cache", "maria", "pg"], "{listed}");
    // nginx's image is an OCI index whose amd64 image has a zstd layer.
    let web = install(&host, "nginx", "web", "1.31").await;
    let page = in_network(host.sandbox.pid, "curl")
        .args([
            "-sS",
            &format!("http://127.0.0.1:{}/", web["running_info"]["port"]),
        ])
        .output()
        .unwrap();
    assert!(common::text(&page).contains("nginx"), "{page:?}");

    let login = |status: &serde_json::Value, password: &str| -> (Command, Command, Command) {
        let port = status["running_info"]["port"].to_string();
        let user = status["running_info"]["user_name"]
            .as_str()
            .unwrap()
            .to_string();
        let mut psql = client(&host.sandbox, "psql", "PGPASSWORD", password);
        psql.args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            &user,
            "-tAc",
            "select 40 + 2",
        ]);
        let mut mysql = client(&host.sandbox, "mysql", "MYSQL_PWD", password);
        mysql.args([
            "-h",
            "127.0.0.1",
            "-P",
            &port,
            "-u",
            &user,
            "-NBe",
            "select 40 + 2",
        ]);
        let mut redis_cli = client(&host.sandbox, "redis-cli", "REDISCLI_AUTH", password);
        redis_cli.args(["-h", "127.0.0.1", "-p", &port, "incrby", "answer", "42"]);
        (psql, mysql, redis_cli)
    };
    let password = |status: &serde_json::Value| {
        status["running_info"]["password"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let out = login(&postgres, &password(&postgres)).0.output().unwrap();
    assert_eq!(common::text(&out).trim(), "42", "psql: {out:?}");
    let out = login(&mariadb, &password(&mariadb)).1.output().unwrap();
    assert_eq!(common::text(&out).trim(), "42", "mysql: {out:?}");
    let out = login(&redis, &password(&redis)).2.output().unwrap();
    assert_eq!(common::text(&out).trim(), "42", "redis-cli: {out:?}");

    // No process shows a password in its arguments, which every local user can read.
    let processes = host.sandbox.run("ps", &["-eo", "args"]);
    let processes = String::from_utf8_lossy(&processes.stdout).to_string();
    for status in [&postgres, &mariadb, &redis] {
        assert!(!processes.contains(&password(status)), "{processes}");
    }

    // A wrong password is refused by each.
    let out = login(&postgres, "wrong").0.output().unwrap();
    assert!(!out.status.success(), "psql: {out:?}");
    assert!(
        common::text(&out).contains("password authentication failed"),
        "{out:?}"
    );
    let out = login(&mariadb, "wrong").1.output().unwrap();
    assert!(
        common::text(&out).contains("Access denied"),
        "mysql: {out:?}"
    );
    let out = login(&redis, "wrong").2.output().unwrap();
    assert!(
        common::text(&out).contains("WRONGPASS"),
        "redis-cli: {out:?}"
    );

    // A graceful stop: PostgreSQL says it shut down, and starts without recovery.
    let reply = host.call("AppStop", "app_id=pg").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let log = host.journal("appunit-pg.service");
    assert!(log.contains("database system is shut down"), "{log}");
    let reply = host.call("AppStart", "app_id=pg").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    running(&host, "pg").await;
    let log = host.journal("appunit-pg.service");
    assert!(!log.contains("automatic recovery"), "{log}");
    let out = login(&postgres, &password(&postgres)).0.output().unwrap();
    assert_eq!(
        common::text(&out).trim(),
        "42",
        "psql after the restart: {out:?}"
    );
}
