//! Server-side apply of multi-document YAML, the way `kubectl apply --server-side` does it.

use std::path::Path;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{Scope, pinned_kind};
use kube::{Client, ResourceExt};
use serde::Deserialize;

use crate::{Error, FIELD_MANAGER, Result};

/// One object of a YAML file.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    /// Where it came from: `path#index` (index from 0, empty documents not counted).
    pub source: String,
    /// The object, as JSON.
    pub object: serde_json::Value,
}

impl Document {
    /// `apiVersion`, `kind` and `metadata.name`, or an error naming the document.
    pub fn identity(&self) -> Result<(GroupVersionKind, String)> {
        let field = |pointer: &str| {
            self.object
                .pointer(pointer)
                .and_then(|v| v.as_str())
                .filter(|v| !v.is_empty())
                .ok_or_else(|| Error::Yaml {
                    path: self.source.clone(),
                    message: format!(
                        "missing {}",
                        pointer.trim_start_matches('/').replace('/', ".")
                    ),
                })
        };
        let api_version = field("/apiVersion")?;
        let kind = field("/kind")?;
        let name = field("/metadata/name")?;
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        Ok((GroupVersionKind::gvk(group, version, kind), name.to_owned()))
    }
}

/// Parses every non-empty document of a YAML string; `label` names it in errors.
pub fn parse_yaml_documents(yaml: &str, label: &str) -> Result<Vec<Document>> {
    let mut docs = Vec::new();
    for de in serde_yaml::Deserializer::from_str(yaml) {
        let value = serde_json::Value::deserialize(de).map_err(|e| Error::Yaml {
            path: label.to_owned(),
            message: e.to_string(),
        })?;
        match value {
            serde_json::Value::Null => continue,
            serde_json::Value::Object(_) => docs.push(Document {
                source: format!("{label}#{}", docs.len()),
                object: value,
            }),
            other => {
                return Err(Error::Yaml {
                    path: format!("{label}#{}", docs.len()),
                    message: format!("expected an object, found {other}"),
                });
            }
        }
    }
    Ok(docs)
}

/// Parses every non-empty document of a YAML file.
pub fn read_yaml_documents(path: &Path) -> Result<Vec<Document>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        context: format!("reading {}", path.display()),
        source,
    })?;
    parse_yaml_documents(&text, &path.display().to_string())
}

/// Server-side applies every document of a YAML file (forcing conflicts, field manager
/// [`FIELD_MANAGER`]); namespaced objects without a namespace go to `namespace`. Stops at the
/// first object the server refuses, with its message. Returns the stored objects.
pub async fn apply_yaml_file(
    client: &Client,
    path: &Path,
    namespace: &str,
) -> Result<Vec<DynamicObject>> {
    apply_documents(client, &read_yaml_documents(path)?, namespace).await
}

/// [`apply_yaml_file`] for YAML text; `label` names it in errors.
pub async fn apply_yaml(
    client: &Client,
    yaml: &str,
    label: &str,
    namespace: &str,
) -> Result<Vec<DynamicObject>> {
    apply_documents(client, &parse_yaml_documents(yaml, label)?, namespace).await
}

/// Server-side applies `docs` in order. See [`apply_yaml_file`].
pub async fn apply_documents(
    client: &Client,
    docs: &[Document],
    namespace: &str,
) -> Result<Vec<DynamicObject>> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut applied = Vec::with_capacity(docs.len());
    for doc in docs {
        let (gvk, name) = doc.identity()?;
        let refused = |e: kube::Error| Error::Apply {
            path: doc.source.clone(),
            kind: gvk.kind.clone(),
            name: name.clone(),
            source: Box::new(e),
        };
        // Discovery per object: CRDs installed a moment ago must be found too.
        let (resource, caps) = pinned_kind(client, &gvk).await.map_err(refused)?;
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Cluster => Api::all_with(client.clone(), &resource),
            Scope::Namespaced => {
                let ns = doc
                    .object
                    .pointer("/metadata/namespace")
                    .and_then(|v| v.as_str())
                    .unwrap_or(namespace);
                Api::namespaced_with(client.clone(), ns, &resource)
            }
        };
        let object = api
            .patch(&name, &params, &Patch::Apply(&doc.object))
            .await
            .map_err(refused)?;
        tracing::debug!(kind = %gvk.kind, name = %object.name_any(), "applied");
        applied.push(object);
    }
    Ok(applied)
}
