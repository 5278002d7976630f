//! The connection test ("Test connection"): connect and authenticate, write a probe object,
//! read it back, compare, delete it. The report names the step that failed and why, as data
//! the operator turns into the StorageTarget's `Reachable` condition.

use std::error::Error as _;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use object_store::client::{HttpError, HttpErrorKind};
use object_store::path::Path;
use serde::Serialize;

use super::{Op, Storage, StorageConfig, StorageError, Timeouts, Usage};

/// Folder (under the target's prefix) that holds probe objects.
pub const PROBE_FOLDER: &str = ".callvault-probe";

/// How the connection test runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeOptions {
    /// Client bounds used when the test opens the target itself ([`super::test_connection`]).
    pub timeouts: Timeouts,
    /// Hard bound on each step, whatever the client does.
    pub step_timeout: Duration,
    /// Size of the probe object.
    pub probe_bytes: usize,
    /// Usage is counted up to this many objects; 0 skips counting.
    pub usage_max_objects: u64,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            timeouts: Timeouts {
                connect: Duration::from_secs(3),
                request: Duration::from_secs(10),
                max_retries: 1,
                retry_budget: Duration::from_secs(5),
            },
            step_timeout: Duration::from_secs(15),
            probe_bytes: 64 * 1024,
            usage_max_objects: 100_000,
        }
    }
}

/// The steps of the connection test, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ProbeStep {
    /// Reach the service, authenticate, find the bucket/container/directory.
    Connect,
    Write,
    Read,
    Compare,
    Delete,
}

impl std::fmt::Display for ProbeStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ProbeStep::Connect => "connect",
            ProbeStep::Write => "write",
            ProbeStep::Read => "read",
            ProbeStep::Compare => "compare",
            ProbeStep::Delete => "delete",
        })
    }
}

/// Why a step failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum FailureReason {
    /// The spec or the credentials cannot be used as given.
    InvalidConfiguration,
    /// No connection to the service (refused, DNS, TLS).
    Unreachable,
    /// The service did not answer in time.
    Timeout,
    /// The credentials were rejected.
    AuthenticationFailed,
    /// The credentials are valid but lack a permission (or the directory is not writable).
    AccessDenied,
    /// The bucket, container, directory or probe object does not exist.
    NotFound,
    /// The object read back differs from what was written.
    Mismatch,
    /// Anything else; the message says what.
    Error,
}

impl FailureReason {
    fn explain(self) -> &'static str {
        match self {
            FailureReason::InvalidConfiguration => "the configuration or credentials are invalid",
            FailureReason::Unreachable => "the storage service cannot be reached",
            FailureReason::Timeout => "the storage service did not answer in time",
            FailureReason::AuthenticationFailed => "the credentials were rejected",
            FailureReason::AccessDenied => "permission denied",
            FailureReason::NotFound => "not found",
            FailureReason::Mismatch => "the data read back differs from the data written",
            FailureReason::Error => "error",
        }
    }
}

/// One step that ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepOutcome {
    pub step: ProbeStep,
    pub ok: bool,
    pub duration_ms: u64,
}

/// The first failure of a connection test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeFailure {
    pub step: ProbeStep,
    pub reason: FailureReason,
    /// Human-readable cause, safe to show (never contains credentials).
    pub message: String,
}

/// Result of a connection test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeReport {
    /// The target, described without credentials.
    pub target: String,
    /// Steps that ran, in order (cleanup after a failure is listed too).
    pub steps: Vec<StepOutcome>,
    /// The first failure; `None` when every step passed.
    pub failure: Option<ProbeFailure>,
    /// Objects and bytes under the prefix, when listing is permitted and the test passed.
    pub usage: Option<Usage>,
    /// Things worth knowing that are not failures (e.g. listing not permitted).
    pub notes: Vec<String>,
}

impl ProbeReport {
    /// Whether every step passed.
    pub fn succeeded(&self) -> bool {
        self.failure.is_none()
    }

    /// The step that failed, if any.
    pub fn failed_step(&self) -> Option<ProbeStep> {
        self.failure.as_ref().map(|f| f.step)
    }

    /// A CamelCase reason for a Kubernetes condition: `ProbeSucceeded`, or the failed step
    /// and cause, e.g. `ConnectAuthenticationFailed`, `WriteAccessDenied`.
    pub fn condition_reason(&self) -> String {
        match &self.failure {
            None => "ProbeSucceeded".to_owned(),
            Some(f) => format!("{:?}{:?}", f.step, f.reason),
        }
    }

    /// A one-line message for the condition.
    pub fn condition_message(&self) -> String {
        match &self.failure {
            None => format!(
                "wrote, read back and deleted a probe object in {}",
                self.target
            ),
            Some(f) => format!("{} step failed on {}: {}", f.step, self.target, f.message),
        }
    }

