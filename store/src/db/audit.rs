//! The audit log: append-only and hash-chained per tenant.
//!
//! Entry `n` stores `prev_hash` = hash of entry `n-1` (64 zeros for the first) and
//! `hash` = SHA-256 of [`canonical_bytes`] (every field, length-prefixed, then `prev_hash`).
//! `audit_head` holds each tenant's last `(seq, hash)`; an append locks that row (PostgreSQL row
//! lock, SQLite write transaction), so two appends can never take the same `seq` and fork the
//! chain, and a removed tail is detected because the head still names it.
//!
//! Purge (retention): entries `1..=K` older than the cutoff are deleted through the database's
//! guarded path (PostgreSQL `callvault_audit_purge`, SQLite a permit row), the head keeps the
//! anchor `(K, hash of K)`, and a new `audit.purge` entry records the same anchor inside the
//! chain. Verification then starts at `K + 1` with `prev_hash` = anchor, and checks that the
//! head's anchor equals the one the last purge entry recorded.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::exec::{DbRow, Tx, args};
use super::{Db, DbError, Result, invalid, now_micros};
use crate::keys::{PrivateKey, PublicKey};

/// `prev_hash` of a chain's first entry.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Action name of the entry a purge appends.
pub const PURGE_ACTION: &str = "audit.purge";

/// An entry to append.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAuditEntry {
    pub actor: String,
    pub action: String,
    pub item_type: String,
    pub item_id: String,
    pub details: serde_json::Value,
    /// The admin acting as `actor` during impersonation.
    pub impersonator: Option<String>,
}

impl NewAuditEntry {
    pub fn new(actor: impl Into<String>, action: impl Into<String>) -> Self {
        Self {
            actor: actor.into(),
            action: action.into(),
            item_type: String::new(),
            item_id: String::new(),
            details: serde_json::Value::Object(Default::default()),
            impersonator: None,
        }
    }

    pub fn item(mut self, item_type: impl Into<String>, item_id: impl Into<String>) -> Self {
        self.item_type = item_type.into();
        self.item_id = item_id.into();
        self
    }

    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }
}

/// A stored entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub tenant: String,
    pub seq: i64,
    pub time: i64,
    pub actor: String,
    pub action: String,
    pub item_type: String,
    pub item_id: String,
    /// JSON text exactly as hashed.
    pub details: String,
    pub impersonator: Option<String>,
    pub prev_hash: String,
    pub hash: String,
}

/// Query filters; all optional. Results are newest first; pass the last `seq` as `before_seq`
/// for the next page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub item_type: Option<String>,
    pub item_id: Option<String>,
    pub before_seq: Option<i64>,
}

/// The first problem found in a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChainBreak {
    /// Entry `seq` is missing (deleted or never written).
    Missing { seq: i64 },
    /// Entry `seq` was changed after it was written (its hash does not match its content).
    Altered { seq: i64 },
    /// Entry `seq` does not link to the entry before it.
    Relinked { seq: i64 },
    /// The head does not match the last entry (`seq` is the head's).
    HeadMismatch { seq: i64 },
    /// The purge anchor in the head differs from the one the last purge entry recorded.
    AnchorMismatch { anchor_seq: i64 },
    /// Entry `seq`'s hash differs from the one a signed checkpoint recorded: it, or an entry
    /// before it, was rewritten or reordered and the chain recomputed.
    CheckpointMismatch { seq: i64 },
    /// The chain ends before the entry a signed checkpoint names: its tail was cut.
    Truncated { checkpoint_seq: i64 },
    /// A checkpoint row claims the checkpoint key but its signature does not verify.
    ForgedCheckpoint { seq: i64 },
}

impl ChainBreak {
    /// The entry the break is at.
    pub fn seq(&self) -> i64 {
        match self {
            ChainBreak::Missing { seq }
            | ChainBreak::Altered { seq }
            | ChainBreak::Relinked { seq }
            | ChainBreak::HeadMismatch { seq }
            | ChainBreak::CheckpointMismatch { seq }
            | ChainBreak::ForgedCheckpoint { seq } => *seq,
            ChainBreak::AnchorMismatch { anchor_seq } => *anchor_seq,
            ChainBreak::Truncated { checkpoint_seq } => *checkpoint_seq,
        }
    }
}

