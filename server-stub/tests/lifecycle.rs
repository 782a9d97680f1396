//! Session and socket lifetimes: heartbeat timeout (4408), unknown sessions (4401), sliding
//! TTL expiry (never while connected), graceful shutdown (1001), and the binary's contract
//! (`listening on ...`, SIGTERM).

mod common;

use common::{config, pair, Received, TestServer};
use p3_lanes::core::control::Control;
use p3_lanes::core::error::ErrorCode;
use p3_lanes::core::lane::Lane;
use serde_json::json;
use server_stub::Config;
use std::time::{Duration, Instant};

async fn status_code(server: &TestServer, sid: impl std::fmt::Display) -> u16 {
    // As the session's owner (its token): 401 once the server forgot the session.
    server
        .session(
            reqwest::Method::GET,
            &format!("/api/protocol/v2/session/{sid}"),
        )
        .await
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn silent_socket_is_closed_with_4408_and_the_session_stays_resumable() {
    let server = TestServer::start(Config {
        heartbeat_timeout_ms: 400,
        ..config()
    })
    .await;
    let (mut a, mut b) = pair(&server, "room").await;
    let a_sid = a.sid();
    let started = Instant::now();
    // B keeps its socket alive with pings while A stays silent.
    let mut a_closed = None;
    let mut b_saw_peer_left = false;
    while started.elapsed() < Duration::from_secs(4) && (a_closed.is_none() || !b_saw_peer_left) {
        b.send_control(&Control::Ping {
            client_time: 1.0,
            rtt_ms: None,
        })
        .await;
        loop {
            match b.recv().await {
                Received::Control(_, Control::Pong { .. }) => break,
                Received::Control(_, Control::PeerLeft { session_id, .. })
                    if session_id == a_sid =>
                {
                    b_saw_peer_left = true
                }
                // The room's key rotates after every leave.
                Received::Control(_, Control::RoomKey { .. }) if b_saw_peer_left => {}
                other => panic!("B got {other:?}"),
            }
        }
        if a_closed.is_none() {
            if let Some(r) = a.recv_within(Duration::from_millis(100)).await {
                match r {
                    Received::Closed(Some((code, reason))) => {
                        a_closed = Some((code, reason, started.elapsed()))
                    }
                    other => panic!("A got {other:?}"),
                }
            }
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let (code, reason, after) = a_closed.expect("A was closed");
    assert_eq!(code, 4408);
    assert_eq!(reason, "heartbeat timeout");
    assert!(
        after >= Duration::from_millis(350),
        "closed too early: {after:?}"
    );
    assert!(b_saw_peer_left, "B was told that A left");

    // A's session is still there and a new socket resumes it.
    assert_eq!(status_code(&server, a_sid).await, 200);
    let mut a2 = server
        .connect_raw(
            &server
                .owned(&format!("/api/protocol/v2/session/{a_sid}/ws"))
                .await,
        )
        .await;
    assert!(
        matches!(a2.expect_control().await, Control::Welcome { session_id, .. } if session_id == a_sid)
    );
}

/// §9: only P3 traffic keeps a socket alive. A client library that sends WebSocket pings on
/// its own (and answers the server's) but no P3 `ping` is closed with 4408 all the same.
#[tokio::test]
async fn websocket_pings_alone_do_not_keep_a_socket_alive() {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let server = TestServer::start(Config {
        heartbeat_timeout_ms: 400,
        ..config()
    })
    .await;
    let hs = server.handshake("pinger", &["msgpack"], &[1, 2]).await;
    let mut p = server.connect(&hs).await;
    let started = Instant::now();
    let code = loop {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "WebSocket pings kept the socket open past the heartbeat timeout"
        );
        p.ws.send(Message::Ping(b"keepalive".to_vec().into()))
            .await
            .ok();
        match p.recv_within(Duration::from_millis(100)).await {
            Some(Received::Closed(Some((code, _)))) => break code,
            Some(Received::Closed(None)) => panic!("connection ended without a close frame"),
            _ => {}
        }
    };
    assert_eq!(code, 4408);
    assert!(started.elapsed() >= Duration::from_millis(350));
}

#[tokio::test]
async fn unknown_session_socket_gets_an_error_then_4401() {
    let server = TestServer::start(config()).await;
    // Without a ticket of a live session there is nothing to open: the same `unauthorized`
    // and 4401 as for a stranger (issue 12; tests/session_auth.rs covers every cause).
    for sid in ["00000000-0000-4000-8000-000000000000", "not-a-session"] {
        let mut p = server
            .connect_raw(&format!(
                "/api/protocol/v2/session/{sid}/ws?ticket=AAAAAAAAAAAAAAAAAAAAAA"
            ))
            .await;
        assert_eq!(p.expect_error().await.0, ErrorCode::Unauthorized);
        match p.recv().await {
            Received::Closed(Some((code, _))) => assert_eq!(code, 4401),
            other => panic!("expected close 4401, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn sessions_expire_after_their_ttl() {
    let server = TestServer::start(Config {
        session_ttl_s: 1,
        ..config()
    })
    .await;
    let hs = server.handshake("e", &["msgpack"], &[1]).await;
    assert_eq!(status_code(&server, hs.session_id).await, 200);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(status_code(&server, hs.session_id).await, 401);
    // Its ticket died with it.
    let ticket = hs.ticket.as_ref().unwrap().expose();
    let mut p = server
        .connect_raw(&common::with_ticket(&hs.websocket_url, ticket))
        .await;
    assert_eq!(p.expect_error().await.0, ErrorCode::Unauthorized);
    assert_eq!(p.expect_close().await, 4401);
}

#[tokio::test]
async fn sessions_do_not_expire_while_connected() {
    let server = TestServer::start(Config {
        session_ttl_s: 1,
        ..config()
    })
    .await;
    let hs = server.handshake("c", &["msgpack"], &[1, 2]).await;
    let mut p = server.connect(&hs).await;
    // Connected and silent (the heartbeat timeout is 60 s) for longer than the TTL.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(status_code(&server, hs.session_id).await, 200);
    p.ping_pong().await;
    p.close().await;
    // The TTL counts from the disconnect.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(status_code(&server, hs.session_id).await, 200);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(status_code(&server, hs.session_id).await, 401);
}

#[tokio::test]
async fn activity_slides_the_ttl() {
    let server = TestServer::start(Config {
        session_ttl_s: 1,
        ..config()
    })
    .await;
    let hs = server.handshake("s", &["msgpack"], &[1, 2]).await;
    // Activity at ~600 ms (a socket opening, a frame, the socket closing) moves the expiry
    // from ~1000 ms to ~1600 ms.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut p = server.connect(&hs).await;
    p.send_data(Lane::Messaging, &json!({"msg": 1}), None).await;
    assert_eq!(
        p.expect_error().await.0,
        ErrorCode::NotInRoom,
        "a new socket starts outside any room"
    );
    p.close().await;
    // ≥ 1100 ms after the handshake (past its first deadline), ~500 ms after the last activity.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        status_code(&server, hs.session_id).await,
        200,
        "alive past the first deadline"
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(status_code(&server, hs.session_id).await, 401);
}

#[tokio::test]
async fn graceful_shutdown_closes_sockets_with_1001_and_returns() {
    let mut server = TestServer::start(config()).await;
    let (mut a, mut b) = pair(&server, "room").await;
    let started = Instant::now();
    let task = server.shutdown();
    assert_eq!(a.expect_close().await, 1001);
    assert_eq!(b.expect_close().await, 1001);
    let result = tokio::time::timeout(Duration::from_secs(3), task)
        .await
        .expect("serve returns within 3 s");
    result.unwrap().unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
    // No longer accepting.
    assert!(server
        .http
        .get(server.url("/api/version"))
        .send()
        .await
        .is_err());
}

#[cfg(unix)]
#[tokio::test]
async fn binary_prints_its_address_and_exits_on_sigterm() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    /// Kills the child if the test fails half-way.
    struct Child(std::process::Child);
    impl Drop for Child {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_server-stub"))
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--app-version",
                "bin-test",
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn server-stub"),
    );
    let stdout = child.0.stdout.take().unwrap();
    let line = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).map(|_| line)
        }),
    )
    .await
    .expect("listening line in time")
    .unwrap()
    .unwrap();
    let line = line.trim_end();
    let url = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected line {line:?}"));
    let addr: std::net::SocketAddr = url.strip_prefix("http://").unwrap().parse().unwrap();
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    assert_ne!(addr.port(), 0);

    let client = reqwest::Client::new();
    let v: serde_json::Value = client
        .get(format!("{url}/api/version"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["version"], "bin-test");
    let hs: p3_lanes::core::handshake::HandshakeResponse = client
        .post(format!("{url}/api/protocol/v2/session/handshake"))
        .json(&common::handshake_body("bin", &["msgpack"], &[1]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let first = common::with_ticket(&hs.websocket_url, hs.ticket.as_ref().unwrap().expose());
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}{first}"))
        .await
        .unwrap();
    use futures::StreamExt;
    assert!(matches!(
        ws.next().await,
        Some(Ok(tokio_tungstenite::tungstenite::Message::Binary(_)))
    ));

    let pid = child.0.id().to_string();
    let started = Instant::now();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let close = tokio::time::timeout(Duration::from_secs(3), ws.next())
        .await
        .expect("close frame in time");
    match close {
        Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(f)))) => {
            assert_eq!(u16::from(f.code), 1001)
        }
        other => panic!("expected close 1001, got {other:?}"),
    }
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "server-stub still running 3 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status}");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "took {:?}",
        started.elapsed()
    );
}
