//! The shipped nginx site (packaging/nginx/appunit.conf) in front of the real daemon.

mod common;

use common::Daemon;
use common::gateway::{get, nginx};

#[tokio::test]
async fn nginx_proxies_the_api_with_basic_auth() {
    let daemon = Daemon::start();
    for name in ["blog", "wiki"] {
        let query = format!("app_name=wordpress&customer_app_name={name}&app_version=7.1");
        assert_eq!(daemon.call("AppInstall", &query).await.status, 200);
    }
    let nginx = nginx(&daemon.socket, daemon.dir.path());
    let direct = daemon.call("AppList", "").await;
    let (status, body) = get(nginx.port, "/api/AppList", Some("admin:s3cret"));
    assert_eq!(status, 200);
    assert_eq!(body, direct.raw.to_vec());

    let (status, _) = get(nginx.port, "/api/AppList", None);
    assert_eq!(status, 401);
    let (status, _) = get(nginx.port, "/api/AppList", Some("admin:wrong"));
    assert_eq!(status, 401);

    // Errors keep their SPEC envelope through the gateway.
    let (status, body) = get(
        nginx.port,
        "/api/AppStatus?app_id=nosuch",
        Some("admin:s3cret"),
    );
    let envelope: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (status, envelope["Error"]["Code"].as_str()),
        (404, Some("Param.APPID.NotExist"))
    );

    // Logos are public.
    let (status, body) = get(nginx.port, "/catalog/wordpress/logo.svg", None);
    assert_eq!(status, 200);
    assert!(body.starts_with(b"<svg"));
}
