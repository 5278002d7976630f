//! Properties of the generated CRDs the real API server insists on: rules compile, rules stay
//! within the CEL cost budget, every spec string and list is bounded, and the CRDs carry what
//! `kubectl` users see (printer columns, short names, the `callvault` category).

use kube::core::cel::{ScopeContext, analyze_rule, compile_schema};
use serde_json::Value;

fn crd_json() -> Vec<Value> {
    callvault_crds::crds()
        .iter()
        .map(|c| serde_json::to_value(c).expect("CRD serializes"))
        .collect()
}

fn spec_schema(crd: &Value) -> &Value {
    &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
}

fn walk<'a>(node: &'a Value, path: String, out: &mut Vec<(String, &'a Value)>) {
    out.push((path.clone(), node));
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            walk(v, format!("{path}.{k}"), out);
        }
    }
    if let Some(items) = node.get("items") {
        walk(items, format!("{path}[]"), out);
    }
}

#[test]
fn every_rule_compiles_and_fits_the_cost_budget() {
    for crd in crd_json() {
        let mut nodes = Vec::new();
        walk(spec_schema(&crd), "spec".into(), &mut nodes);
        let mut rules = 0;
        for (path, node) in nodes {
            let Some(list) = node
                .get("x-kubernetes-validations")
                .and_then(Value::as_array)
            else {
                continue;
            };
            let compiled = compile_schema(node);
            assert!(!compiled.has_errors(), "{path}: a rule does not compile");
            for rule in list {
                rules += 1;
                let text = rule["rule"].as_str().expect("rule text");
                let warnings = analyze_rule(text, &compiled, ScopeContext::CrdValidation);
                assert!(warnings.is_empty(), "{path}: {text}: {warnings:?}");
                let message = rule["message"].as_str().expect("every rule has a message");
                assert!(
                    message.contains("spec."),
                    "{path}: message must name the field: {message}"
                );
            }
        }
        assert!(rules > 0, "{} has no CEL rules", crd["metadata"]["name"]);
    }
}

#[test]
fn every_spec_string_and_list_is_bounded() {
    for crd in crd_json() {
        let mut nodes = Vec::new();
        walk(spec_schema(&crd), "spec".into(), &mut nodes);
        for (path, node) in nodes {
            match node.get("type").and_then(Value::as_str) {
                Some("string") => {
                    let bounded = node.get("maxLength").is_some()
                        || node.get("enum").is_some()
                        || node.get("format").and_then(Value::as_str) == Some("date-time");
                    assert!(bounded, "{path} is an unbounded string");
                }
                Some("array") => assert!(
                    node.get("maxItems").is_some(),
                    "{path} is an unbounded list"
                ),
                _ => {}
            }
        }
    }
}

#[test]
fn every_field_has_a_description_for_kubectl_explain() {
    for crd in crd_json() {
        let mut nodes = Vec::new();
        walk(spec_schema(&crd), "spec".into(), &mut nodes);
        for (path, node) in nodes {
            if path.ends_with("[]") {
                continue; // list items are described by their list
            }
            assert!(
                node.get("description").is_some(),
                "{path} has no description"
            );
        }
    }
}

#[test]
fn crds_carry_names_columns_and_status_conventions() {
    for crd in crd_json() {
        let name = crd["metadata"]["name"].as_str().expect("name").to_owned();
        assert!(name.ends_with(".callvault.io"), "{name}");
        assert_eq!(crd["spec"]["scope"], "Namespaced", "{name}");
        assert_eq!(
            crd["spec"]["names"]["categories"],
            serde_json::json!(["callvault"]),
            "{name}"
        );
        assert!(
            !crd["spec"]["names"]["shortNames"]
                .as_array()
                .expect("short names")
                .is_empty()
        );
        let version = &crd["spec"]["versions"][0];
        assert_eq!(version["name"], "v1alpha1");
        assert!(
            version["subresources"]["status"].is_object(),
            "{name}: status subresource"
        );
        let columns = version["additionalPrinterColumns"]
            .as_array()
            .expect("columns");
        assert!(
            columns.len() >= 4,
            "{name}: too few printer columns for an SRE"
        );
        let status = &version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"];
        let conditions = &status["conditions"];
        assert_eq!(conditions["x-kubernetes-list-type"], "map", "{name}");
        assert_eq!(
            conditions["x-kubernetes-list-map-keys"],
            serde_json::json!(["type"]),
            "{name}"
        );
        let condition = &conditions["items"]["properties"];
        for field in [
            "type",
            "status",
            "reason",
            "message",
            "lastTransitionTime",
            "observedGeneration",
        ] {
            assert!(
                condition[field].is_object(),
                "{name}: condition lacks {field}"
            );
        }
        assert!(
            status["observedGeneration"].is_object(),
            "{name}: observedGeneration"
        );
    }
}

/// The API server validates every schema default against its own node (CEL included) and
/// refuses the whole CRD if one fails: a defaulted field whose default breaks a rule.
#[test]
fn every_default_passes_its_own_rules() {
    for crd in crd_json() {
        let name = crd["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let errors = callvault_crds::check_schema_defaults(spec_schema(&crd));
        assert!(
            errors.is_empty(),
            "{name}: defaults the API server would refuse: {errors:?}"
        );
    }
}

/// kubectl and helm read YAML 1.1, where a bare `Off`, `No`, `Yes` or `On` is a boolean (YAML
/// 1.2 writers quote only `true`/`false`, so the chart's CRD files leave these bare): an enum
/// value spelt so could not be written unquoted in a resource, and helm would install the
/// chart's CRD with `false` in place of the value.
#[test]
fn no_enum_value_or_default_reads_as_a_boolean_in_yaml_1_1() {
    const YAML_1_1_BOOLEANS: &[&str] = &["y", "n", "yes", "no", "on", "off"];
    let mut checked = 0;
    for crd in crd_json() {
        let mut nodes = Vec::new();
        walk(
            &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"],
            crd["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            &mut nodes,
        );
        for (path, node) in nodes {
            let enums = node
                .get("enum")
                .and_then(Value::as_array)
                .into_iter()
                .flatten();
            for value in enums.chain(node.get("default")).filter_map(Value::as_str) {
                checked += 1;
                assert!(
                    !YAML_1_1_BOOLEANS.contains(&value.to_ascii_lowercase().as_str()),
                    "{path}: {value:?} is not a string to YAML 1.1 readers (kubectl, helm)"
                );
            }
        }
    }
    assert!(
        checked > 20,
        "only {checked} enum values and defaults were found"
    );
}