/// The chain head as signed by the checkpoint key (a key the database does not hold, like the
/// recordings' private keys): proof, outside the database, of every entry up to `seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditCheckpoint {
    pub tenant: String,
    pub seq: i64,
    /// Hash of entry `seq`.
    pub hash: String,
    /// When it was signed (µs since epoch).
    pub time: i64,
    /// Id of the signing key (SHA-256 of its public key's SPKI DER).
    pub key_id: String,
    /// RSASSA-PSS SHA-256 signature of [`AuditCheckpoint::signed_bytes`], hex.
    pub signature: String,
}

impl AuditCheckpoint {
    /// What is signed: a version tag, the tenant, `seq`, `time` and `hash`.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut put_field = |b: &[u8]| {
            out.extend_from_slice(&(b.len() as u64).to_be_bytes());
            out.extend_from_slice(b);
        };
        put_field(b"callvault-audit-checkpoint-v1");
        put_field(self.tenant.as_bytes());
        put_field(&self.seq.to_be_bytes());
        put_field(&self.time.to_be_bytes());
        put_field(self.hash.as_bytes());
        out
    }
}

fn checkpoint_from_row(r: &dyn DbRow) -> Result<AuditCheckpoint> {
    Ok(AuditCheckpoint {
        tenant: r.text("tenant")?,
        seq: r.i64("seq")?,
        hash: r.text("hash")?,
        time: r.i64("time")?,
        key_id: r.text("key_id")?,
        signature: r.text("signature")?,
    })
}

/// What a walk over part of the chain found.
struct Walk {
    checked: u64,
    /// The entry after the last one that checked out.
    next_seq: i64,
    /// Hash of the last entry that checked out.
    prev: String,
    /// `(through_seq, anchor_hash)` of the last purge entry seen.
    last_purge: Option<(i64, String)>,
    first_break: Option<ChainBreak>,
}

/// Result of [`Db::verify_audit_chain`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditVerification {
    pub entries_checked: u64,
    /// Entries before this were purged (0 = none).
    pub anchor_seq: i64,
    pub last_seq: i64,
    pub first_break: Option<ChainBreak>,
    /// The newest checkpoint signed by the checkpoint key, when verified against one.
    pub checkpoint: Option<AuditCheckpoint>,
    /// Every entry up to this one is proven by that checkpoint (0 = none proven).
    pub proven_through: i64,
    /// Entries after the proven ones (a checkpoint will cover them): these are checked for
    /// consistency only, and a database writer could still rewrite or cut them.
    pub unanchored: i64,
}

impl AuditVerification {
    pub fn is_intact(&self) -> bool {
        self.first_break.is_none()
    }
}

/// Result of [`Db::purge_audit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeReport {
    pub purged: u64,
    /// Entries up to and including this were removed (0 = nothing purged).
    pub through_seq: i64,
}

