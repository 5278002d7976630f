//! AccessProfile: who may see and do what in the portal.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::Names;
use crate::status::Condition;

/// Who may see which calls, what they may do with them, which administration they may do and
/// which encryption keys they may decrypt with. A user's permissions are the union of every
/// AccessProfile that names them.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "callvault.io",
    version = "v1alpha1",
    kind = "AccessProfile",
    plural = "accessprofiles",
    shortname = "ap",
    shortname = "accprof",
    category = "callvault",
    namespaced,
    doc = "An AccessProfile: which calls its subjects see, what they may do, and which keys they may decrypt with.",
    status = "AccessProfileStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Scope","type":"string","description":"Which calls the subjects can see","jsonPath":".spec.calls.scope"}"#,
    printcolumn = r#"{"name":"Users","type":"integer","description":"Users resolved from the subjects","jsonPath":".status.usersResolved"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct AccessProfileSpec {
    /// Free-text description shown in the portal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,
    /// Groups and users this profile applies to.
    pub subjects: Subjects,
    /// Which calls the subjects can see and what they may do with them.
    #[serde(default)]
    pub calls: CallPermissions,
    /// Administrative permissions.
    #[serde(default)]
    pub admin: AdminPermissions,
    /// Ids of the encryption keys (lowercase hex SHA-256 of the public key's SPKI DER) the
    /// subjects may decrypt with. Playing, downloading or exporting audio needs a grant of the
    /// recording's key here; no admin permission overrides that.
    #[serde(default)]
    #[schemars(
        length(max = 64),
        inner(length(min = 64, max = 64), regex(pattern = r"^[0-9a-f]{64}$"))
    )]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub keys: Vec<String>,
}

/// Groups and users, as the identity provider or the portal's directory names them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "size(self.groups) + size(self.users) > 0",
    "message": "spec.subjects must name at least one group or user",
    "fieldPath": ".groups",
    "reason": "FieldValueRequired"
}]))]
pub struct Subjects {
    /// Directory groups whose members get this profile.
    #[serde(default)]
    #[schemars(length(max = 256), inner(length(min = 1, max = 256)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub groups: Names,
    /// Individual users (login names) who get this profile.
    #[serde(default)]
    #[schemars(length(max = 256), inner(length(min = 1, max = 256)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub users: Names,
}

/// Call visibility and actions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.scope != 'OwnAndGroups' || size(self.groups) > 0",
        "message": "spec.calls.groups must name at least one group when spec.calls.scope is OwnAndGroups",
        "fieldPath": ".groups",
        "reason": "FieldValueRequired"
    },
    {
        "rule": "self.scope == 'OwnAndGroups' || size(self.groups) == 0",
        "message": "spec.calls.groups is only allowed when spec.calls.scope is OwnAndGroups",
        "fieldPath": ".groups",
        "reason": "FieldValueForbidden"
    }
]))]
pub struct CallPermissions {
    /// Which calls are visible: `None`, `Own`, `OwnAndGroups` (own plus the calls of members of
    /// `groups`) or `All`.
    #[serde(default)]
    pub scope: CallScope,
    /// Groups whose members' calls are visible; only with scope `OwnAndGroups`.
    #[serde(default)]
    #[schemars(length(max = 256), inner(length(min = 1, max = 256)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub groups: Names,
    /// What may be done with the visible calls.
    #[serde(default)]
    pub actions: CallActions,
}

/// Call visibility scope.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum CallScope {
    /// No calls.
    #[default]
    None,
    /// The user's own calls.
    Own,
    /// The user's own calls and those of the members of `calls.groups`.
    OwnAndGroups,
    /// All calls of the namespace (tenant).
    All,
}

/// Actions on visible calls; all off by default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallActions {
    /// Play recordings in the browser.
    #[serde(default)]
    pub play: bool,
    /// Download decrypted recordings.
    #[serde(default)]
    pub download: bool,
    /// Bulk export (ZIP), decrypted or kept encrypted.
    #[serde(default)]
    pub export: bool,
    /// Assign tags to calls.
    #[serde(default)]
    pub tag: bool,
    /// Add notes to calls.
    #[serde(default)]
    pub add_notes: bool,
    /// Delete notes written by other users.
    #[serde(default)]
    pub delete_others_notes: bool,
    /// Delete calls (carried out by the next retention run; audited).
    #[serde(default)]
    pub delete_calls: bool,
    /// Place and lift legal hold.
    #[serde(default)]
    pub legal_hold: bool,
}

/// Administrative permissions; all off by default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdminPermissions {
    /// Create and change RecordingProfiles through the portal.
    #[serde(default)]
    pub manage_recording_profiles: bool,
    /// Create and change AccessProfiles through the portal.
    #[serde(default)]
    pub manage_access_profiles: bool,
    /// Create and change the tag catalogue.
    #[serde(default)]
    pub manage_tags: bool,
    /// Change system settings (does not imply tag management).
    #[serde(default)]
    pub configure_system: bool,
    /// Read and export the audit trail.
    #[serde(default)]
    pub audit_trail: bool,
}

/// Observed state of an AccessProfile.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessProfileStatus {
    /// Ready, SubjectsResolved.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` last applied by the portal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Users the subjects resolved to.
    #[serde(default)]
    pub users_resolved: i64,
    /// Named groups or users unknown to the directory.
    #[serde(default)]
    pub unknown_subjects: Vec<String>,
}
