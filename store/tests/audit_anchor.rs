//! The audit chain anchored outside the database: whoever can write the database can rewrite
//! entries and recompute every hash and the head, cut the tail and move the head back, or
//! reorder entries, and the chain alone still verifies. Checkpoints signed with a key the
//! database does not hold catch each of these. Every test runs on SQLite and on PostgreSQL
//! (CALLVAULT_TEST_DATABASE_URL; `source scripts/services.sh && start_postgres`).

use callvault_store::db::{
    AuditEntry, AuditFilter, ChainBreak, Db, NewAuditEntry, audit_entry_hash,
};
use callvault_store::keys::PrivateKey;

use callvault_store::db::testing::TestDb as Fixture;

callvault_store::on_both_backends!(
    checkpoints_prove_the_chain_and_say_how_far,
    recomputed_rewrite_is_detected,
    truncated_tail_with_head_moved_back_is_detected,
    reordered_entries_are_detected,
    forged_and_foreign_checkpoints,
);

/// One signing key for the whole binary: RSA generation is the slow part.
fn key() -> PrivateKey {
    static KEY: std::sync::OnceLock<PrivateKey> = std::sync::OnceLock::new();
    KEY.get_or_init(|| PrivateKey::generate(2048).expect("key"))
        .clone()
}

/// Executes raw SQL as someone with direct database access would.
async fn raw(db: &Db, sql: &str) {
    let r = match db {
        Db::Postgres(p) => sqlx::query(sql).execute(p).await.map(|_| ()),
        Db::Sqlite(p) => sqlx::query(sql).execute(p).await.map(|_| ()),
    };
    r.unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Drops the append-only guard as an attacker with database access would.
async fn drop_guard(db: &Db) {
    match db {
        Db::Postgres(_) => raw(db, "DROP TRIGGER audit_log_append_only ON audit_log").await,
        Db::Sqlite(_) => {
            raw(db, "DROP TRIGGER audit_log_no_update").await;
            raw(db, "DROP TRIGGER audit_log_no_delete").await;
        }
    }
}

async fn append_n(db: &Db, tenant: &str, n: usize) {
    for i in 0..n {
        db.append_audit(
            tenant,
            &NewAuditEntry::new(if i % 2 == 0 { "alice" } else { "bob" }, "recording.play")
                .item("recording", format!("rec-{i}"))
                .details(serde_json::json!({ "i": i })),
        )
        .await
        .expect("append");
    }
}

async fn entries(db: &Db, tenant: &str) -> Vec<AuditEntry> {
    let mut all = db
        .query_audit(tenant, &AuditFilter::default(), 10_000)
        .await
        .expect("query");
    all.reverse();
    all
}

fn q(s: &str) -> String {
    s.replace('\'', "''")
}

/// Writes `chain` over the tenant's entries with every link and hash recomputed, and moves
/// the head to its last entry: what an attacker with write access does to hide an edit.
async fn write_recomputed(db: &Db, tenant: &str, mut chain: Vec<AuditEntry>) {
    let mut prev = callvault_store::db::GENESIS_HASH.to_owned();
    for e in &mut chain {
        e.prev_hash = prev.clone();
        e.hash = audit_entry_hash(e);
        prev = e.hash.clone();
        raw(
            db,
            &format!(
                "UPDATE audit_log SET time = {}, actor = '{}', action = '{}', item_id = '{}', \
                 details = '{}', prev_hash = '{}', hash = '{}' WHERE tenant = '{tenant}' AND seq = {}",
                e.time,
                q(&e.actor),
                q(&e.action),
                q(&e.item_id),
                q(&e.details),
                e.prev_hash,
                e.hash,
                e.seq
            ),
        )
        .await;
    }
    let last = chain.last().expect("entries");
    raw(
        db,
        &format!(
            "UPDATE audit_head SET seq = {}, hash = '{}' WHERE tenant = '{tenant}'",
            last.seq, last.hash
        ),
    )
    .await;
}

/// Ten entries, a checkpoint at the eighth, two more after it.
async fn checkpointed_chain(db: &Db, tenant: &str) {
    append_n(db, tenant, 8).await;
    let cp = db
        .checkpoint_audit(tenant, &key())
        .await
        .expect("checkpoint")
        .expect("a new head to sign");
    assert_eq!(cp.seq, 8);
    append_n(db, tenant, 2).await;
}

async fn checkpoints_prove_the_chain_and_say_how_far(f: Fixture) {
    let db = &f.db;
    let public = key().public_key().clone();
    append_n(db, "t", 5).await;
    // No checkpoint yet: consistent, nothing proven.
    let v = db
        .verify_audit_anchored("t", &public)
        .await
        .expect("verify");
    assert!(v.is_intact(), "{v:?}");
    assert_eq!((v.proven_through, v.unanchored, v.checkpoint), (0, 5, None));

    let cp = db.checkpoint_audit("t", &key()).await.expect("checkpoint");
    assert_eq!(cp.map(|c| c.seq), Some(5));
    append_n(db, "t", 2).await;
    let v = db
        .verify_audit_anchored("t", &public)
        .await
        .expect("verify");
    assert!(v.is_intact(), "{v:?}");
    assert_eq!((v.proven_through, v.unanchored, v.last_seq), (5, 2, 7));
    assert_eq!(v.checkpoint.as_ref().map(|c| c.seq), Some(5));
    // Signing again covers the rest; with nothing new there is nothing to sign.
    let cp = db.checkpoint_audit("t", &key()).await.expect("checkpoint");
    assert_eq!(cp.map(|c| c.seq), Some(7));
    assert_eq!(db.checkpoint_audit("t", &key()).await.expect("again"), None);
    let v = db
        .verify_audit_anchored("t", &public)
        .await
        .expect("verify");
    assert_eq!((v.proven_through, v.unanchored), (7, 0));
    assert_eq!(db.audit_tenants().await.expect("tenants"), ["t"]);
}

async fn recomputed_rewrite_is_detected(f: Fixture) {
    let db = &f.db;
    checkpointed_chain(db, "t").await;
    drop_guard(db).await;
    let mut chain = entries(db, "t").await;
    chain[3].actor = "mallory".into();
    chain[3].details = r#"{"i":"rewritten"}"#.into();
    write_recomputed(db, "t", chain).await;
    // The chain alone cannot tell: every link and the head were recomputed.
    assert!(
        db.verify_audit_chain("t")
            .await
            .expect("verify")
            .is_intact()
    );
    let v = db
        .verify_audit_anchored("t", key().public_key())
        .await
        .expect("verify");
    assert_eq!(
        v.first_break,
        Some(ChainBreak::CheckpointMismatch { seq: 8 })
    );
    assert_eq!(v.proven_through, 0);
    // And the signer refuses to bless the rewritten chain.
    let refused = db.checkpoint_audit("t", &key()).await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("not checkpointed")),
        "{refused:?}"
    );
}