    pub(super) fn open_failed(config: &StorageConfig, error: &StorageError) -> ProbeReport {
        let reason = classify(error);
        ProbeReport {
            target: format!("{} storage target", config.kind),
            steps: vec![StepOutcome {
                step: ProbeStep::Connect,
                ok: false,
                duration_ms: 0,
            }],
            failure: Some(ProbeFailure {
                step: ProbeStep::Connect,
                reason,
                message: format!("{}: {error}", reason.explain()),
            }),
            usage: None,
            notes: Vec::new(),
        }
    }
}

/// Maps an error to the cause a person acts on.
pub(super) fn classify(error: &StorageError) -> FailureReason {
    match error {
        StorageError::Config(_)
        | StorageError::MissingCredentials { .. }
        | StorageError::CredentialsFile(_)
        | StorageError::InvalidKey { .. } => FailureReason::InvalidConfiguration,
        StorageError::NotFound { .. } => FailureReason::NotFound,
        StorageError::Integrity { .. } | StorageError::InvalidRange { .. } => {
            FailureReason::Mismatch
        }
        StorageError::LocalFile { source, .. } => classify_io(source),
        StorageError::Backend { source, .. } => classify_store(source),
    }
}

fn classify_store(error: &object_store::Error) -> FailureReason {
    use object_store::Error as E;
    match error {
        E::NotFound { .. } => FailureReason::NotFound,
        E::Unauthenticated { .. } => FailureReason::AuthenticationFailed,
        E::PermissionDenied { .. } => denied(&error.to_string()),
        E::InvalidPath { .. } | E::UnknownConfigurationKey { .. } => {
            FailureReason::InvalidConfiguration
        }
        other => {
            // Listing errors arrive as `Generic` with the HTTP status only in the text.
            let text = other.to_string();
            match http_status(&text) {
                Some(404) => return FailureReason::NotFound,
                Some(401) => return FailureReason::AuthenticationFailed,
                Some(403) => return denied(&text),
                _ => {}
            }
            let mut cause: Option<&(dyn std::error::Error + 'static)> = other.source();
            while let Some(c) = cause {
                if let Some(http) = c.downcast_ref::<HttpError>() {
                    return match http.kind() {
                        HttpErrorKind::Connect => FailureReason::Unreachable,
                        HttpErrorKind::Timeout => FailureReason::Timeout,
                        _ => FailureReason::Error,
                    };
                }
                if let Some(io) = c.downcast_ref::<std::io::Error>() {
                    return classify_io(io);
                }
                cause = c.source();
            }
            FailureReason::Error
        }
    }
}

/// S3 and Azure answer 403 both for bad credentials and for missing permissions; the error
/// code in the body tells them apart.
fn denied(text: &str) -> FailureReason {
    const BAD_CREDENTIALS: [&str; 7] = [
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AuthenticationFailed",
        "InvalidAuthenticationInfo",
        "InvalidToken",
        "ExpiredToken",
        // Azure's message for a signature made with the wrong account key.
        "failed to authenticate",
    ];
    if BAD_CREDENTIALS.iter().any(|code| text.contains(code)) {
        FailureReason::AuthenticationFailed
    } else {
        FailureReason::AccessDenied
    }
}

/// The HTTP status in an object_store error message ("... status code: 404 ...").
fn http_status(text: &str) -> Option<u16> {
    let at = text.find("status code: ")? + "status code: ".len();
    text.get(at..at + 3)?.parse().ok()
}

fn classify_io(error: &std::io::Error) -> FailureReason {
    use std::io::ErrorKind as K;
    match error.kind() {
        K::PermissionDenied | K::ReadOnlyFilesystem => FailureReason::AccessDenied,
        K::NotFound | K::NotADirectory => FailureReason::NotFound,
        K::TimedOut => FailureReason::Timeout,
        K::ConnectionRefused | K::NotConnected => FailureReason::Unreachable,
        _ => FailureReason::Error,
    }
}

/// A probe object name that no two tests share, and content derived from it.
fn probe_object(size: usize) -> (String, Bytes) {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = format!(
        "{PROBE_FOLDER}/probe-{nanos:x}-{:x}-{n}",
        std::process::id()
    );
    // xorshift64: varied bytes, so a store that returned zeros or another object is caught.
    let mut state = nanos ^ (n.wrapping_add(1)).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut data = Vec::with_capacity(size);
    while data.len() < size {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.extend_from_slice(&state.to_le_bytes());
    }
    data.truncate(size);
    (name, Bytes::from(data))
}

struct Run<'a> {
    options: &'a ProbeOptions,
    report: ProbeReport,
}

impl Run<'_> {
    /// Runs one step under the hard timeout and records it. Returns the value, or the failure
    /// reason and message (not yet recorded as the report's failure).
    async fn step<T, F>(&mut self, step: ProbeStep, fut: F) -> Result<T, (FailureReason, String)>
    where
        F: Future<Output = Result<T, StorageError>>,
    {
        let start = Instant::now();
        let res = match tokio::time::timeout(self.options.step_timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err((classify(&e), e.to_string())),
            Err(_) => Err((
                FailureReason::Timeout,
                format!(
                    "no answer within {} s",
                    self.options.step_timeout.as_secs_f32()
                ),
            )),
        };
        self.report.steps.push(StepOutcome {
            step,
            ok: res.is_ok(),
            duration_ms: start.elapsed().as_millis() as u64,
        });
        res
    }

    fn fail(&mut self, step: ProbeStep, (reason, detail): (FailureReason, String)) {
        if self.report.failure.is_none() {
            let hint = match (step, reason) {
                (ProbeStep::Connect, FailureReason::NotFound) => {
                    "the bucket, container or directory does not exist"
                }
                _ => reason.explain(),
            };
            self.report.failure = Some(ProbeFailure {
                step,
                reason,
                message: format!("{hint}: {detail}"),
            });
        }
    }
}

