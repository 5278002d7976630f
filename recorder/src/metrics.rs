//! Counters the recorder exposes on `/metrics` (Prometheus text format) and `/status`.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Metrics {
    pub sessions_active: AtomicU64,
    pub sessions_total: AtomicU64,
    pub sessions_rejected: AtomicU64,
    pub sessions_not_recorded: AtomicU64,
    pub segments_total: AtomicU64,
    pub rtp_packets: AtomicU64,
    pub rtp_lost: AtomicU64,
    pub rtp_late: AtomicU64,
    pub rtp_malformed: AtomicU64,
    /// Datagrams dropped: not from the source their stream is latched to.
    pub rtp_foreign: AtomicU64,
    /// Calls whose foreign datagrams crossed the alarm threshold.
    pub rtp_foreign_alarms: AtomicU64,
    /// SRTP/SRTCP datagrams dropped as replays of ones already received.
    pub srtp_replayed: AtomicU64,
    /// SRTP/SRTCP datagrams dropped because they failed authentication.
    pub srtp_unauthenticated: AtomicU64,
    pub commits: AtomicU64,
    pub commits_incomplete: AtomicU64,
    pub commit_failures: AtomicU64,
    pub commits_pending: AtomicU64,
    pub users_matched: AtomicU64,
    pub sip_bind_failures: AtomicU64,
    pub config_applied: AtomicU64,
    pub config_refused: AtomicU64,
    /// Offers refused (503) because the spool was full.
    pub spool_refusals: AtomicU64,
    /// Segments whose spool write failed mid-call (the call was ended with a BYE).
    pub spool_write_failures: AtomicU64,
    /// 1 while storing recordings works (or has not been tried), 0 while it fails.
    pub storage_reachable: AtomicU64,
    pub spool_free_bytes: AtomicU64,
    pub spool_used_percent: AtomicU64,
    /// Sessions ended, by why they stopped ([`crate::call::Stop::as_str`]).
    pub sessions_ended: Mutex<std::collections::BTreeMap<&'static str, u64>>,
    /// End of the latest committed recording, µs since the Unix epoch.
    pub last_recording_time: Mutex<Option<i64>>,
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

pub fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// Counts a session ended for `reason`.
pub fn ended(m: &Metrics, reason: &'static str) {
    *m.sessions_ended
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(reason)
        .or_default() += 1;
}

pub fn dec(c: &AtomicU64) {
    let _ = c.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
}

