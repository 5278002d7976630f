//! Offline validation of CallVault resources, as the Kubernetes API server does it.
//!
//! The order follows the API server: unknown fields are reported (like `kubectl apply` with
//! strict field validation), nulls for non-nullable fields are dropped, schema defaults are
//! applied, the openAPIV3Schema is checked (types, enums, required, ranges, patterns, lengths,
//! list sets), then every `x-kubernetes-validations` CEL rule is evaluated at its schema node with
//! `self` (and `oldSelf` on update) bound. The object is then decoded into its typed resource.

use std::fmt;

use regex::Regex;
use serde_json::{Map, Value};

use crate::{API_VERSION, AccessProfile, Connector, RecordingProfile, SpeechJob, StorageTarget};

/// A CallVault resource that passed validation, with defaults applied.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Resource {
    /// A RecordingProfile.
    RecordingProfile(RecordingProfile),
    /// An AccessProfile.
    AccessProfile(AccessProfile),
    /// A StorageTarget.
    StorageTarget(StorageTarget),
    /// A Connector.
    Connector(Connector),
    /// A SpeechJob.
    SpeechJob(SpeechJob),
}

impl Resource {
    /// The resource's kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::RecordingProfile(_) => "RecordingProfile",
            Self::AccessProfile(_) => "AccessProfile",
            Self::StorageTarget(_) => "StorageTarget",
            Self::Connector(_) => "Connector",
            Self::SpeechJob(_) => "SpeechJob",
        }
    }

    /// The resource's `metadata.name`.
    pub fn name(&self) -> &str {
        let meta = match self {
            Self::RecordingProfile(r) => &r.metadata,
            Self::AccessProfile(r) => &r.metadata,
            Self::StorageTarget(r) => &r.metadata,
            Self::Connector(r) => &r.metadata,
            Self::SpeechJob(r) => &r.metadata,
        };
        meta.name.as_deref().unwrap_or_default()
    }
}

/// Kind of problem with one field, named like the API server's `field.ErrorType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldErrorKind {
    /// A required field is missing (`FieldValueRequired`).
    Required,
    /// The value is malformed or out of range (`FieldValueInvalid`).
    Invalid,
    /// The value is not one of the allowed values (`FieldValueNotSupported`).
    NotSupported,
    /// The field is not allowed here (`FieldValueForbidden`).
    Forbidden,
    /// A string is too long (`FieldValueTooLong`).
    TooLong,
    /// A list has too many items (`FieldValueTooMany`).
    TooMany,
    /// A list that is a set holds the same value twice (`FieldValueDuplicate`).
    Duplicate,
    /// The field is not declared in the schema (`FieldValueUnknown`; strict field validation).
    Unknown,
    /// The value has the wrong JSON type (`FieldValueTypeInvalid`).
    TypeInvalid,
}

