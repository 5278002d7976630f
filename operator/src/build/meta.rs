//! Metadata every child carries: its owner reference and the standard labels.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;

use super::names::label_value;

/// The field manager, and the `managed-by` label value, of everything the operator writes.
pub const MANAGER: &str = "callvault-operator";
/// Label selecting everything the operator manages.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Label naming the part of CallVault a child belongs to (`recorder`, `retention`, ...).
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";

/// Why a child's metadata could not be built.
#[derive(Debug, thiserror::Error)]
#[error("the {kind} has no metadata.{field}")]
pub struct MissingMetadata {
    /// The owner's kind.
    pub kind: String,
    /// The missing field.
    pub field: &'static str,
}

/// The owner of a set of children: where they go and how they are labelled.
#[derive(Debug, Clone)]
pub struct Owner {
    /// The owner's name.
    pub name: String,
    /// Its namespace (children live beside it).
    pub namespace: String,
    reference: OwnerReference,
}

impl Owner {
    /// The owner data of `resource`, which must have a name, namespace and uid (as every
    /// object read from the API server has).
    pub fn of<K: Resource<DynamicType = ()>>(resource: &K) -> Result<Self, MissingMetadata> {
        let missing = |field| MissingMetadata {
            kind: K::kind(&()).into_owned(),
            field,
        };
        let meta = resource.meta();
        Ok(Self {
            name: meta.name.clone().ok_or_else(|| missing("name"))?,
            namespace: meta.namespace.clone().ok_or_else(|| missing("namespace"))?,
            reference: resource
                .controller_owner_ref(&())
                .ok_or_else(|| missing("uid"))?,
        })
    }

    /// Labels that select the owner's children of one component (stable: used in selectors).
    pub fn selector(&self, component: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("app.kubernetes.io/name".to_owned(), "callvault".to_owned()),
            (
                "app.kubernetes.io/instance".to_owned(),
                label_value(&self.name),
            ),
            (COMPONENT_LABEL.to_owned(), component.to_owned()),
        ])
    }

    /// Every label a child of `component` carries.
    pub fn labels(&self, component: &str) -> BTreeMap<String, String> {
        let mut labels = self.selector(component);
        labels.insert(MANAGED_BY_LABEL.to_owned(), MANAGER.to_owned());
        labels.insert(
            "app.kubernetes.io/part-of".to_owned(),
            "callvault".to_owned(),
        );
        labels
    }

    /// Metadata of the child `name` of `component`: namespace, labels, owner reference.
    pub fn meta(&self, name: &str, component: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(self.namespace.clone()),
            labels: Some(self.labels(component)),
            owner_references: Some(vec![self.reference.clone()]),
            ..ObjectMeta::default()
        }
    }
}
