//! The OpenAPI 3.1 document served at `/api/v1/openapi.json`, built from one table of the
//! endpoints (a test requests every one of them, so the table and the router cannot drift).

use serde_json::{Map, Value, json};

use crate::error::Code;

/// One documented endpoint.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint {
    pub method: &'static str,
    /// Path under `/api/v1`, with `{id}` parameters.
    pub path: &'static str,
    pub summary: &'static str,
    /// What the caller needs, in words.
    pub access: &'static str,
    /// Whether a session is needed.
    pub authenticated: bool,
}

const fn ep(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    access: &'static str,
) -> Endpoint {
    Endpoint {
        method,
        path,
        summary,
        access,
        authenticated: true,
    }
}

const fn public(method: &'static str, path: &'static str, summary: &'static str) -> Endpoint {
    Endpoint {
        method,
        path,
        summary,
        access: "none",
        authenticated: false,
    }
}

/// Every endpoint of the API.
pub const ENDPOINTS: &[Endpoint] = &[
    public("get", "/openapi.json", "This document."),
    public(
        "post",
        "/auth/login",
        "Sign in with a local account; sets the session and CSRF cookies.",
    ),
    public(
        "post",
        "/auth/password-reset",
        "Set a new password with a one-time reset token.",
    ),
    public(
        "get",
        "/auth/providers",
        "How one may sign in: local accounts, and single sign-on (its display name and login URL) when configured.",
    ),
    public(
        "get",
        "/auth/oidc/login",
        "Single sign-on: redirects to the OpenID Connect provider (`return_to`: a portal path).",
    ),
    public(
        "get",
        "/auth/oidc/callback",
        "Single sign-on: the provider's redirect back; starts the session and redirects to the UI.",
    ),
    ep(
        "post",
        "/auth/logout",
        "Sign out (ends the session).",
        "a session",
    ),
    ep(
        "get",
        "/auth/me",
        "The caller, their profiles, scope, actions, admin permissions and keys.",
        "a session",
    ),
    ep(
        "post",
        "/auth/password",
        "Change one's own password (also when a change is due).",
        "a session",
    ),
    ep(
        "post",
        "/auth/impersonation/stop",
        "Stop impersonating.",
        "a session that impersonates",
    ),
    ep(
        "get",
        "/sessions",
        "The caller's live web sessions.",
        "a session",
    ),
    ep(
        "delete",
        "/sessions/{id}",
        "Terminate a web session.",
        "own session, or configureSystem",
    ),
    ep(
        "get",
        "/admin/sessions",
        "Every live web session of the tenant.",
        "configureSystem",
    ),
    ep("get", "/users", "Users of the tenant.", "configureSystem"),
    ep(
        "post",
        "/users",
        "Create a local user (must change the password at first sign-in).",
        "configureSystem",
    ),
    ep(
        "delete",
        "/users/{id}",
        "Delete a user: disabled, out of their groups and numbers; their calls stay. \
         Refused (409 legal_hold) while the user is on legal hold.",
        "configureSystem",
    ),
    ep(
        "post",
        "/users/{id}/password-reset",
        "Reset a user's password: set one, or issue a one-time token.",
        "configureSystem",
    ),
    ep(
        "put",
        "/users/{id}/legal-hold",
        "Place or lift a user's legal hold.",
        "legalHold on the user's calls",
    ),
    ep(
        "post",
        "/users/{id}/impersonate",
        "View the portal as a user, read-only (audited).",
        "configureSystem",
    ),
    ep("get", "/tags", "The tag catalogue.", "a session"),
    ep("post", "/tags", "Add a tag to the catalogue.", "manageTags"),
    ep(
        "delete",
        "/tags/{id}",
        "Remove a tag from the catalogue.",
        "manageTags",
    ),
    ep(
        "get",
        "/saved-queries",
        "The caller's saved searches.",
        "a session",
    ),
    ep("post", "/saved-queries", "Save a search.", "a session"),
    ep(
        "delete",
        "/saved-queries/{id}",
        "Delete a saved search.",
        "a session",
    ),
    ep(
        "get",
        "/recordings",
        "List calls (optionally only those not assigned to users), newest first.",
        "scope",
    ),
    ep(
        "post",
        "/recordings/search",
        "Search calls with every filter, sorting and keyset pagination.",
        "scope",
    ),
    ep(
        "put",
        "/recordings/tags",
        "Set exactly these tags on the selected calls (replaces theirs).",
        "tag",
    ),
    ep(
        "post",
        "/recordings/delete",
        "Request deletion of calls (carried out by the next retention run; refused under legal hold).",
        "deleteCalls",
    ),
    ep(
        "post",
        "/recordings/zip",
        "Download up to 50 calls as a ZIP with an HTML index (decrypted, or kept encrypted).",
        "export and key grant",
    ),
    ep(
        "post",
        "/recordings/export",
        "Export the selected or filtered calls' details to CSV or XLSX.",
        "export",
    ),
    ep(
        "get",
        "/recordings/{id}",
        "A call's details, tags, notes, transcripts and the caller's allowed actions.",
        "scope",
    ),
    ep(
        "get",
        "/recordings/{id}/media",
        "Play: the decrypted Ogg/Opus, with HTTP Range.",
        "play and key grant",
    ),
    ep(
        "get",
        "/recordings/{id}/download",
        "Download the decrypted .ogg.",
        "download and key grant",
    ),
    ep(
        "get",
        "/recordings/{id}/integrity",
        "Integrity check: authenticated or tampered.",
        "scope",
    ),
    ep("get", "/recordings/{id}/notes", "A call's notes.", "scope"),
    ep("post", "/recordings/{id}/notes", "Add a note.", "addNotes"),
    ep(
        "post",
        "/recordings/{id}/assign",
        "Assign an unassigned call to a user (and all similar calls).",
        "configureSystem and scope All",
    ),
    ep(
        "delete",
        "/notes/{id}",
        "Delete a note.",
        "addNotes (own) or deleteOthersNotes",
    ),
    ep(
        "get",
        "/audit",
        "Audit entries with filters, newest first.",
        "auditTrail",
    ),
    ep(
        "get",
        "/audit/export.csv",
        "The filtered audit trail as CSV.",
        "auditTrail",
    ),
    ep(
        "get",
        "/audit/verify",
        "Verify the audit hash chain.",
        "auditTrail",
    ),
    ep(
        "get",
        "/groups",
        "Groups of the tenant's directory with their members.",
        "configureSystem",
    ),
    ep(
        "get",
        "/resources/recording-profiles",
        "RecordingProfiles: spec and status (read-only; declared as resources).",
        "manageRecordingProfiles or configureSystem",
    ),
    ep(
        "get",
        "/resources/access-profiles",
        "AccessProfiles: spec and status (read-only; declared as resources).",
        "manageAccessProfiles or configureSystem",
    ),
    ep(
        "get",
        "/resources/storage-targets",
        "StorageTargets: spec and status (read-only; declared as resources).",
        "configureSystem",
    ),
    ep(
        "post",
        "/resources/storage-targets/{name}/test",
        "Test connection: write, read back and delete a probe object on the StorageTarget now; each step with its outcome. Audited.",
        "configureSystem",
    ),
    ep(
        "get",
        "/resources/connectors",
        "Connectors: spec and status (read-only; declared as resources).",
        "configureSystem",
    ),
    ep(
        "get",
        "/resources/speech-jobs",
        "SpeechJobs: spec and status (read-only; declared as resources).",
        "configureSystem",
    ),
    ep(
        "post",
        "/resources/speech-jobs/{name}/run",
        "Run now: starts the SpeechJob's transcription outside its schedule (standalone: in-process at once; cluster: the run-now annotation, for the operator to start a Job). 202 with how it runs; 409 when it cannot start. Audited.",
        "configureSystem",
    ),
    ep(
        "get",
        "/alarms",
        "Active alarms, newest first; with history=true also cleared ones.",
        "configureSystem",
    ),
    ep(
        "get",
        "/activity",
        "The activity log (operational events), newest first.",
        "configureSystem",
    ),
    ep(
        "get",
        "/active-calls",
        "Calls being recorded now, oldest first, with their users.",
        "scope",
    ),
    ep(
        "get",
        "/active-calls/mine",
        "The caller's own calls being recorded now.",
        "a session",
    ),
];