/// One problem with one field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the field, e.g. `spec.selector.schedule.windows[0].end`.
    pub path: String,
    /// What kind of problem.
    pub kind: FieldErrorKind,
    /// Human-readable description (for CEL rules: the rule's message).
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Why a document could not be accepted.
#[derive(Debug, thiserror::Error)]
pub enum ValidationError {
    /// The text is not YAML (or JSON).
    #[error("document {document}: not valid YAML: {source}")]
    Yaml {
        /// Index of the document in a multi-document stream (0-based).
        document: usize,
        /// Parser error.
        source: serde_yaml::Error,
    },
    /// The document is not a Kubernetes object.
    #[error("not a Kubernetes object: {0}")]
    NotAnObject(&'static str),
    /// The kind is not a CallVault resource.
    #[error("{api_version} {kind} is not a CallVault resource")]
    NotCallVault {
        /// `apiVersion` found.
        api_version: String,
        /// `kind` found.
        kind: String,
    },
    /// The object failed validation; every problem found is listed.
    #[error("{kind} {name:?} is invalid: {}", join(.errors))]
    Invalid {
        /// Kind of the object.
        kind: String,
        /// `metadata.name` (empty if missing).
        name: String,
        /// The problems, each naming its field.
        errors: Vec<FieldError>,
    },
    /// An update changed the kind or name of the object.
    #[error("old and new objects differ in kind or name: {0}")]
    Mismatch(String),
}

impl ValidationError {
    /// The field errors, if this is an `Invalid` error.
    pub fn field_errors(&self) -> &[FieldError] {
        match self {
            Self::Invalid { errors, .. } => errors,
            _ => &[],
        }
    }
}

fn join(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Validate one object (as parsed from YAML or JSON) on creation.
pub fn validate_document(object: &Value) -> Result<Resource, ValidationError> {
    validate(object, None)
}

/// Validate an update of `old` to `object`: also evaluates transition rules (`oldSelf`).
pub fn validate_update(object: &Value, old: &Value) -> Result<Resource, ValidationError> {
    validate(object, Some(old))
}

/// Whether a parsed document is one of the CallVault resources (by `apiVersion` group).
pub fn is_callvault(object: &Value) -> bool {
    object
        .get("apiVersion")
        .and_then(Value::as_str)
        .is_some_and(|v| v.split('/').next() == Some(crate::GROUP))
}

/// Parse a multi-document YAML stream into JSON values, skipping empty documents.
pub fn parse_yaml(text: &str) -> Result<Vec<Value>, ValidationError> {
    use serde::Deserialize as _;
    let mut out = Vec::new();
    for (document, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value =
            Value::deserialize(doc).map_err(|source| ValidationError::Yaml { document, source })?;
        if !value.is_null() {
            out.push(value);
        }
    }
    Ok(out)
}

/// Validate every CallVault resource in a multi-document YAML stream. Documents of other
/// API groups (Secrets, ConfigMaps…) are skipped. Returns every error, not just the first.
pub fn validate_yaml(text: &str) -> Result<Vec<Resource>, Vec<ValidationError>> {
    let docs = parse_yaml(text).map_err(|e| vec![e])?;
    let mut resources = Vec::new();
    let mut errors = Vec::new();
    for doc in docs.iter().filter(|d| is_callvault(d)) {
        match validate_document(doc) {
            Ok(r) => resources.push(r),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(resources)
    } else {
        Err(errors)
    }
}

/// Check every `default` in a CRD schema against its own node's schema and CEL rules.
///
/// The API server refuses to install a CRD whose defaults do not pass their own validation, so
/// this tells offline whether generated CRDs will install.
pub fn check_schema_defaults(schema: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    walk_defaults(schema, "", &mut errors);
    errors
}

fn walk_defaults(schema: &Value, path: &str, errors: &mut Vec<FieldError>) {
    if let Some(default) = schema.get("default") {
        let value = kube::core::cel::apply_defaults(schema, default);
        let before = errors.len();
        check_schema(schema, &value, path, errors);
        let structural_ok = errors.len() == before;
        let start = errors.len();
        check_cel(schema, &value, None, structural_ok, errors);
        for e in &mut errors[start..] {
            e.path = if e.path.is_empty() {
                path.to_owned()
            } else {
                child(path, e.path.trim_start_matches('.'))
            };
        }
    }
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (key, node) in props {
            walk_defaults(node, &child(path, key), errors);
        }
    }
    if let Some(items) = schema.get("items") {
        walk_defaults(items, &format!("{path}[*]"), errors);
    }
}

fn validate(object: &Value, old: Option<&Value>) -> Result<Resource, ValidationError> {
    let obj = object.as_object().ok_or(ValidationError::NotAnObject(
        "the document is not a mapping",
    ))?;
    let api_version = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .ok_or(ValidationError::NotAnObject("apiVersion is missing"))?;
    let kind = obj
        .get("kind")
        .and_then(Value::as_str)
        .ok_or(ValidationError::NotAnObject("kind is missing"))?;
    let Some(crd) = crate::crds()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
    else {
        return Err(ValidationError::NotCallVault {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
        });
    };
    let name = obj
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let invalid = |errors| ValidationError::Invalid {
        kind: kind.to_owned(),
        name: name.clone(),
        errors,
    };
    if api_version != API_VERSION {
        if is_callvault(object) {
            return Err(invalid(vec![FieldError {
                path: "apiVersion".into(),
                kind: FieldErrorKind::NotSupported,
                message: format!("{api_version:?} is not served; use \"{API_VERSION}\""),
            }]));
        }
        return Err(ValidationError::NotCallVault {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
        });
    }
    if let Some(old) = old {
        let old_kind = old.get("kind").and_then(Value::as_str);
        let old_name = old.pointer("/metadata/name").and_then(Value::as_str);
        if old_kind != Some(kind) || old_name != Some(name.as_str()) {
            return Err(ValidationError::Mismatch(format!(
                "{kind}/{name} vs {}/{}",
                old_kind.unwrap_or_default(),
                old_name.unwrap_or_default()
            )));
        }
    }
    let schema = crd
        .spec
        .versions
        .first()
        .and_then(|v| v.schema.as_ref())
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .and_then(|s| serde_json::to_value(s).ok())
        .unwrap_or(Value::Null);

    let mut errors = Vec::new();
    let prepared = prepare(&schema, object, &mut errors);
    check_metadata(&prepared, &mut errors);
    check_schema(&schema, &prepared, "", &mut errors);
    // Like the API server, CEL runs even when the schema check failed; rules that cannot be
    // evaluated on a malformed object are then dropped, as they would only add noise.
    let structural_ok = errors.is_empty();
    let old_prepared = old.map(|o| prepare(&schema, o, &mut Vec::new()));
    check_cel(
        &schema,
        &prepared,
        old_prepared.as_ref(),
        structural_ok,
        &mut errors,
    );
    check_schedule(&prepared, &mut errors);
    if !errors.is_empty() {
        return Err(invalid(errors));
    }
    decode(kind, prepared).map_err(|e| {
        invalid(vec![FieldError {
            path: String::new(),
            kind: FieldErrorKind::Invalid,
            message: format!("does not decode: {e}"),
        }])
    })
}

/// Parse `spec.schedule` (Connector, SpeechJob) with the parser the jobs run on. The CRD's
/// CEL pattern admits what a CronJob accepts; this also refuses what would never run or run
/// otherwise than written (`5-1`, `*/0`, 30 February). Skipped when CEL already refused it.
fn check_schedule(object: &Value, errors: &mut Vec<FieldError>) {
    const PATH: &str = "spec.schedule";
    let Some(schedule) = object.pointer("/spec/schedule").and_then(Value::as_str) else {
        return;
    };
    if errors.iter().any(|e| e.path == PATH) {
        return;
    }
    if let Err(e) = crate::Cron::parse(schedule) {
        errors.push(FieldError {
            path: PATH.into(),
            kind: FieldErrorKind::Invalid,
            message: format!("Invalid value: {schedule:?}: {}", e.reason()),
        });
    }
}

/// Drop the status (a subresource: ignored on create and update), report unknown fields,
/// drop nulls of non-nullable fields, then apply the schema defaults.
fn prepare(schema: &Value, object: &Value, errors: &mut Vec<FieldError>) -> Value {
    let mut obj = object.clone();
    if let Some(map) = obj.as_object_mut() {
        map.remove("status");
    }
    prune(schema, &mut obj, "", errors);
    kube::core::cel::apply_defaults(schema, &obj)
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn prune(schema: &Value, value: &mut Value, path: &str, errors: &mut Vec<FieldError>) {
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        return;
    }
    match value {
        Value::Object(map) => {
            let Some(props) = schema.get("properties").and_then(Value::as_object) else {
                return;
            };
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                let p = child(path, &key);
                match props.get(&key) {
                    None => {
                        // The API server owns these root fields (ObjectMeta is checked apart).
                        if path.is_empty()
                            && matches!(key.as_str(), "apiVersion" | "kind" | "metadata")
                        {
                            continue;
                        }
                        map.remove(&key);
                        errors.push(FieldError {
                            path: p,
                            kind: FieldErrorKind::Unknown,
                            message: "field not declared in schema".into(),
                        });
                    }
                    Some(sub) => {
                        let nullable = sub.get("nullable") == Some(&Value::Bool(true));
                        if map.get(&key).is_some_and(Value::is_null) && !nullable {
                            map.remove(&key);
                        } else if let Some(v) = map.get_mut(&key) {
                            prune(sub, v, &p, errors);
                        }
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    prune(item_schema, item, &format!("{path}[{i}]"), errors);
                }
            }
        }
        _ => {}
    }
}

fn check_metadata(object: &Value, errors: &mut Vec<FieldError>) {
    let name = object.pointer("/metadata/name").and_then(Value::as_str);
    match name {
        None | Some("") => errors.push(FieldError {
            path: "metadata.name".into(),
            kind: FieldErrorKind::Required,
            message: "Required value: name is required".into(),
        }),
        Some(n) if !is_dns_subdomain(n) => errors.push(FieldError {
            path: "metadata.name".into(),
            kind: FieldErrorKind::Invalid,
            message: format!(
                "Invalid value: {n:?}: a lowercase RFC 1123 subdomain must consist of lower case \
                 alphanumeric characters, '-' or '.', and must start and end with an alphanumeric \
                 character (at most 253 characters)"
            ),
        }),
        Some(_) => {}
    }
}

fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn short(value: &Value) -> String {
    let s = value.to_string();
    if s.chars().count() > 80 {
        format!("{}…", s.chars().take(80).collect::<String>())
    } else {
        s
    }
}

/// Check one value against its schema node (recursively), API-server style messages.
fn check_schema(schema: &Value, value: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let mut err = |kind, message: String| {
        errors.push(FieldError {
            path: path.to_owned(),
            kind,
            message,
        })
    };
    if value.is_null() {
        if schema.get("nullable") != Some(&Value::Bool(true)) && !path.is_empty() {
            err(FieldErrorKind::Required, "Required value".into());
        }
        return;
    }
    if let Some(expected) = schema.get("type").and_then(Value::as_str) {
        let actual = type_name(value);
        let ok = actual == expected || (expected == "number" && actual == "integer");
        if !ok {
            err(
                FieldErrorKind::TypeInvalid,
                format!(
                    "Invalid value: {}: must be of type {expected}",
                    short(value)
                ),
            );
            return;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let list = allowed
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        err(
            FieldErrorKind::NotSupported,
            format!(
                "Unsupported value: {}: supported values: {list}",
                short(value)
            ),
        );
    }
    match value {
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
                && x < min
            {
                err(
                    FieldErrorKind::Invalid,
                    format!("Invalid value: {n}: should be greater than or equal to {min}"),
                );
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
                && x > max
            {
                err(
                    FieldErrorKind::Invalid,
                    format!("Invalid value: {n}: should be less than or equal to {max}"),
                );
            }
        }
        Value::String(s) => {
            let len = s.chars().count() as u64;
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                && len > max
            {
                err(
                    FieldErrorKind::TooLong,
                    format!("Too long: may not be more than {max} characters"),
                );
            }
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
                && len < min
            {
                err(
                    FieldErrorKind::Invalid,
                    format!(
                        "Invalid value: {}: should be at least {min} chars long",
                        short(value)
                    ),
                );
            }
            if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
                match Regex::new(pattern) {
                    Ok(re) if re.is_match(s) => {}
                    Ok(_) => err(
                        FieldErrorKind::Invalid,
                        format!("Invalid value: {}: should match '{pattern}'", short(value)),
                    ),
                    Err(e) => err(
                        FieldErrorKind::Invalid,
                        format!("schema pattern '{pattern}' does not compile: {e}"),
                    ),
                }
            }
            if schema.get("format").and_then(Value::as_str) == Some("date-time") && !is_rfc3339(s) {
                err(
                    FieldErrorKind::Invalid,
                    format!(
                        "Invalid value: {}: must be an RFC 3339 date-time",
                        short(value)
                    ),
                );
            }
        }
        Value::Array(items) => {
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                && items.len() as u64 > max
            {
                err(
                    FieldErrorKind::TooMany,
                    format!("Too many: {}: must have at most {max} items", items.len()),
                );
            }
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                && (items.len() as u64) < min
            {
                err(
                    FieldErrorKind::Invalid,
                    format!("Invalid value: should have at least {min} items"),
                );
            }
            if schema.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("set") {
                for (i, item) in items.iter().enumerate() {
                    if items[..i].contains(item) {
                        errors.push(FieldError {
                            path: format!("{path}[{i}]"),
                            kind: FieldErrorKind::Duplicate,
                            message: format!("Duplicate value: {}", short(item)),
                        });
                    }
                }
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check_schema(item_schema, item, &format!("{path}[{i}]"), errors);
                }
            }
        }
        Value::Object(map) => check_object(schema, map, path, errors),
        _ => {}
    }
}

fn check_object(
    schema: &Value,
    map: &Map<String, Value>,
    path: &str,
    errors: &mut Vec<FieldError>,
) {
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for key in required.iter().filter_map(Value::as_str) {
            if !map.contains_key(key) {
                errors.push(FieldError {
                    path: child(path, key),
                    kind: FieldErrorKind::Required,
                    message: "Required value".into(),
                });
            }
        }
    }
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (key, sub) in props {
            if let Some(v) = map.get(key) {
                check_schema(sub, v, &child(path, key), errors);
            }
        }
    }
}

