//! Per-object exponential back-off after failed reconciles. kube's `error_policy` is not told
//! about successes, so the failure counts live here and a successful reconcile resets them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// First retry delay.
pub const BASE: Duration = Duration::from_secs(2);
/// Longest delay between retries.
pub const MAX: Duration = Duration::from_secs(300);

/// Delay before retry number `failures` (1 = first failure): 2 s, 4 s, 8 s, … capped at 5 min.
pub fn delay(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    BASE.saturating_mul(1 << exponent).min(MAX)
}

/// Consecutive failures per object (kind/namespace/name).
#[derive(Debug, Default)]
pub struct Failures(Mutex<HashMap<String, u32>>);

impl Failures {
    /// Records a failure of `key` and returns the delay before its next attempt.
    pub fn failed(&self, key: &str) -> Duration {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(key.to_owned()).or_insert(0);
        *n = n.saturating_add(1);
        delay(*n)
    }

    /// Forgets the failures of `key` after a successful reconcile.
    pub fn succeeded(&self, key: &str) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_from_two_seconds_up_to_five_minutes() {
        let secs: Vec<u64> = (1..=10).map(|n| delay(n).as_secs()).collect();
        assert_eq!(secs, [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(delay(u32::MAX), MAX);
    }

    #[test]
    fn each_object_backs_off_on_its_own_and_success_resets_it() {
        let f = Failures::default();
        assert_eq!(f.failed("a").as_secs(), 2);
        assert_eq!(f.failed("a").as_secs(), 4);
        assert_eq!(f.failed("b").as_secs(), 2);
        f.succeeded("a");
        assert_eq!(f.failed("a").as_secs(), 2);
        assert_eq!(f.failed("b").as_secs(), 4);
    }
}
