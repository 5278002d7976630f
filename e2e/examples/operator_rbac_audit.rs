//! Compares the chart's operator ClusterRole with the requests the operator really made: every
//! permission granted should have been used, and none refused.
//!
//! ```text
//! CALLVAULT_E2E_AUDIT_LOG=$PWD/audit.log cargo test -p callvault-e2e --test operator
//! cargo run -p callvault-e2e --example operator_rbac_audit -- audit.log
//! ```
//!
//! The first command runs the operator tests with kube-apiserver writing an audit log; they run
//! the operator as the chart's ServiceAccount (impersonated). This program reads the log, keeps
//! the requests of `system:serviceaccount:*:*-callvault-operator`, renders the chart's ClusterRole
//! with helm, and prints three lists: used and granted, granted but never used, and refused. It
//! exits non-zero when either of the last two is not empty.
//!
//! A server-side apply is audited as `patch`; when it created the object (201), it also needed
//! `create`, which is counted as used.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;

use callvault_e2e::operator::render_chart;
use callvault_e2e::parse_yaml_documents;

/// (API group, resource[/subresource], verb).
type Permission = (String, String, String);

/// Permissions the ClusterRole grants, expanded to one per resource and verb.
fn granted() -> BTreeSet<Permission> {
    let rendered = render_chart("audit", "audit", &[]).expect("helm template");
    let docs = parse_yaml_documents(&rendered, "chart").expect("chart parses");
    let role = docs
        .iter()
        .find(|d| {
            d.object["kind"] == "ClusterRole"
                && d.object["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.ends_with("-operator"))
        })
        .expect("the chart renders the operator ClusterRole");
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect()
    };
    let mut set = BTreeSet::new();
    for rule in role.object["rules"].as_array().expect("rules") {
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                for verb in strings(&rule["verbs"]) {
                    set.insert((group.clone(), resource.clone(), verb));
                }
            }
        }
    }
    set
}

fn main() -> ExitCode {
    let path = std::env::args()
        .nth(1)
        .expect("usage: operator_rbac_audit AUDIT_LOG");
    let log = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));

    // Permission → (requests allowed, requests refused).
    let mut used: BTreeMap<Permission, (usize, usize)> = BTreeMap::new();
    for line in log.lines() {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if event["stage"] != "ResponseComplete" {
            continue;
        }
        let user = event["impersonatedUser"]["username"]
            .as_str()
            .or_else(|| event["user"]["username"].as_str())
            .unwrap_or_default();
        let is_operator =
            user.starts_with("system:serviceaccount:") && user.ends_with("-callvault-operator");
        if !is_operator {
            continue;
        }
        let object = &event["objectRef"];
        let Some(resource) = object["resource"].as_str() else {
            continue; // discovery and other non-resource requests
        };
        let resource = match object["subresource"].as_str() {
            Some(sub) => format!("{resource}/{sub}"),
            None => resource.to_owned(),
        };
        let group = object["apiGroup"].as_str().unwrap_or_default().to_owned();
        let verb = event["verb"].as_str().unwrap_or_default().to_owned();
        let code = event["responseStatus"]["code"].as_i64().unwrap_or(0);
        let refused = code == 403;
        let mut record = |verb: String| {
            let entry = used
                .entry((group.clone(), resource.clone(), verb))
                .or_default();
            if refused {
                entry.1 += 1;
            } else {
                entry.0 += 1;
            }
        };
        if verb == "patch" && code == 201 {
            record("create".to_owned());
        }
        record(verb);
    }

    let granted = granted();
    println!("used and granted (requests):");
    for (p, (ok, _)) in used.iter().filter(|(_, (ok, _))| *ok > 0) {
        println!("  {:<16} {:<32} {:<8} {ok}", group_name(&p.0), p.1, p.2);
    }
    // `update` on an owner's finalizers is never requested: admission
    // (OwnerReferencesPermissionEnforcement, enabled in the test control plane) checks it when a
    // child with blockOwnerDeletion is written, so a missing grant fails those writes instead.
    let admission = |p: &Permission| p.1.ends_with("/finalizers") && p.2 == "update";
    println!("checked by admission when children are written:");
    for p in granted.iter().filter(|p| admission(p)) {
        println!("  {:<16} {:<32} {}", group_name(&p.0), p.1, p.2);
    }
    let unused: Vec<&Permission> = granted
        .iter()
        .filter(|p| !admission(p) && used.get(*p).is_none_or(|(ok, _)| *ok == 0))
        .collect();
    println!("granted but never used:");
    for p in &unused {
        println!("  {:<16} {:<32} {}", group_name(&p.0), p.1, p.2);
    }
    let refused: Vec<(&Permission, usize)> = used
        .iter()
        .filter(|(_, (_, no))| *no > 0)
        .map(|(p, (_, no))| (p, *no))
        .collect();
    println!("refused (403):");
    for (p, n) in &refused {
        println!("  {:<16} {:<32} {:<8} {n}", group_name(&p.0), p.1, p.2);
    }
    if used.is_empty() {
        eprintln!("no request of the operator's ServiceAccount in {path}");
        return ExitCode::FAILURE;
    }
    if unused.is_empty() && refused.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn group_name(group: &str) -> &str {
    if group.is_empty() { "core" } else { group }
}