const fn scim(method: &'static str, path: &'static str, summary: &'static str) -> Endpoint {
    Endpoint {
        method,
        path,
        summary,
        access: "the SCIM bearer token",
        authenticated: true,
    }
}

/// SCIM 2.0 provisioning, under `/scim/v2` (not `/api/v1`): authorized by the bearer token
/// alone, never by a session, so CSRF does not apply; errors use the SCIM error schema.
pub const SCIM_ENDPOINTS: &[Endpoint] = &[
    scim(
        "get",
        "/ServiceProviderConfig",
        "SCIM: what this service provider supports.",
    ),
    scim(
        "get",
        "/ResourceTypes",
        "SCIM: the resource types (User, Group).",
    ),
    scim("get", "/Schemas", "SCIM: the User and Group schemas."),
    scim(
        "get",
        "/Users",
        "SCIM: users (`filter=userName eq \"…\"` or externalId; `startIndex`, `count`).",
    ),
    scim("post", "/Users", "SCIM: provision a user."),
    scim("get", "/Users/{id}", "SCIM: one user."),
    scim("put", "/Users/{id}", "SCIM: replace a user."),
    scim(
        "patch",
        "/Users/{id}",
        "SCIM: change a user (add, replace, remove); `active: false` ends their sessions.",
    ),
    scim(
        "delete",
        "/Users/{id}",
        "SCIM: deprovision a user (disabled, numbers and groups released, history kept).",
    ),
    scim(
        "get",
        "/Groups",
        "SCIM: groups (`filter=displayName eq \"…\"`; paging).",
    ),
    scim("post", "/Groups", "SCIM: create a group with members."),
    scim("get", "/Groups/{id}", "SCIM: one group with its members."),
    scim("put", "/Groups/{id}", "SCIM: replace a group."),
    scim(
        "patch",
        "/Groups/{id}",
        "SCIM: rename a group or add, remove, replace members.",
    ),
    scim("delete", "/Groups/{id}", "SCIM: delete a group."),
];