impl Metrics {
    pub fn last_recording_time(&self) -> Option<i64> {
        *self
            .last_recording_time
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub fn committed(&self, end_time: i64) {
        let mut last = self
            .last_recording_time
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *last = Some(last.map_or(end_time, |l| l.max(end_time)));
    }

    /// The Prometheus exposition text.
    pub fn render(&self, capacity: u32, draining: bool, listening: bool) -> String {
        let mut s = String::with_capacity(2048);
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(s, "# HELP callvault_recorder_{name} {help}");
            let _ = writeln!(s, "# TYPE callvault_recorder_{name} {kind}");
            let _ = writeln!(s, "callvault_recorder_{name} {value}");
        };
        metric(
            "sessions_active",
            "gauge",
            "Recording sessions in progress.",
            get(&self.sessions_active),
        );
        metric(
            "sessions_capacity",
            "gauge",
            "Sessions this recorder takes before answering 503.",
            u64::from(capacity),
        );
        metric(
            "draining",
            "gauge",
            "1 while draining.",
            u64::from(draining),
        );
        metric(
            "sip_listening",
            "gauge",
            "1 while the SIP listener of the current configuration is bound.",
            u64::from(listening),
        );
        metric(
            "sip_bind_failures_total",
            "counter",
            "Failed attempts to bind the configured SIP address (each is retried).",
            get(&self.sip_bind_failures),
        );
        metric(
            "config_applied_total",
            "counter",
            "Configuration changes applied to the running recorder.",
            get(&self.config_applied),
        );
        metric(
            "config_refused_total",
            "counter",
            "Configuration changes refused (the previous configuration keeps running).",
            get(&self.config_refused),
        );
        metric(
            "sessions_total",
            "counter",
            "Sessions answered.",
            get(&self.sessions_total),
        );
        metric(
            "sessions_rejected_total",
            "counter",
            "Session offers refused (bad offer, no capacity, no ports, a full spool).",
            get(&self.sessions_rejected),
        );
        metric(
            "spool_refusals_total",
            "counter",
            "Session offers refused (503) because the spool had less free space than spool.minFreeMiB (also in sessions_rejected_total).",
            get(&self.spool_refusals),
        );
        metric(
            "spool_write_failures_total",
            "counter",
            "Recordings whose spool write failed mid-call: the call was ended with a BYE and what was written committed as incomplete.",
            get(&self.spool_write_failures),
        );
        metric(
            "spool_free_bytes",
            "gauge",
            "Bytes the recorder may still write to its spool volume.",
            get(&self.spool_free_bytes),
        );
        metric(
            "spool_used_percent",
            "gauge",
            "Percent of the spool volume used.",
            get(&self.spool_used_percent),
        );
        metric(
            "storage_reachable",
            "gauge",
            "0 while recordings cannot be stored (they wait in the spool and are retried).",
            get(&self.storage_reachable),
        );
        metric(
            "sessions_not_recorded_total",
            "counter",
            "Sessions answered without recording (the profile's rules left them out).",
            get(&self.sessions_not_recorded),
        );
        metric(
            "segments_total",
            "counter",
            "Recording segments started.",
            get(&self.segments_total),
        );
        metric(
            "rtp_packets_total",
            "counter",
            "RTP and RTCP datagrams received.",
            get(&self.rtp_packets),
        );
        metric(
            "rtp_lost_total",
            "counter",
            "RTP packets never received (sequence gaps).",
            get(&self.rtp_lost),
        );
        metric(
            "rtp_late_total",
            "counter",
            "RTP packets that arrived after their playout point.",
            get(&self.rtp_late),
        );
        metric(
            "rtp_malformed_total",
            "counter",
            "Datagrams that were not RTP or RTCP.",
            get(&self.rtp_malformed),
        );
        metric(
            "rtp_foreign_total",
            "counter",
            "RTP datagrams dropped because they did not come from the source their stream is latched to.",
            get(&self.rtp_foreign),
        );
        metric(
            "rtp_foreign_alarms_total",
            "counter",
            "Calls whose foreign RTP crossed the alarm threshold (an injection attempt).",
            get(&self.rtp_foreign_alarms),
        );
        metric(
            "srtp_replayed_total",
            "counter",
            "SRTP and SRTCP datagrams dropped as replays of ones already received.",
            get(&self.srtp_replayed),
        );
        metric(
            "srtp_unauthenticated_total",
            "counter",
            "SRTP and SRTCP datagrams dropped because they failed authentication (forged, corrupted, or under another key).",
            get(&self.srtp_unauthenticated),
        );
        metric(
            "commits_total",
            "counter",
            "Recordings committed (object stored and row finished).",
            get(&self.commits),
        );
        metric(
            "commits_incomplete_total",
            "counter",
            "Recordings committed as incomplete (recovered after a crash or a failed spool write).",
            get(&self.commits_incomplete),
        );
        metric(
            "commit_failures_total",
            "counter",
            "Failed commit attempts (each is retried).",
            get(&self.commit_failures),
        );
        metric(
            "commits_pending",
            "gauge",
            "Ended recordings in the spool waiting for their commit.",
            get(&self.commits_pending),
        );
        let _ = writeln!(
            s,
            "# HELP callvault_recorder_sessions_ended_total Recorded sessions ended, by stop reason."
        );
        let _ = writeln!(s, "# TYPE callvault_recorder_sessions_ended_total counter");
        for (reason, n) in self
            .sessions_ended
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                s,
                "callvault_recorder_sessions_ended_total{{reason=\"{reason}\"}} {n}"
            );
        }
        s
    }
}
