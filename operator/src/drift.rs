//! Drift: whether a live child still holds everything the operator would apply to it.
//!
//! Server-side apply with the operator's field manager, forcing, sets exactly the fields of
//! the applied object and leaves fields other managers added. So applying again changes
//! nothing exactly when every field of the desired object already has its value in the live
//! object: that is what [`holds`] checks, without a request, on every reconcile. A field
//! someone edited by hand (a scaled StatefulSet, an edited ConfigMap) no longer holds, and the
//! next reconcile applies the child again; an idle reconcile writes nothing.

use serde_json::Value;

/// Whether `live` holds every field of `desired` with the same value. Fields only `live` has
/// (defaults the API server filled in, fields of other managers) do not matter; a desired
/// value that sets nothing (`null`, `{}`, `[]`) also holds when the field is absent, as the
/// API server drops empty values. A list of objects holds when each desired element is held by some live
/// element (lists keyed by name or port keep elements of other managers); a list of scalars
/// must be equal, as such lists are replaced whole.
pub fn holds(live: &Value, desired: &Value) -> bool {
    match desired {
        Value::Object(fields) => {
            let Some(live) = live.as_object() else {
                return is_empty(desired) && live.is_null();
            };
            fields.iter().all(|(key, want)| match live.get(key) {
                Some(have) => holds(have, want),
                None => is_empty(want),
            })
        }
        Value::Array(wanted) => {
            let Some(have) = live.as_array() else {
                return wanted.is_empty() && live.is_null();
            };
            if wanted.iter().all(Value::is_object) {
                wanted.iter().all(|w| have.iter().any(|h| holds(h, w)))
            } else {
                wanted.len() == have.len() && wanted.iter().zip(have).all(|(w, h)| holds(h, w))
            }
        }
        Value::Number(want) => live
            .as_number()
            .is_some_and(|have| have == want || have.as_f64() == want.as_f64()),
        scalar => live == scalar,
    }
}

/// The first path (like `spec.replicas`) where `live` does not hold `desired`, for the log line
/// that says what drifted.
pub fn first_difference(live: &Value, desired: &Value) -> Option<String> {
    if holds(live, desired) {
        return None;
    }
    if let (Value::Object(fields), Some(live)) = (desired, live.as_object()) {
        for (key, want) in fields {
            let have = live.get(key).unwrap_or(&Value::Null);
            if !holds(have, want) {
                return Some(match first_difference(have, want) {
                    Some(inner) if !inner.is_empty() => format!("{key}.{inner}"),
                    _ => key.clone(),
                });
            }
        }
    }
    Some(String::new())
}

/// Whether `value` sets nothing: null, or an empty list, or an object of such values.
fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Object(o) => o.values().all(is_empty),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stateful_set(replicas: i64) -> Value {
        json!({
            "metadata": {"name": "sales-recorder", "labels": {"app": "callvault"}},
            "spec": {
                "replicas": replicas,
                "template": {"spec": {"containers": [
                    {"name": "recorder", "args": ["recorder", "--config", "/etc/r.yaml"],
                     "ports": [{"name": "sip", "containerPort": 5060}]}
                ]}}
            }
        })
    }

    #[test]
    fn defaults_and_other_managers_fields_do_not_count_as_drift() {
        let desired = stateful_set(2);
        let mut live = stateful_set(2);
        live["metadata"]["resourceVersion"] = json!("42");
        live["metadata"]["labels"]["team"] = json!("ops");
        live["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = json!("Always");
        live["spec"]["template"]["spec"]["containers"][0]["ports"][0]["protocol"] = json!("TCP");
        live["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .expect("containers")
            .insert(0, json!({"name": "sidecar"}));
        live["status"] = json!({"replicas": 2});
        assert!(holds(&live, &desired));
        assert_eq!(first_difference(&live, &desired), None);
        // Empty desired values hold against absent ones.
        let with_empty = json!({"metadata": {"annotations": {}}, "data": null, "items": []});
        assert!(holds(&json!({}), &with_empty));
    }

    #[test]
    fn hand_edits_of_operator_fields_are_drift_and_name_the_field() {
        let desired = stateful_set(2);
        assert!(!holds(&stateful_set(5), &desired));
        assert_eq!(
            first_difference(&stateful_set(5), &desired).as_deref(),
            Some("spec.replicas")
        );

        let mut args = stateful_set(2);
        args["spec"]["template"]["spec"]["containers"][0]["args"] =
            json!(["recorder", "--config", "/etc/r.yaml", "--debug"]);
        assert!(!holds(&args, &desired), "a scalar list is compared whole");

        let mut port = stateful_set(2);
        port["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] =
            json!(5070);
        assert!(!holds(&port, &desired));

        let mut label = stateful_set(2);
        label["metadata"]["labels"]
            .as_object_mut()
            .expect("labels")
            .remove("app");
        assert_eq!(
            first_difference(&label, &desired).as_deref(),
            Some("metadata.labels.app")
        );

        let config = json!({"data": {"recorder.yaml": "sip: {port: 5060}\n"}});
        let edited = json!({"data": {"recorder.yaml": "sip: {port: 5099}\n"}});
        assert!(!holds(&edited, &config));
        assert!(!holds(&json!({}), &config), "a deleted field is drift");
    }

    #[test]
    fn numbers_compare_by_value() {
        assert!(holds(&json!({"n": 1.0}), &json!({"n": 1})));
        assert!(!holds(&json!({"n": "1"}), &json!({"n": 1})));
    }
}
