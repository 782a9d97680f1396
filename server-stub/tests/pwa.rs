//! PWA cache protection over real HTTP and WebSockets: the app version in `index.html`,
//! `GET /api/version`, `--reported-version`, and `POST /api/admin/version` pushing Control
//! `version` to open sockets.

mod common;

use common::{config, TestServer};
use p3_lanes::core::control::Control;
use serde_json::{json, Value};
use std::path::PathBuf;

const INDEX: &str = "<!doctype html><head><meta name=\"app-version\" content=\"dev\"></head>";

/// A static dir with an `index.html` carrying the version meta tag.
fn www(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "server-stub-pwa-{tag}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.html"), INDEX).unwrap();
    dir
}

async fn page(server: &TestServer, path: &str) -> (String, String) {
    let resp = server.http.get(server.url(path)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let cache = resp.headers()["cache-control"].to_str().unwrap().to_owned();
    (resp.text().await.unwrap(), cache)
}

async fn api_version(server: &TestServer) -> Value {
    let resp = server
        .http
        .get(server.url("/api/version"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["cache-control"], "no-store");
    resp.json::<Value>().await.unwrap()["version"].clone()
}

async fn set_version(server: &TestServer, body: &Value) -> reqwest::Response {
    server
        .http
        .post(server.url("/api/admin/version"))
        .bearer_auth(common::ADMIN_TOKEN)
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn index_carries_the_app_version_and_follows_runtime_changes() {
    let dir = www("index");
    let server = TestServer::start(server_stub::Config {
        static_dir: dir.clone(),
        app_version: "A".into(),
        ..config()
    })
    .await;
    for path in ["/", "/index.html", "/?room=x"] {
        let (html, cache) = page(&server, path).await;
        assert!(
            html.contains(r#"<meta name="app-version" content="A">"#),
            "{html}"
        );
        assert_eq!(cache, "no-cache");
    }
    assert_eq!(api_version(&server).await, "A");

    // A peer connected before the change is told; one connecting after gets it in welcome.
    let mut before = server.peer("before", &[1]).await;
    let resp = set_version(&server, &json!({"version": "B"})).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"version": "B", "reportedVersion": "B", "notified": 1})
    );
    assert_eq!(
        before.expect_control().await,
        Control::Version {
            version: "B".into()
        }
    );
    let hs = server.handshake("after", &["msgpack"], &[1]).await;
    let mut after = server.connect_raw(&server.ws_path(&hs).await).await;
    assert!(matches!(
        after.expect_control().await,
        Control::Welcome { app_version: Some(v), .. } if v == "B"
    ));
    let (html, _) = page(&server, "/").await;
    assert!(html.contains(r#"content="B""#), "{html}");
    assert_eq!(api_version(&server).await, "B");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn reported_version_differs_from_the_pages() {
    let dir = www("reported");
    let server = TestServer::start(server_stub::Config {
        static_dir: dir.clone(),
        app_version: "B".into(),
        reported_version: Some("C".into()),
        ..config()
    })
    .await;
    let (html, _) = page(&server, "/").await;
    assert!(html.contains(r#"content="B""#), "{html}");
    assert_eq!(api_version(&server).await, "C");
    let hs = server.handshake("p", &["msgpack"], &[1]).await;
    let mut p = server.connect_raw(&server.ws_path(&hs).await).await;
    assert!(matches!(
        p.expect_control().await,
        Control::Welcome { app_version: Some(v), .. } if v == "C"
    ));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn admin_endpoint_refuses_bad_versions_and_foreign_requests() {
    let server = TestServer::start(config()).await;
    for bad in [
        json!({"version": ""}),
        json!({"version": "a\nb"}),
        json!({"version": "x".repeat(129)}),
    ] {
        let resp = set_version(&server, &bad).await;
        assert_eq!(resp.status(), 400, "{bad}");
        assert_eq!(
            resp.json::<Value>().await.unwrap()["code"],
            "invalid_argument"
        );
    }
    let resp = set_version(&server, &json!({"v": 1})).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.json::<Value>().await.unwrap()["code"], "bad_request");
    for (name, value) in [
        ("origin", "https://evil.example"),
        ("x-forwarded-for", "203.0.113.9"),
        ("forwarded", "for=203.0.113.9"),
    ] {
        let resp = server
            .http
            .post(server.url("/api/admin/version"))
            .bearer_auth(common::ADMIN_TOKEN)
            .header(name, value)
            .json(&json!({"version": "evil"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403, "{name}");
        assert_eq!(resp.json::<Value>().await.unwrap()["code"], "forbidden");
    }
    assert_eq!(api_version(&server).await, "test-1.2.3");
    let same_origin = format!("http://{}", server.addr);
    let resp = server
        .http
        .post(server.url("/api/admin/version"))
        .bearer_auth(common::ADMIN_TOKEN)
        .header("origin", same_origin)
        .json(&json!({"version": "ok"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(api_version(&server).await, "ok");
}