fn is_rfc3339(s: &str) -> bool {
    static RE: std::sync::OnceLock<Option<Regex>> = std::sync::OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$").ok()
    })
    .as_ref()
    .is_some_and(|re| re.is_match(s))
}

fn check_cel(
    schema: &Value,
    object: &Value,
    old: Option<&Value>,
    structural_ok: bool,
    errors: &mut Vec<FieldError>,
) {
    use kube::core::cel::ErrorKind;
    let validator = kube::core::cel::Validator::new();
    let Err(failures) = validator.validate(schema, object, old) else {
        return;
    };
    for f in failures.iter() {
        if !structural_ok && f.kind != ErrorKind::ValidationFailure {
            continue;
        }
        let kind = match f.reason.as_deref() {
            Some("FieldValueRequired") => FieldErrorKind::Required,
            Some("FieldValueForbidden") => FieldErrorKind::Forbidden,
            Some("FieldValueDuplicate") => FieldErrorKind::Duplicate,
            _ => FieldErrorKind::Invalid,
        };
        errors.push(FieldError {
            path: f.field_path.clone(),
            kind,
            message: f.message.clone(),
        });
    }
}

fn decode(kind: &str, value: Value) -> Result<Resource, serde_json::Error> {
    Ok(match kind {
        "RecordingProfile" => Resource::RecordingProfile(serde_json::from_value(value)?),
        "AccessProfile" => Resource::AccessProfile(serde_json::from_value(value)?),
        "StorageTarget" => Resource::StorageTarget(serde_json::from_value(value)?),
        "Connector" => Resource::Connector(serde_json::from_value(value)?),
        _ => Resource::SpeechJob(serde_json::from_value(value)?),
    })
}
