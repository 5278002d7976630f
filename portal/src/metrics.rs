//! Prometheus text metrics: requests by route and status, sign-ins, throttling, bytes of audio
//! served, recordings refused as tampered. Served on the operations address only.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    pub logins_ok: AtomicU64,
    pub logins_failed: AtomicU64,
    pub logins_throttled: AtomicU64,
    pub hashing_busy: AtomicU64,
    pub audio_bytes: AtomicU64,
    pub media_tampered: AtomicU64,
}

impl Metrics {
    pub fn request(&self, method: &str, route: &str, status: u16) {
        let mut m = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry((method.to_owned(), route.to_owned(), status))
            .or_default() += 1;
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP callvault_portal_requests_total HTTP requests by route and status.\n");
        out.push_str("# TYPE callvault_portal_requests_total counter\n");
        for ((method, route, status), n) in self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            out.push_str(&format!(
                "callvault_portal_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {n}\n",
                route.replace('\\', "\\\\").replace('"', "\\\"")
            ));
        }
        for (name, help, c) in [
            (
                "callvault_portal_logins_total",
                "Successful sign-ins.",
                &self.logins_ok,
            ),
            (
                "callvault_portal_login_failures_total",
                "Failed sign-in attempts.",
                &self.logins_failed,
            ),
            (
                "callvault_portal_login_throttled_total",
                "Sign-in attempts refused by throttling (per source, per account).",
                &self.logins_throttled,
            ),
            (
                "callvault_portal_password_hashing_busy_total",
                "Password checks refused with 503 because the hashing queue was full.",
                &self.hashing_busy,
            ),
            (
                "callvault_portal_audio_bytes_total",
                "Decrypted audio bytes served.",
                &self.audio_bytes,
            ),
            (
                "callvault_portal_media_tampered_total",
                "Playbacks and downloads refused or cut because the recording failed authentication.",
                &self.media_tampered,
            ),
        ] {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
                c.load(Ordering::Relaxed)
            ));
        }
        out
    }
}