pub(super) async fn run(storage: &Storage, options: &ProbeOptions) -> ProbeReport {
    let mut run = Run {
        options,
        report: ProbeReport {
            target: storage.target().to_owned(),
            steps: Vec::new(),
            failure: None,
            usage: None,
            notes: Vec::new(),
        },
    };
    let folder = Path::from(PROBE_FOLDER);

    // Connect: one cheap authenticated request that proves the service answers, accepts the
    // credentials and has the bucket. Listing the probe folder also works for an empty target.
    let store = storage.store.clone();
    let listed = run
        .step(ProbeStep::Connect, async {
            store
                .list_with_delimiter(Some(&folder))
                .await
                .map(|_| ())
                .map_err(|e| storage.err(Op::List, PROBE_FOLDER, e))
        })
        .await;
    let can_list = match listed {
        Ok(()) => true,
        // Least-privilege S3 policies grant Put/Get/Delete but not List: carry on and let
        // the write step tell whether the target is usable.
        Err((FailureReason::AccessDenied, detail)) => {
            if let Some(last) = run.report.steps.last_mut() {
                last.ok = true;
            }
            run.report.notes.push(format!(
                "listing is not permitted, usage is unknown: {detail}"
            ));
            false
        }
        Err(failure) => {
            run.fail(ProbeStep::Connect, failure);
            return run.report;
        }
    };

    let (key, data) = probe_object(options.probe_bytes);
    if let Err(failure) = run
        .step(ProbeStep::Write, storage.put(&key, data.clone()))
        .await
    {
        run.fail(ProbeStep::Write, failure);
        // A write that timed out may still land: remove it, best effort, unrecorded.
        let _ = tokio::time::timeout(options.step_timeout, storage.delete(&key)).await;
        return run.report;
    }

    match run.step(ProbeStep::Read, storage.get(&key)).await {
        Ok(read) => {
            let compared = run
                .step(ProbeStep::Compare, async {
                    if read == data {
                        Ok(())
                    } else {
                        Err(StorageError::Integrity {
                            op: Op::Get,
                            key: key.clone(),
                            target: storage.target().to_owned(),
                            detail: format!(
                                "read {} bytes that differ from the {} bytes written",
                                read.len(),
                                data.len()
                            ),
                        })
                    }
                })
                .await;
            if let Err(failure) = compared {
                run.fail(ProbeStep::Compare, failure);
            }
        }
        Err(failure) => run.fail(ProbeStep::Read, failure),
    }

    // Delete, then check it is really gone (a store that ignores deletes would keep
    // recordings past their retention).
    let deleted = run
        .step(ProbeStep::Delete, async {
            storage.delete(&key).await?;
            if storage.exists(&key).await? {
                return Err(StorageError::Integrity {
                    op: Op::Delete,
                    key: key.clone(),
                    target: storage.target().to_owned(),
                    detail: "the probe object is still there after deleting it".into(),
                });
            }
            Ok(())
        })
        .await;
    if let Err(failure) = deleted {
        run.fail(ProbeStep::Delete, failure);
    }

    if can_list && run.report.failure.is_none() && options.usage_max_objects > 0 {
        match tokio::time::timeout(
            options.step_timeout,
            storage.usage(options.usage_max_objects),
        )
        .await
        {
            Ok(Ok(usage)) => run.report.usage = Some(usage),
            Ok(Err(e)) => run
                .report
                .notes
                .push(format!("usage could not be counted: {e}")),
            Err(_) => run
                .report
                .notes
                .push("usage counting took too long and was skipped".into()),
        }
    }
    run.report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_codes_in_messages_are_recognised() {
        assert_eq!(
            http_status("GET x in 1ms - Server returned non-2xx status code: 404 Not Found: <x>"),
            Some(404)
        );
        assert_eq!(http_status("connection refused"), None);
        assert_eq!(
            denied("403 Forbidden: <Code>SignatureDoesNotMatch</Code>"),
            FailureReason::AuthenticationFailed
        );
        assert_eq!(
            denied("403 Forbidden: <Code>AccessDenied</Code>"),
            FailureReason::AccessDenied
        );
    }

    #[test]
    fn probe_objects_are_unique_and_sized() {
        let (a, da) = probe_object(1000);
        let (b, db) = probe_object(1000);
        assert_ne!(a, b);
        assert!(a.starts_with(PROBE_FOLDER));
        assert_eq!((da.len(), db.len()), (1000, 1000));
        assert_ne!(da, db);
    }
}
