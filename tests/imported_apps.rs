//! Apps imported from peer catalogs run unchanged: a Websoft9 WordPress and a CasaOS
//! WordPress, written here in each source's format (tests/fixtures/import/run), imported
//! by `appunit catalog import`, reach running on the real images (scripts/real-images)
//! and serve WordPress's install page, which proves PHP reached the database.

mod common;

use common::host::Host;
use common::real::{Mirror, in_network, real_host};
use std::path::Path;
use std::time::{Duration, Instant};

fn import(format: &str, source: &Path, into: &Path) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_appunit"))
        .args(["catalog", "import", "--format", format])
        .arg(source)
        .arg("--into")
        .arg(into)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("imported 1 of 1 apps"),
        "{out:?}"
    );
}

/// The app's front page once WordPress answers it from the database, within `limit`.
fn install_page(host: &Host, app_id: &str, port: u64, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let out = in_network(host.sandbox.pid, "curl")
            .args(["-sL", "-m", "60", &format!("http://127.0.0.1:{port}/")])
            .output()
            .unwrap();
        let page = String::from_utf8_lossy(&out.stdout).to_string();
        // WordPress answers "Error establishing a database connection" until the
        // database is up (the imported apps start it without a health gate).
        if page.contains("wp-admin/install.php") || page.contains("Installation") {
            return page;
        }
        assert!(
            Instant::now() < deadline,
            "no install page:\n{page}\n{out:?}\n{}\nhosts: {:?}",
            host.journal(&format!("appunit-{app_id}.service")),
            std::fs::read_to_string(host.sandbox.path(&format!("appunit/apps/{app_id}/hosts")))
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[tokio::test]
async fn imported_websoft9_and_casaos_apps_run_on_real_images() {
    let host = Host::boot();
    let fixtures = Path::new(common::REPO).join("tests/fixtures/import/run");
    for format in ["websoft9", "casaos"] {
        let into = host.sandbox.path(&format!("run/imported/{format}"));
        import(format, &fixtures.join(format), &into);
    }
    let host = real_host(
        host,
        Mirror::Token,
        &["/run/imported/websoft9", "/run/imported/casaos"],
    );
    for (app_name, app_id) in [("wordpress", "ninesoft"), ("casapress", "casa")] {
        let query = format!("app_name={app_name}&customer_app_name={app_id}&app_version=6.9");
        let reply = host.call("AppInstall", &query).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        let status = host.running(app_id, Duration::from_secs(600)).await;
        let port = status["running_info"]["port"].as_u64().unwrap();
        install_page(&host, app_id, port, Duration::from_secs(120));
    }
}