/// The OpenAPI document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for e in SCIM_ENDPOINTS {
        let mut op = json!({
            "summary": e.summary,
            "description": format!("Needs: {}.", e.access),
            "operationId": format!("scim_{}{}", e.method, e.path.replace(['/', '{', '}'], "_")),
            "security": [{ "scimBearer": [] }],
            "responses": {
                "200": { "description": "Success (`application/scim+json`)." },
                "default": { "description": "A SCIM error (`urn:ietf:params:scim:api:messages:2.0:Error`)." }
            }
        });
        if e.path.contains("{id}") {
            op["parameters"] = json!([{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }]);
        }
        let item = paths
            .entry(format!("/scim/v2{}", e.path))
            .or_insert_with(|| Value::Object(Map::new()));
        item[e.method] = op;
    }
    for e in ENDPOINTS {
        let mut op = json!({
            "summary": e.summary,
            "description": format!("Needs: {}.", e.access),
            "operationId": format!("{}{}", e.method, e.path.replace(['/', '{', '}', '.', '-'], "_")),
            "responses": {
                "200": { "description": "Success." },
                "default": {
                    "description": "An error.",
                    "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
                }
            }
        });
        if e.authenticated {
            op["security"] = json!([{ "session": [] }]);
        } else {
            op["security"] = json!([]);
        }
        if e.path.contains("{id}") {
            op["parameters"] = json!([{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }]);
        }
        let item = paths
            .entry(format!("/api/v1{}", e.path))
            .or_insert_with(|| Value::Object(Map::new()));
        item[e.method] = op;
    }
    let codes: Vec<String> = Code::ALL.iter().map(|c| c.as_str()).collect();
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "CallVault portal API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Find, play, download, annotate and audit recordings. Sessions are cookies; unsafe methods need the X-CSRF-Token header (the value of the cv_csrf cookie). A call outside the caller's scope answers 404; an action not granted answers 403. JSON field names are snake_case."
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "session": { "type": "apiKey", "in": "cookie", "name": crate::auth::SESSION_COOKIE },
                "scimBearer": { "type": "http", "scheme": "bearer" }
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "code": { "type": "string", "enum": codes },
                        "message": { "type": "string" }
                    }
                }
            }
        }
    })
}
