//! `server-stub` binary: parses [`Config`] (flags and environment), binds, prints
//! `listening on http://<ip>:<port>` on stdout (then `admin token: <token>` when
//! `--admin-token` is unset and one was generated), and serves until SIGINT or SIGTERM.
//! Logs go to stderr, filtered by `RUST_LOG` (default `info`).

use clap::Parser;
use server_stub::{serve, AppState, Config};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    if let Err(e) = server_stub::auth::Auth::from_config(&config) {
        tracing::error!(error = %e, "invalid identity configuration");
        return ExitCode::FAILURE;
    }
    if let Err(e) = server_stub::cluster::Cluster::new(&config) {
        tracing::error!(error = %e, "invalid --redis-url");
        return ExitCode::FAILURE;
    }
    let listener = match TcpListener::bind((config.host.as_str(), config.port)).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(host = %config.host, port = config.port, error = %e, "cannot bind");
            return ExitCode::FAILURE;
        }
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "no local address");
            return ExitCode::FAILURE;
        }
    };
    for dir in [&config.static_dir, &config.pkg_dir] {
        if !dir.is_dir() {
            tracing::warn!(dir = %dir.display(), "directory to serve does not exist (requests for it get 404)");
        }
    }
    let generated = config.admin_token.is_none();
    let state = AppState::new(config);
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "listening on http://{addr}");
    if generated {
        // Printed once, on stdout (not in the logs): the operator's only copy.
        let _ = writeln!(stdout, "admin token: {}", state.admin_token().expose());
    }
    let _ = stdout.flush();
    tracing::info!(%addr, version = %state.config().app_version, "server-stub started");

    match serve(listener, state, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "server failed");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
