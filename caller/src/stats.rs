//! What a run reports: counts, failure reasons, and latency distributions kept in a fixed-size
//! log-linear histogram (about 3 % resolution), so a long load run needs no per-packet memory.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

/// Values below this are counted exactly.
const LINEAR: u64 = 64;
/// Sub-buckets per power of two above `LINEAR`.
const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;
const BUCKETS: usize = LINEAR as usize + (64 - 6) * SUB as usize;

/// A histogram of microsecond values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram {
    counts: Vec<u64>,
    count: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            count: 0,
            max: 0,
        }
    }
}

fn bucket(v: u64) -> usize {
    if v < LINEAR {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros(); // >= 6
    let sub = (v >> (exp - SUB_BITS)) & (SUB - 1);
    LINEAR as usize + (exp as usize - 6) * SUB as usize + sub as usize
}

/// Largest value that falls in bucket `i`.
fn upper(i: usize) -> u64 {
    if i < LINEAR as usize {
        return i as u64;
    }
    let j = i - LINEAR as usize;
    let exp = (j / SUB as usize) as u32 + 6;
    let sub = (j % SUB as usize) as u64;
    let width = 1u64 << (exp - SUB_BITS);
    ((SUB + sub) << (exp - SUB_BITS)).saturating_add(width - 1)
}

impl Histogram {
    pub fn record(&mut self, micros: u64) {
        self.counts[bucket(micros)] += 1;
        self.count += 1;
        self.max = self.max.max(micros);
    }

    pub fn record_duration(&mut self, d: Duration) {
        self.record(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.count += other.count;
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// The value at or below which `p` percent of samples lie (upper bucket bound, never above
    /// the maximum seen); 0 when empty.
    pub fn percentile(&self, p: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((p / 100.0 * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return upper(i).min(self.max);
            }
        }
        self.max
    }

    pub fn summary(&self) -> Percentiles {
        Percentiles {
            samples: self.count,
            p50: self.percentile(50.0),
            p90: self.percentile(90.0),
            p99: self.percentile(99.0),
            p999: self.percentile(99.9),
            max: self.max,
        }
    }
}

/// A distribution as reported, in microseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Percentiles {
    pub samples: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

/// Calls that failed for one reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailureCount {
    pub reason: String,
    pub calls: u32,
}

/// The JSON printed at the end of `callvault call`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub target: String,
    pub transport: String,
    pub codec: String,
    pub calls_attempted: u32,
    /// Got a 2xx to the INVITE.
    pub calls_answered: u32,
    /// Played all their audio and were ended with a BYE the recorder accepted.
    pub calls_completed: u32,
    pub calls_failed: u32,
    /// Distinct reasons, most frequent first.
    pub failures: Vec<FailureCount>,
    pub rtp_packets_sent: u64,
    /// How late each 20 ms packet tick was sent against its schedule: if this grows, the
    /// generator itself could not keep up and the run measured the client, not the recorder.
    pub send_lateness_micros: Percentiles,
    /// INVITE sent to 2xx received.
    pub answer_time_micros: Percentiles,
    /// SIP messages from the recorder that could not be parsed (dropped, logged).
    pub malformed_messages: u64,
    pub elapsed_seconds: f64,
    /// Stopped early by the user (Ctrl-C): live calls were ended with BYE.
    pub interrupted: bool,
}

impl Summary {
    /// Whether every call completed.
    pub fn success(&self) -> bool {
        self.calls_failed == 0 && self.calls_completed == self.calls_attempted
    }
}

/// Groups failure reasons, most frequent first (then alphabetically, for a stable output).
pub fn group_failures<'a>(reasons: impl IntoIterator<Item = &'a str>) -> Vec<FailureCount> {
    let mut by: BTreeMap<&str, u32> = BTreeMap::new();
    for r in reasons {
        *by.entry(r).or_default() += 1;
    }
    let mut out: Vec<FailureCount> = by
        .into_iter()
        .map(|(reason, calls)| FailureCount {
            reason: reason.to_owned(),
            calls,
        })
        .collect();
    out.sort_by(|a, b| b.calls.cmp(&a.calls).then_with(|| a.reason.cmp(&b.reason)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_cover_every_value() {
        for i in 0..BUCKETS - 1 {
            assert_eq!(bucket(upper(i)), i, "upper of {i}");
            assert_eq!(bucket(upper(i) + 1), i + 1, "after {i}");
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn percentiles_are_within_the_bucket_resolution() {
        let mut h = Histogram::default();
        for v in 1..=10_000u64 {
            h.record(v);
        }
        for (p, exact) in [
            (50.0, 5000.0),
            (90.0, 9000.0),
            (99.0, 9900.0),
            (99.9, 9990.0),
        ] {
            let got = h.percentile(p) as f64;
            assert!(got >= exact && got <= exact * 1.035, "p{p}: {got}");
        }
        let s = h.summary();
        assert_eq!((s.samples, s.max), (10_000, 10_000));
        assert_eq!(Histogram::default().summary().p99, 0);
    }

    #[test]
    fn small_values_are_exact_and_outliers_show_in_the_tail() {
        let mut h = Histogram::default();
        for _ in 0..990 {
            h.record(3);
        }
        let mut late = Histogram::default();
        for _ in 0..10 {
            late.record(250_000);
        }
        h.merge(&late);
        assert_eq!(h.percentile(50.0), 3);
        assert_eq!(h.percentile(99.0), 3);
        assert_eq!(h.percentile(99.9), 250_000);
        assert_eq!(h.count(), 1000);
    }

    #[test]
    fn failures_group_by_reason_most_frequent_first() {
        let g = group_failures(["b", "a", "b", "c", "a", "b"]);
        let got: Vec<_> = g.iter().map(|f| (f.reason.as_str(), f.calls)).collect();
        assert_eq!(got, [("b", 3), ("a", 2), ("c", 1)]);
    }
}
