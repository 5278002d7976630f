//! How many recorder pods a profile needs for the calls it is recording.

/// Replicas for `active_sessions` calls: enough pods that none runs above 80 % of
/// `sessions_per_replica` (headroom for a burst while a new pod starts), clamped to
/// `min..=max`. Integer arithmetic only; `min` wins when the bounds are inverted, and a
/// `sessions_per_replica` below 1 is treated as 1.
pub fn desired_replicas(
    active_sessions: u64,
    sessions_per_replica: u32,
    min: u32,
    max: u32,
) -> u32 {
    // ceil(active / (per × 0.8)) = ceil(active × 5 / (per × 4)); u128 cannot overflow here.
    let per = u128::from(sessions_per_replica.max(1));
    let needed = (u128::from(active_sessions) * 5).div_ceil(per * 4);
    let clamped = needed.min(u128::from(max)).max(u128::from(min));
    u32::try_from(clamped).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::desired_replicas;

    #[test]
    fn no_calls_keeps_the_minimum() {
        assert_eq!(desired_replicas(0, 200, 2, 10), 2);
        assert_eq!(desired_replicas(0, 200, 0, 10), 0);
    }

    #[test]
    fn exactly_eighty_percent_fits_and_one_more_call_adds_a_pod() {
        // 80 % of 200 is 160 calls per pod.
        assert_eq!(desired_replicas(160, 200, 1, 10), 1);
        assert_eq!(desired_replicas(161, 200, 1, 10), 2);
        assert_eq!(desired_replicas(320, 200, 1, 10), 2);
        assert_eq!(desired_replicas(321, 200, 1, 10), 3);
        // 80 % of 250 is 200.
        assert_eq!(desired_replicas(200, 250, 1, 10), 1);
        assert_eq!(desired_replicas(201, 250, 1, 10), 2);
    }

    #[test]
    fn load_above_the_maximum_is_capped() {
        assert_eq!(desired_replicas(100_000, 200, 2, 6), 6);
        assert_eq!(desired_replicas(u64::MAX, 1, 1, 100), 100);
    }

    #[test]
    fn the_minimum_wins_over_a_smaller_computed_count_and_inverted_bounds() {
        assert_eq!(desired_replicas(161, 200, 3, 10), 3);
        assert_eq!(desired_replicas(10_000, 200, 5, 4), 5);
    }

    #[test]
    fn zero_sessions_per_replica_does_not_divide_by_zero() {
        // Treated as one session per pod at 80 %: 4 calls need 5 pods.
        assert_eq!(desired_replicas(4, 0, 1, 10), 5);
    }
}
