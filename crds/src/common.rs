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

/// CEL rule for a cron schedule as a CronJob takes it: five fields (minute 0-59, hour 0-23,
/// day of month 1-31, month 1-12 or `jan`-`dec`, day of week 0-7 or `sun`-`sat`; each `*`, a
/// value or a range, with an optional `/step`, comma-separated) or an `@hourly`-style
/// descriptor. Without it `61 * * * *` would pass admission and only fail when the operator
/// creates the CronJob. No backslashes: CEL strings would read them as escapes.
pub(crate) const CRON_RULE: &str = "self.matches('^ *(?:@(?:yearly|annually|monthly|weekly|daily|midnight|hourly)|(?:[*]|[0-5]?[0-9](?:-[0-5]?[0-9])?)(?:/[0-9]{1,2})?(?:,(?:[*]|[0-5]?[0-9](?:-[0-5]?[0-9])?)(?:/[0-9]{1,2})?)* +(?:[*]|(?:[01]?[0-9]|2[0-3])(?:-(?:[01]?[0-9]|2[0-3]))?)(?:/[0-9]{1,2})?(?:,(?:[*]|(?:[01]?[0-9]|2[0-3])(?:-(?:[01]?[0-9]|2[0-3]))?)(?:/[0-9]{1,2})?)* +(?:[*]|(?:0?[1-9]|[12][0-9]|3[01])(?:-(?:0?[1-9]|[12][0-9]|3[01]))?)(?:/[0-9]{1,2})?(?:,(?:[*]|(?:0?[1-9]|[12][0-9]|3[01])(?:-(?:0?[1-9]|[12][0-9]|3[01]))?)(?:/[0-9]{1,2})?)* +(?:[*]|(?:0?[1-9]|1[0-2]|(?i:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec))(?:-(?:0?[1-9]|1[0-2]|(?i:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)))?)(?:/[0-9]{1,2})?(?:,(?:[*]|(?:0?[1-9]|1[0-2]|(?i:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec))(?:-(?:0?[1-9]|1[0-2]|(?i:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)))?)(?:/[0-9]{1,2})?)* +(?:[*]|(?:[0-7]|(?i:sun|mon|tue|wed|thu|fri|sat))(?:-(?:[0-7]|(?i:sun|mon|tue|wed|thu|fri|sat)))?)(?:/[0-9]{1,2})?(?:,(?:[*]|(?:[0-7]|(?i:sun|mon|tue|wed|thu|fri|sat))(?:-(?:[0-7]|(?i:sun|mon|tue|wed|thu|fri|sat)))?)(?:/[0-9]{1,2})?)*) *$')";

/// The message of [`CRON_RULE`].
pub(crate) const CRON_MESSAGE: &str = "must be a cron schedule: 5 fields separated by spaces (minute 0-59, hour 0-23, day of month 1-31, month 1-12, day of week 0-7; each *, a value or a range, optionally /step, comma-separated) or @yearly, @monthly, @weekly, @daily or @hourly";
