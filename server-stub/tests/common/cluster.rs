//! A real `redis-server` for the cluster tests (issue 14; PROTOCOL.md §17): a child process on
//! a free loopback port, without persistence, and in-process server-stub nodes on it.

use super::TestServer;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A `redis-server` child process without persistence; killed on drop.
pub struct Redis {
    child: Child,
    pub url: String,
    pub port: u16,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `redis-server` on a free loopback port, or `None` (with a message) if it is not
/// installed.
pub async fn redis() -> Option<Redis> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = match Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("SKIPPED: redis-server is not installed ({e}); run `node scripts/setup.mjs`");
            return None;
        }
    };
    let url = format!("redis://127.0.0.1:{port}/");
    let r = Redis { child, url, port };
    for _ in 0..200 {
        if let Ok(mut c) = r.conn().await {
            let pong: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut c).await;
            if pong.is_ok() {
                return Some(r);
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("redis-server did not answer on port {port}");
}

impl Redis {
    pub async fn conn(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        redis::Client::open(self.url.as_str())?
            .get_multiplexed_async_connection()
            .await
    }

    pub async fn cmd<T: redis::FromRedisValue>(&self, cmd: &mut redis::Cmd) -> T {
        cmd.query_async(&mut self.conn().await.unwrap())
            .await
            .unwrap()
    }
}

/// `n` nodes on `redis`.
pub async fn nodes(redis: &Redis, n: usize) -> Vec<TestServer> {
    let mut out = Vec::new();
    for i in 0..n {
        let url = redis.url.clone();
        out.push(
            TestServer::start_with(|c| {
                c.redis_url = Some(url);
                c.node_id = Some(format!("node{i}"));
            })
            .await,
        );
    }
    out
}

/// A TCP proxy between one node and Redis: [`Proxy::cut`] drops every connection through it
/// and accepts no more, so that the node can no longer read or write anything in Redis (with
/// [`TestServer::crash`], the node is as gone as after a SIGKILL: nothing it still runs in
/// memory reaches the cluster).
pub struct Proxy {
    pub url: String,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    /// A proxy to Redis on `port`.
    pub async fn start(port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("redis://{}/", listener.local_addr().unwrap());
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = tokio::spawn({
            let tasks = tasks.clone();
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    let conn = tokio::spawn(async move {
                        if let Ok(mut out) = TcpStream::connect(("127.0.0.1", port)).await {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                        }
                    });
                    tasks.lock().unwrap().push(conn);
                }
            }
        });
        tasks.lock().unwrap().push(accept);
        Proxy { url, tasks }
    }

    /// Drops every connection and stops accepting.
    pub fn cut(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

/// `n` nodes on `redis`, each through its own [`Proxy`].
pub async fn nodes_behind_proxies(redis: &Redis, n: usize) -> (Vec<TestServer>, Vec<Proxy>) {
    let (mut servers, mut proxies) = (Vec::new(), Vec::new());
    for i in 0..n {
        let proxy = Proxy::start(redis.port).await;
        let url = proxy.url.clone();
        servers.push(
            TestServer::start_with(|c| {
                c.redis_url = Some(url);
                c.node_id = Some(format!("node{i}"));
            })
            .await,
        );
        proxies.push(proxy);
    }
    (servers, proxies)
}
