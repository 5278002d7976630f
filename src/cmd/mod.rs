//! One module per subcommand; each owns its options and its `run`.
pub mod call;
pub mod crdgen;
pub mod job;
pub mod keys;
pub mod operator;
pub mod portal;
pub mod recorder;
pub mod standalone;
pub mod verify;

/// Resolves on SIGTERM (Kubernetes stopping the pod) or Ctrl-C.
pub(crate) async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "no SIGTERM handler; stopping on Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
