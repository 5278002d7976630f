//! The audit trail: read with filters, export to CSV, verify the hash chain. There is no
//! endpoint that changes or deletes an entry (and the database refuses it).

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use std::sync::Weak;

use callvault_store::db::{AlarmSeverity, AuditEntry, AuditFilter, AuditVerification, now_micros};
use serde::Deserialize;
use serde_json::json;

use super::extract::{Json, Query};
use super::{Caller, St};
use crate::AppState;
use crate::access::AdminPermission;
use crate::error::{ApiError, ApiResult};
use crate::export;

/// Most entries per page, and per CSV export.
pub const MAX_PAGE: i64 = 1000;
pub const MAX_EXPORT: i64 = 100_000;

#[derive(Debug, Default, Deserialize)]
pub struct AuditParams {
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub item_type: Option<String>,
    pub item_id: Option<String>,
    /// Continue below this sequence number (the last entry of the previous page).
    pub before: Option<i64>,
    pub limit: Option<i64>,
}

impl AuditParams {
    fn filter(&self) -> AuditFilter {
        let some = |s: &Option<String>| s.clone().filter(|v| !v.is_empty());
        AuditFilter {
            from: self.from,
            to: self.to,
            actor: some(&self.actor),
            action: some(&self.action),
            item_type: some(&self.item_type),
            item_id: some(&self.item_id),
            before_seq: self.before,
        }
    }
}

pub async fn list(
    State(state): St,
    c: Caller,
    Query(p): Query<AuditParams>,
) -> ApiResult<Json<Vec<AuditEntry>>> {
    c.require(AdminPermission::AuditTrail)?;
    let limit = p.limit.unwrap_or(100);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::invalid(format!("limit must be 1..={MAX_PAGE}")));
    }
    let entries = state.db.query_audit(&c.tenant, &p.filter(), limit).await?;
    c.audit(
        &state,
        "audit.view",
        "audit",
        "",
        json!({ "actor": p.actor, "action": p.action, "item_type": p.item_type, "from": p.from, "to": p.to }),
    )
    .await?;
    Ok(Json(entries))
}

pub async fn export_csv(
    State(state): St,
    c: Caller,
    Query(p): Query<AuditParams>,
) -> ApiResult<Response> {
    c.require(AdminPermission::AuditTrail)?;
    let entries = state
        .db
        .query_audit(&c.tenant, &p.filter(), MAX_EXPORT)
        .await?;
    c.audit(
        &state,
        "audit.export",
        "audit",
        "",
        json!({ "entries": entries.len(), "actor": p.actor, "action": p.action }),
    )
    .await?;
    let csv = export::audit_csv(&entries, &c.user.username, now_micros());
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            ),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=\"audit-trail.csv\""),
            ),
        ],
        csv,
    )
        .into_response())
}

/// Walks the hash chain: whether any entry was changed or removed since it was written, and,
/// with the audit checkpoint key, how far the signed checkpoints prove it.
pub async fn verify(State(state): St, c: Caller) -> ApiResult<Json<AuditVerification>> {
    c.require(AdminPermission::AuditTrail)?;
    let v = match &state.config.audit_key {
        Some(key) => {
            state
                .db
                .verify_audit_anchored(&c.tenant, key.0.public_key())
                .await?
        }
        None => state.db.verify_audit_chain(&c.tenant).await?,
    };
    c.audit(
        &state,
        "audit.verify",
        "audit",
        "",
        json!({
            "intact": v.is_intact(), "entries": v.entries_checked,
            "proven_through": v.proven_through, "unanchored": v.unanchored,
        }),
    )
    .await?;
    Ok(Json(v))
}

/// Alarm raised when a tenant's audit chain no longer matches its checkpoints.
const CHAIN_ALARM: &str = "AuditChainBroken";

/// Signs every tenant's audit chain head at the configured interval, for as long as the
/// portal runs (the task holds the portal weakly, like the sign-in summary writer, so it ends
/// with it). A chain that no longer leads from its last checkpoint to its head is never
/// signed: it raises an alarm (and logs) instead, cleared once the chain checks out again.
pub async fn checkpoint_audit_chains(state: Weak<AppState>) {
    let Some(interval) = state.upgrade().map(|s| s.config.audit_checkpoint_interval) else {
        return;
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(state) = state.upgrade() else {
            return;
        };
        let Some(key) = state.config.audit_key.clone() else {
            return;
        };
        let tenants = match state.db.audit_tenants().await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "audit checkpoints: listing tenants");
                continue;
            }
        };
        for tenant in tenants {
            match state.db.checkpoint_audit(&tenant, &key.0).await {
                Ok(cp) => {
                    if let Some(cp) = cp {
                        tracing::debug!(%tenant, seq = cp.seq, "audit chain checkpointed");
                    }
                    let _ = state.db.clear_alarm(&tenant, CHAIN_ALARM, "portal").await;
                }
                Err(e) => {
                    tracing::error!(%tenant, error = %e, "audit chain not checkpointed");
                    let raised = state
                        .db
                        .raise_alarm(
                            &tenant,
                            CHAIN_ALARM,
                            "portal",
                            AlarmSeverity::Critical,
                            &format!("the audit trail does not match its signed checkpoints: {e}"),
                        )
                        .await;
                    if let Err(e) = raised {
                        tracing::error!(%tenant, error = %e, "raising the audit chain alarm");
                    }
                }
            }
        }
    }
}