pub(crate) fn put(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

/// An entry's hash (hex SHA-256), for offline verification too. It covers: a version tag, every field length-prefixed (so no two
/// different entries encode alike), then `prev_hash`.
pub fn audit_entry_hash(e: &AuditEntry) -> String {
    let mut h = Sha256::new();
    put(&mut h, b"callvault-audit-v1");
    put(&mut h, e.tenant.as_bytes());
    h.update(e.seq.to_be_bytes());
    h.update(e.time.to_be_bytes());
    put(&mut h, e.actor.as_bytes());
    put(&mut h, e.action.as_bytes());
    put(&mut h, e.item_type.as_bytes());
    put(&mut h, e.item_id.as_bytes());
    put(&mut h, e.details.as_bytes());
    match &e.impersonator {
        None => h.update([0u8]),
        Some(i) => {
            h.update([1u8]);
            put(&mut h, i.as_bytes());
        }
    }
    put(&mut h, e.prev_hash.as_bytes());
    hex::encode(h.finalize())
}

const ENTRY_COLUMNS: &str =
    "tenant, seq, time, actor, action, item_type, item_id, details, impersonator, prev_hash, hash";

fn entry_from_row(r: &dyn DbRow) -> Result<AuditEntry> {
    Ok(AuditEntry {
        tenant: r.text("tenant")?,
        seq: r.i64("seq")?,
        time: r.i64("time")?,
        actor: r.text("actor")?,
        action: r.text("action")?,
        item_type: r.text("item_type")?,
        item_id: r.text("item_id")?,
        details: r.text("details")?,
        impersonator: r.opt_text("impersonator")?,
        prev_hash: r.text("prev_hash")?,
        hash: r.text("hash")?,
    })
}

struct Head {
    seq: i64,
    hash: String,
    anchor_seq: i64,
    anchor_hash: String,
}

fn head_from_row(r: &dyn DbRow) -> Result<Head> {
    Ok(Head {
        seq: r.i64("seq")?,
        hash: r.text("hash")?,
        anchor_seq: r.i64("anchor_seq")?,
        anchor_hash: r.text("anchor_hash")?,
    })
}

/// Creates the tenant's head if needed and locks it until the transaction ends.
async fn lock_head(tx: &mut Tx, tenant: &str) -> Result<Head> {
    tx.exec(
        "INSERT INTO audit_head (tenant, seq, hash) VALUES ($1, 0, $2) ON CONFLICT (tenant) DO NOTHING",
        &args![tenant, GENESIS_HASH],
    )
    .await?;
    tx.row(
        "UPDATE audit_head SET seq = seq WHERE tenant = $1 \
         RETURNING seq, hash, anchor_seq, anchor_hash",
        &args![tenant],
        head_from_row,
    )
    .await?
    .ok_or_else(|| DbError::Conflict("audit head vanished during append".to_owned()))
}

/// Appends after the locked `head`, in the caller's transaction.
async fn append_locked(
    tx: &mut Tx,
    tenant: &str,
    head: &Head,
    entry: &NewAuditEntry,
) -> Result<AuditEntry> {
    if entry.actor.is_empty() || entry.action.is_empty() {
        return Err(invalid("audit entry", "actor and action are required"));
    }
    let mut e = AuditEntry {
        tenant: tenant.to_owned(),
        seq: head.seq + 1,
        time: now_micros(),
        actor: entry.actor.clone(),
        action: entry.action.clone(),
        item_type: entry.item_type.clone(),
        item_id: entry.item_id.clone(),
        details: entry.details.to_string(),
        impersonator: entry.impersonator.clone(),
        prev_hash: head.hash.clone(),
        hash: String::new(),
    };
    e.hash = audit_entry_hash(&e);
    tx.exec(
        "INSERT INTO audit_log (tenant, seq, time, actor, action, item_type, item_id, details, \
         impersonator, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        &args![
            tenant,
            e.seq,
            e.time,
            &e.actor,
            &e.action,
            &e.item_type,
            &e.item_id,
            &e.details,
            e.impersonator.clone(),
            &e.prev_hash,
            &e.hash
        ],
    )
    .await?;
    tx.exec(
        "UPDATE audit_head SET seq = $2, hash = $3 WHERE tenant = $1",
        &args![tenant, e.seq, &e.hash],
    )
    .await?;
    Ok(e)
}

impl Db {
    /// Appends an entry to the tenant's chain and returns it with its `seq` and hash.
    pub async fn append_audit(&self, tenant: &str, entry: &NewAuditEntry) -> Result<AuditEntry> {
        if tenant.is_empty() {
            return Err(invalid("tenant", "must not be empty"));
        }
        let mut tx = self.begin().await?;
        let head = lock_head(&mut tx, tenant).await?;
        let e = append_locked(&mut tx, tenant, &head, entry).await?;
        tx.commit().await?;
        Ok(e)
    }

    /// Entries matching `f`, newest first, at most `limit`.
    pub async fn query_audit(
        &self,
        tenant: &str,
        f: &AuditFilter,
        limit: i64,
    ) -> Result<Vec<AuditEntry>> {
        self.rows(
            &format!(
                "SELECT {ENTRY_COLUMNS} FROM audit_log WHERE tenant = $1 \
                 AND ($2 IS NULL OR time >= $2) AND ($3 IS NULL OR time < $3) \
                 AND ($4 IS NULL OR actor = $4) AND ($5 IS NULL OR action = $5) \
                 AND ($6 IS NULL OR item_type = $6) AND ($7 IS NULL OR item_id = $7) \
                 AND ($8 IS NULL OR seq < $8) ORDER BY seq DESC LIMIT $9"
            ),
            &args![
                tenant,
                f.from,
                f.to,
                f.actor.clone(),
                f.action.clone(),
                f.item_type.clone(),
                f.item_id.clone(),
                f.before_seq,
                limit
            ],
            entry_from_row,
        )
        .await
    }

