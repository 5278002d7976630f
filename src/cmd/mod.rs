//! One module per subcommand; each owns its options and its `run`.
pub mod backup;
pub mod call;
pub mod crdgen;
pub mod job;
pub mod keys;
pub mod operator;
pub mod portal;
pub mod recorder;
pub mod standalone;
pub mod verify;

/// The stop request of every long-running mode (standalone, recorder, portal, operator):
/// resolves on SIGTERM (what systemd, Docker and Kubernetes send) or SIGINT (Ctrl-C), and each
/// mode drains the same way on either. The handlers are installed when this is called, so a
/// signal that arrives before the future is first polled is not lost; call it inside the
/// runtime.
pub(crate) fn terminated() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let handlers = signal(SignalKind::terminate())
            .and_then(|term| Ok((term, signal(SignalKind::interrupt())?)));
        async move {
            match handlers {
                Ok((mut term, mut int)) => {
                    let name = tokio::select! {
                        _ = term.recv() => "SIGTERM",
                        _ = int.recv() => "SIGINT",
                    };
                    tracing::info!(signal = name, "stop requested: draining");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "no signal handlers; stopping on Ctrl-C only");
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
