//! The operator's Prometheus metrics: reconciles, errors and reconcile duration per controller,
//! and the children it applied per kind (flat while nothing changes: an idle reconcile writes
//! nothing).

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabels {
    controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    controller: &'static str,
    error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

/// Counters and histograms, registered once and shared by every controller.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ControllerLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    duration: Family<ControllerLabels, Histogram>,
    applies: Family<KindLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("callvault_operator");
        let reconciles = Family::<ControllerLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let applies = Family::<KindLabels, Counter>::default();
        let duration = Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0,
            ])
        });
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by error kind",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile took",
            duration.clone(),
        );
        registry.register(
            "applies",
            "Children applied (created, changed or healed from drift), by kind",
            applies.clone(),
        );
        Self {
            registry,
            reconciles,
            errors,
            duration,
            applies,
        }
    }
}

impl Metrics {
    /// Counts a reconcile of `controller` and times it until the returned guard drops.
    pub fn reconcile(&self, controller: &'static str) -> ReconcileTimer<'_> {
        self.reconciles
            .get_or_create(&ControllerLabels { controller })
            .inc();
        ReconcileTimer {
            metrics: self,
            controller,
            start: Instant::now(),
        }
    }

    /// Counts a failed reconcile.
    pub fn error(&self, controller: &'static str, error: &'static str) {
        self.errors
            .get_or_create(&ErrorLabels { controller, error })
            .inc();
    }

    /// Counts a child of `kind` applied.
    pub fn applied(&self, kind: &str) {
        self.applies
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// Observes the reconcile duration when dropped.
#[derive(Debug)]
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    controller: &'static str,
    start: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .duration
            .get_or_create(&ControllerLabels {
                controller: self.controller,
            })
            .observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciles_errors_and_durations_are_exposed_per_controller() {
        let m = Metrics::default();
        drop(m.reconcile("recordingprofile"));
        drop(m.reconcile("recordingprofile"));
        m.error("storagetarget", "kube");
        m.applied("StatefulSet");
        let text = m.encode();
        assert!(
            text.contains(
                r#"callvault_operator_reconciles_total{controller="recordingprofile"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"callvault_operator_reconcile_errors_total{controller="storagetarget",error="kube"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"callvault_operator_reconcile_duration_seconds_count{controller="recordingprofile"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"callvault_operator_applies_total{kind="StatefulSet"} 1"#),
            "{text}"
        );
    }
}