    /// Walks the tenant's chain from the purge anchor to the head and reports the first entry
    /// that is missing, altered or relinked. Whoever can write the database can also recompute
    /// every hash and the head, so this alone proves only accidental damage:
    /// [`Db::verify_audit_anchored`] checks the chain against signed checkpoints too.
    pub async fn verify_audit_chain(&self, tenant: &str) -> Result<AuditVerification> {
        let head = self.audit_head(tenant).await?;
        let mut report = AuditVerification {
            entries_checked: 0,
            anchor_seq: head.anchor_seq,
            last_seq: head.seq,
            first_break: None,
            checkpoint: None,
            proven_through: 0,
            unanchored: 0,
        };
        let prev = if head.anchor_seq == 0 {
            GENESIS_HASH.to_owned()
        } else {
            head.anchor_hash.clone()
        };
        let walk = self
            .walk_audit(tenant, head.anchor_seq + 1, prev, None)
            .await?;
        report.entries_checked = walk.checked;
        if walk.first_break.is_some() {
            report.first_break = walk.first_break;
            return Ok(report);
        }
        let expected = walk.next_seq;
        if expected - 1 != head.seq {
            // Entries after the last one found were removed (or the head was moved).
            report.first_break = Some(if expected - 1 < head.seq {
                ChainBreak::Missing { seq: expected }
            } else {
                ChainBreak::HeadMismatch { seq: head.seq }
            });
        } else if head.seq > head.anchor_seq && walk.prev != head.hash {
            report.first_break = Some(ChainBreak::HeadMismatch { seq: head.seq });
        } else if head.anchor_seq > 0
            && walk.last_purge != Some((head.anchor_seq, head.anchor_hash.clone()))
        {
            report.first_break = Some(ChainBreak::AnchorMismatch {
                anchor_seq: head.anchor_seq,
            });
        }
        Ok(report)
    }

    async fn audit_head(&self, tenant: &str) -> Result<Head> {
        Ok(self
            .row(
                "SELECT seq, hash, anchor_seq, anchor_hash FROM audit_head WHERE tenant = $1",
                &args![tenant],
                head_from_row,
            )
            .await?
            .unwrap_or(Head {
                seq: 0,
                hash: GENESIS_HASH.to_owned(),
                anchor_seq: 0,
                anchor_hash: String::new(),
            }))
    }

    /// Walks entries from `expected` on, each linking to `prev`, until the end of the table or
    /// (when `through` is given) that entry; stops at the first break.
    async fn walk_audit(
        &self,
        tenant: &str,
        mut expected: i64,
        mut prev: String,
        through: Option<i64>,
    ) -> Result<Walk> {
        let mut walk = Walk {
            checked: 0,
            next_seq: expected,
            prev: prev.clone(),
            last_purge: None,
            first_break: None,
        };
        const BATCH: i64 = 1000;
        loop {
            let limit = through.map_or(BATCH, |t| BATCH.min(t - expected + 1));
            if limit <= 0 {
                break;
            }
            let batch = self
                .rows(
                    &format!(
                        "SELECT {ENTRY_COLUMNS} FROM audit_log WHERE tenant = $1 AND seq >= $2 \
                         ORDER BY seq LIMIT $3"
                    ),
                    &args![tenant, expected, limit],
                    entry_from_row,
                )
                .await?;
            let done = (batch.len() as i64) < limit;
            for e in batch {
                let brk = if e.seq != expected {
                    Some(ChainBreak::Missing { seq: expected })
                } else if audit_entry_hash(&e) != e.hash {
                    Some(ChainBreak::Altered { seq: e.seq })
                } else if e.prev_hash != prev {
                    Some(ChainBreak::Relinked { seq: e.seq })
                } else {
                    None
                };
                if brk.is_some() {
                    walk.first_break = brk;
                    break;
                }
                if e.action == PURGE_ACTION {
                    let d: serde_json::Value = serde_json::from_str(&e.details).unwrap_or_default();
                    walk.last_purge = Some((
                        d["through_seq"].as_i64().unwrap_or(-1),
                        d["anchor_hash"].as_str().unwrap_or_default().to_owned(),
                    ));
                }
                walk.checked += 1;
                prev = e.hash;
                expected += 1;
            }
            if walk.first_break.is_some() || done {
                break;
            }
        }
        walk.next_seq = expected;
        walk.prev = prev;
        Ok(walk)
    }

