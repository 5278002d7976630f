//! Small types shared by several resources: references and bounded names.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A reference to another CallVault resource in the same namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalObjectRef {
    /// Name of the referenced resource (same namespace).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A reference to a Kubernetes Secret in the same namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Name of the Secret (same namespace).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A reference to one key of a Kubernetes Secret in the same namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret (same namespace).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret.
    #[serde(default = "default_public_key")]
    #[schemars(length(min = 1, max = 253), default = "default_public_key")]
    pub key: String,
}

fn default_public_key() -> String {
    "public.pem".to_owned()
}

/// Bounded list of group or user names, as the identity provider spells them.
pub(crate) type Names = Vec<String>;
