//! "Run now": starting a job outside its schedule, however the deployment runs its jobs.

use std::future::Future;
use std::pin::Pin;

use callvault_crds::{RUN_NOW_ANNOTATION, SpeechJob};
use kube::api::{Api, Patch, PatchParams};

/// What [`JobRunner::run_speech_job`] returns: how the run starts, or why it cannot.
pub type Started<'a> = Pin<Box<dyn Future<Output = Result<String, String>> + Send + 'a>>;

/// Starts a job outside its schedule: standalone runs it in-process at once; in a cluster the
/// portal sets the resource's run-now annotation and the operator starts a Job.
pub trait JobRunner: Send + Sync + std::fmt::Debug + 'static {
    /// Asks for a run of SpeechJob `name` of `tenant` now.
    fn run_speech_job<'a>(&'a self, tenant: &'a str, name: &'a str) -> Started<'a>;
}

/// A portal that cannot start jobs (its resources come from files, with no jobs beside it):
/// "Run now" says so.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoJobRunner;

impl JobRunner for NoJobRunner {
    fn run_speech_job<'a>(&'a self, _tenant: &'a str, _name: &'a str) -> Started<'a> {
        Box::pin(async { Err("this portal has no way to start jobs".to_owned()) })
    }
}

/// "Run now" in a cluster: the resource's [`RUN_NOW_ANNOTATION`] set to the time of the
/// request, which the operator turns into a Job (a new value, a new run).
#[derive(Clone)]
pub struct AnnotateRunNow(kube::Client);

impl std::fmt::Debug for AnnotateRunNow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AnnotateRunNow")
    }
}

impl AnnotateRunNow {
    pub fn new(client: kube::Client) -> Self {
        Self(client)
    }
}

impl JobRunner for AnnotateRunNow {
    fn run_speech_job<'a>(&'a self, tenant: &'a str, name: &'a str) -> Started<'a> {
        Box::pin(async move {
            let stamp = callvault_config::Timestamp::now().to_string();
            let patch = serde_json::json!({
                "metadata": {"annotations": {RUN_NOW_ANNOTATION: stamp}}
            });
            Api::<SpeechJob>::namespaced(self.0.clone(), tenant)
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|e| format!("setting {RUN_NOW_ANNOTATION}: {e}"))?;
            Ok(format!(
                "as a Job the operator starts ({RUN_NOW_ANNOTATION}: {stamp})"
            ))
        })
    }
}