    /// Signs the tenant's current chain head with `key` and stores the checkpoint, after
    /// checking that the chain from the last valid checkpoint (or from the start) still leads
    /// to that head: a signer never blesses a rewritten or shortened chain. `None` when the
    /// head has not moved since the last checkpoint (or the chain is empty).
    pub async fn checkpoint_audit(
        &self,
        tenant: &str,
        key: &PrivateKey,
    ) -> Result<Option<AuditCheckpoint>> {
        let v = self.verify_audit_anchored(tenant, key.public_key()).await?;
        if let Some(brk) = &v.first_break {
            return Err(DbError::Conflict(format!(
                "the audit chain of tenant {tenant} is broken ({brk:?}); it is not checkpointed"
            )));
        }
        if v.last_seq == 0 || v.checkpoint.as_ref().is_some_and(|c| c.seq == v.last_seq) {
            return Ok(None);
        }
        let head = self.audit_head(tenant).await?;
        let mut cp = AuditCheckpoint {
            tenant: tenant.to_owned(),
            seq: head.seq,
            hash: head.hash,
            time: now_micros(),
            key_id: key.id().to_hex(),
            signature: String::new(),
        };
        let sig = key
            .sign_sha256(&cp.signed_bytes())
            .map_err(|e| invalid("audit checkpoint key", e.to_string()))?;
        cp.signature = hex::encode(sig);
        self.exec(
            "INSERT INTO audit_checkpoints (tenant, seq, hash, time, key_id, signature) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant, key_id, seq) DO NOTHING",
            &args![tenant, cp.seq, &cp.hash, cp.time, &cp.key_id, &cp.signature],
        )
        .await?;
        Ok(Some(cp))
    }

    /// Tenants that have an audit chain.
    pub async fn audit_tenants(&self) -> Result<Vec<String>> {
        self.rows(
            "SELECT tenant FROM audit_head ORDER BY tenant",
            &args![],
            |r| r.text("tenant"),
        )
        .await
    }

    /// [`Db::verify_audit_chain`], then the chain against the newest checkpoint signed by
    /// `key`: the entry it names must still be there with the hash it signed. That proves
    /// every entry up to it (rewriting, recomputing, reordering or cutting them changes that
    /// hash or removes it); entries after it are reported as not anchored yet. A checkpoint
    /// row naming `key` whose signature does not verify is itself a break.
    pub async fn verify_audit_anchored(
        &self,
        tenant: &str,
        key: &PublicKey,
    ) -> Result<AuditVerification> {
        let mut v = self.verify_audit_chain(tenant).await?;
        let key_id = key.id().to_hex();
        let checkpoints = self
            .rows(
                "SELECT tenant, seq, hash, time, key_id, signature FROM audit_checkpoints \
                 WHERE tenant = $1 AND key_id = $2 ORDER BY seq DESC",
                &args![tenant, &key_id],
                checkpoint_from_row,
            )
            .await?;
        for cp in &checkpoints {
            let signed = hex::decode(&cp.signature)
                .is_ok_and(|sig| key.verify_sha256(&cp.signed_bytes(), &sig));
            if !signed {
                v.first_break = Some(ChainBreak::ForgedCheckpoint { seq: cp.seq });
                return Ok(v);
            }
        }
        // The newest checkpoint the purges left something to compare with.
        let Some(cp) = checkpoints
            .into_iter()
            .find(|c| c.seq >= v.anchor_seq.max(1))
        else {
            v.unanchored = v.last_seq - v.anchor_seq;
            return Ok(v);
        };
        let found = if cp.seq == v.anchor_seq {
            // Purged through exactly this entry: the head kept its hash as the anchor.
            self.audit_head(tenant).await.map(|h| Some(h.anchor_hash))?
        } else {
            self.row(
                "SELECT hash FROM audit_log WHERE tenant = $1 AND seq = $2",
                &args![tenant, cp.seq],
                |r| r.text("hash"),
            )
            .await?
        };
        let brk = match found {
            None => Some(ChainBreak::Truncated {
                checkpoint_seq: cp.seq,
            }),
            Some(h) if h != cp.hash => Some(ChainBreak::CheckpointMismatch { seq: cp.seq }),
            Some(_) => None,
        };
        // A chain break the walk found before the checkpoint stays the first one.
        if v.first_break.as_ref().is_none_or(|f| f.seq() > cp.seq) {
            match brk {
                Some(b) => v.first_break = Some(b),
                None => {
                    v.proven_through = cp.seq;
                    v.unanchored = (v.last_seq - cp.seq).max(0);
                }
            }
        }
        v.checkpoint = Some(cp);
        Ok(v)
    }