async fn truncated_tail_with_head_moved_back_is_detected(f: Fixture) {
    let db = &f.db;
    checkpointed_chain(db, "t").await;
    drop_guard(db).await;
    let chain = entries(db, "t").await;
    raw(db, "DELETE FROM audit_log WHERE tenant = 't' AND seq > 5").await;
    raw(
        db,
        &format!(
            "UPDATE audit_head SET seq = 5, hash = '{}' WHERE tenant = 't'",
            chain[4].hash
        ),
    )
    .await;
    assert!(
        db.verify_audit_chain("t")
            .await
            .expect("verify")
            .is_intact()
    );
    let v = db
        .verify_audit_anchored("t", key().public_key())
        .await
        .expect("verify");
    assert_eq!(
        v.first_break,
        Some(ChainBreak::Truncated { checkpoint_seq: 8 })
    );
}

async fn reordered_entries_are_detected(f: Fixture) {
    let db = &f.db;
    checkpointed_chain(db, "t").await;
    drop_guard(db).await;
    let mut chain = entries(db, "t").await;
    // Swap what entries 3 and 4 say (and when), keeping their positions.
    let (a, b) = (chain[2].clone(), chain[3].clone());
    for (i, from) in [(2, &b), (3, &a)] {
        chain[i].actor = from.actor.clone();
        chain[i].item_id = from.item_id.clone();
        chain[i].details = from.details.clone();
    }
    write_recomputed(db, "t", chain).await;
    assert!(
        db.verify_audit_chain("t")
            .await
            .expect("verify")
            .is_intact()
    );
    let v = db
        .verify_audit_anchored("t", key().public_key())
        .await
        .expect("verify");
    assert_eq!(
        v.first_break,
        Some(ChainBreak::CheckpointMismatch { seq: 8 })
    );
}

async fn forged_and_foreign_checkpoints(f: Fixture) {
    let db = &f.db;
    checkpointed_chain(db, "t").await;
    let public = key().public_key().clone();
    // A checkpoint signed by another key proves nothing and is not counted.
    let other = PrivateKey::generate(2048).expect("other key");
    db.checkpoint_audit("t", &other).await.expect("other");
    let v = db
        .verify_audit_anchored("t", &public)
        .await
        .expect("verify");
    assert!(v.is_intact(), "{v:?}");
    assert_eq!(v.proven_through, 8);
    // A row claiming the checkpoint key without its signature is a break.
    let head = entries(db, "t").await.pop().expect("last");
    raw(
        db,
        &format!(
            "INSERT INTO audit_checkpoints (tenant, seq, hash, time, key_id, signature) \
             VALUES ('t', 10, '{}', 1, '{}', '{}')",
            head.hash,
            public.id().to_hex(),
            "ab".repeat(256)
        ),
    )
    .await;
    let v = db
        .verify_audit_anchored("t", &public)
        .await
        .expect("verify");
    assert_eq!(
        v.first_break,
        Some(ChainBreak::ForgedCheckpoint { seq: 10 })
    );
}
