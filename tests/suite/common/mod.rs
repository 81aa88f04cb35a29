//! Helpers the integration tests share.

use std::time::Duration;

pub mod statuses;

/// How long a test waits for anything before it fails.
pub const WAIT_MAX: Duration = Duration::from_secs(90);

/// Polls `condition` until it holds; panics with `what` after WAIT_MAX.
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT_MAX;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls the async `condition` until it holds; panics with `what` after
/// WAIT_MAX.
#[allow(dead_code)]
pub async fn wait_until_async<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT_MAX;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A TCP port nothing listens on now (the caller binds it soon after). It
/// is below the kernel's ephemeral range, so no outgoing connection of a
/// test running alongside takes it meanwhile; two tests may still pick the
/// same one, so callers try again with fresh ports when one is taken.
#[allow(dead_code)]
pub fn free_port() -> u16 {
    loop {
        let port = 20_000 + rand::random::<u16>() % 12_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Runs `agentmesh ARGUMENTS --config CONFIG`: its exit code, stdout and
/// stderr.
#[allow(dead_code)]
pub fn agentmesh(arguments: &[&str], config: &std::path::Path) -> (Option<i32>, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_agentmesh"))
        .args(arguments)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