    /// Removes the oldest entries, all older than `older_than` (µs since epoch), and appends an
    /// `audit.purge` entry by `actor` recording the anchor. Only a prefix of the chain is ever
    /// removed (entries up to the first one at or after the cutoff), so it stays verifiable.
    pub async fn purge_audit(
        &self,
        tenant: &str,
        older_than: i64,
        actor: &str,
    ) -> Result<PurgeReport> {
        let mut tx = self.begin().await?;
        let head = lock_head(&mut tx, tenant).await?;
        let first_kept = tx
            .row(
                "SELECT MIN(seq) AS s FROM audit_log WHERE tenant = $1 AND time >= $2",
                &args![tenant, older_than],
                |r| r.opt_i64("s"),
            )
            .await?
            .flatten();
        let through = first_kept.map_or(head.seq, |s| s - 1);
        if through <= head.anchor_seq {
            return Ok(PurgeReport {
                purged: 0,
                through_seq: 0,
            });
        }
        let anchor_hash = tx
            .row(
                "SELECT hash FROM audit_log WHERE tenant = $1 AND seq = $2",
                &args![tenant, through],
                |r| r.text("hash"),
            )
            .await?
            .ok_or(DbError::Corrupt {
                column: "audit_log.seq",
                value: format!("entry {through} is missing; verify the chain before purging"),
            })?;
        let purged = if tx.is_postgres() {
            tx.row(
                "SELECT callvault_audit_purge($1, $2) AS n",
                &args![tenant, through],
                |r| r.i64("n"),
            )
            .await?
            .unwrap_or(0)
        } else {
            tx.exec(
                "INSERT INTO audit_purge_permit (tenant, through) VALUES ($1, $2)",
                &args![tenant, through],
            )
            .await?;
            let n = tx
                .exec(
                    "DELETE FROM audit_log WHERE tenant = $1 AND seq <= $2",
                    &args![tenant, through],
                )
                .await?;
            tx.exec(
                "DELETE FROM audit_purge_permit WHERE tenant = $1",
                &args![tenant],
            )
            .await?;
            tx.exec(
                "UPDATE audit_head SET anchor_seq = $2, anchor_hash = $3 WHERE tenant = $1",
                &args![tenant, through, &anchor_hash],
            )
            .await?;
            i64::try_from(n).unwrap_or(i64::MAX)
        };
        let entry = NewAuditEntry::new(actor, PURGE_ACTION).details(serde_json::json!({
            "through_seq": through,
            "anchor_hash": anchor_hash,
            "purged": purged,
            "older_than": older_than,
        }));
        append_locked(&mut tx, tenant, &head, &entry).await?;
        tx.commit().await?;
        Ok(PurgeReport {
            purged: u64::try_from(purged).unwrap_or(0),
            through_seq: through,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> AuditEntry {
        AuditEntry {
            tenant: "t".into(),
            seq: 1,
            time: 5,
            actor: "ab".into(),
            action: "c".into(),
            item_type: String::new(),
            item_id: String::new(),
            details: "{}".into(),
            impersonator: None,
            prev_hash: GENESIS_HASH.into(),
            hash: String::new(),
        }
    }

    #[test]
    fn hash_covers_every_field_without_ambiguity() {
        let base = audit_entry_hash(&entry());
        let mut shifted = entry();
        shifted.actor = "a".into();
        shifted.action = "bc".into();
        assert_ne!(audit_entry_hash(&shifted), base);
        let mut imp = entry();
        imp.impersonator = Some(String::new());
        assert_ne!(audit_entry_hash(&imp), base);
        let mut seq = entry();
        seq.seq = 2;
        assert_ne!(audit_entry_hash(&seq), base);
        assert_eq!(audit_entry_hash(&entry()), base);
    }
}
