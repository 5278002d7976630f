//! The database layer, one suite run against both backends: every test below runs once on a
//! fresh SQLite file and once on a fresh PostgreSQL database (CALLVAULT_TEST_DATABASE_URL, a
//! superuser URL; `source scripts/services.sh && start_postgres` provides one).

use std::collections::{BTreeSet, HashMap};

use callvault_store::db::{
    AccessScope, ArchiveCopy, AuditFilter, CallType, ChainBreak, Db, DbError, DeleteMode,
    Direction, DurationFilter, DurationOp, FinishRecording, NewAuditEntry, NewRecording, NewUser,
    Party, PartyPattern, Recording, RecordingStatus, ReleaseCause, SearchQuery, SortDirection,
    SortKey, TagMatch, Transcript, audit_entry_hash, now_micros,
};
use uuid::Uuid;

use callvault_store::db::testing::TestDb as Fixture;

callvault_store::on_both_backends!(
    migrations_are_idempotent,
    recording_lifecycle,
    party_wildcards,
    field_filters,
    notes_tags_participants_text,
    scopes_never_leak,
    keyset_pagination_is_stable_under_inserts,
    audit_chain_verifies_and_filters,
    audit_tamper_is_detected_at_the_right_entry,
    audit_guard_rejects_update_and_delete,
    audit_purge_keeps_chain_verifiable,
    tenant_isolation,
    directory_sessions_alarms,
    assurance_calls_are_marked_hidden_and_expire_early,
);

const T: &str = "bank";
const HOUR: i64 = 3_600_000_000;
const SEC: i64 = 1_000_000;
const T0: i64 = 1_750_000_000 * SEC;

/// Executes raw SQL as someone with direct database access would.
async fn raw(db: &Db, sql: &str) -> Result<u64, sqlx::Error> {
    match db {
        Db::Postgres(p) => sqlx::query(sql).execute(p).await.map(|r| r.rows_affected()),
        Db::Sqlite(p) => sqlx::query(sql).execute(p).await.map(|r| r.rows_affected()),
    }
}

fn finish(status: RecordingStatus, end: i64, answer: Option<i64>) -> FinishRecording {
    FinishRecording {
        status,
        end_time: end,
        answer_time: answer,
        release_cause: Some(ReleaseCause::Normal),
        answering: None,
        object_key: "bank/2025/06/rec.cvr".into(),
        size_bytes: 4096,
        codec: "opus".into(),
        channels: 2,
        sha256: "ab".repeat(32),
        metadata_digest: "cd".repeat(32),
        signature: "sig".into(),
        key_id: "ef".repeat(32),
        stop_reason: None,
    }
}

/// A finished call: answered at start, lasting `duration_ms`.
async fn call(db: &Db, tenant: &str, rec: NewRecording, duration_ms: i64) -> Recording {
    let start = rec.start_time;
    let id = rec.id;
    db.create_recording(tenant, &rec).await.expect("create");
    db.finish_recording(
        tenant,
        id,
        &finish(
            RecordingStatus::Available,
            start + duration_ms * 1000,
            Some(start),
        ),
    )
    .await
    .expect("finish")
}

async fn migrations_are_idempotent(f: Fixture) {
    let db = &f.db;
    let rec = NewRecording::new("call-1", T0, Direction::Inbound);
    db.create_recording(T, &rec).await.expect("create");
    db.migrate().await.expect("second run");
    db.migrate().await.expect("third run");
    assert!(db.recording(T, rec.id).await.expect("get").is_some());
}

async fn recording_lifecycle(f: Fixture) {
    let db = &f.db;
    let alice = db
        .create_user(T, &NewUser::local("alice", "Alice"))
        .await
        .expect("user");
    let mut rec = NewRecording::new("call-1", T0, Direction::Inbound);
    rec.owner_user_id = Some(alice.id);
    rec.calling = Party::new("+17325550100", "Bill Smith");
    rec.expires_at = Some(T0 + 10 * HOUR);
    rec.raw_metadata = Some(r#"{"vendor":"x"}"#.into());
    let created = db.create_recording(T, &rec).await.expect("create");
    assert_eq!(created.status, RecordingStatus::Recording);
    assert_eq!(created.calling.name, "Bill Smith");
    assert_eq!(created.raw_metadata.as_deref(), Some(r#"{"vendor":"x"}"#));
    let dup = db.create_recording(T, &rec).await;
    assert!(matches!(dup, Err(DbError::Conflict(_))), "{dup:?}");

    let active = db.active_recordings(T).await.expect("active");
    assert_eq!(
        active.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![rec.id]
    );

    // Answered 2 s after start, ended 62.5 s after start: 60.5 s of conversation.
    let mut fin = finish(
        RecordingStatus::Available,
        T0 + 62_500_000,
        Some(T0 + 2 * SEC),
    );
    fin.answering = Some(Party::new("2001", "Alice Agent"));
    let done = db.finish_recording(T, rec.id, &fin).await.expect("finish");
    assert_eq!(done.status, RecordingStatus::Available);
    assert_eq!(done.duration_ms, 60_500);
    assert_eq!(done.wait_ms, Some(2_000));
    assert_eq!(done.answering.name, "Alice Agent");
    assert_eq!(done.sha256.as_deref(), Some("ab".repeat(32).as_str()));
    assert!(db.active_recordings(T).await.expect("active").is_empty());
    let again = db.finish_recording(T, rec.id, &fin).await;
    assert!(matches!(again, Err(DbError::Conflict(_))), "{again:?}");
    let bad = db
        .finish_recording(
            T,
            rec.id,
            &FinishRecording {
                sha256: "short".into(),
                ..fin.clone()
            },
        )
        .await;
    assert!(matches!(bad, Err(DbError::Invalid { .. })), "{bad:?}");

    // Archive copies.
    assert_eq!(
        db.recordings_to_archive(T, "cold", 10)
            .await
            .expect("to archive")
            .len(),
        1
    );
    let copy = ArchiveCopy {
        connector: "cold".into(),
        target: "glacier".into(),
        object_key: "k".into(),
        sha256: "ab".repeat(32),
        archived_at: T0 + HOUR,
    };
    db.mark_archived(T, rec.id, &copy).await.expect("archive");
    assert_eq!(
        db.archive_copies(T, rec.id).await.expect("copies"),
        vec![copy]
    );
    assert!(
        db.recordings_to_archive(T, "cold", 10)
            .await
            .expect("to archive")
            .is_empty()
    );

    // Legal hold on the owner blocks deletion and expiry; lifting it lets both proceed.
    db.set_user_legal_hold(T, alice.id, true)
        .await
        .expect("hold");
    let held = db.recording(T, rec.id).await.expect("get").expect("row");
    assert!(held.legal_hold_effective && !held.legal_hold);
    let refused = db
        .request_deletion(T, &[rec.id], DeleteMode::All, "alice", "boss", "cleanup")
        .await;
    assert!(matches!(refused, Err(DbError::Conflict(_))), "{refused:?}");
    assert!(
        db.expired_recordings(T, T0 + 11 * HOUR, None, 10)
            .await
            .expect("expired")
            .is_empty()
    );
    db.set_user_legal_hold(T, alice.id, false)
        .await
        .expect("unhold");
    let expired = db
        .expired_recordings(T, T0 + 11 * HOUR, None, 10)
        .await
        .expect("expired");
    assert_eq!(expired.len(), 1);
    assert!(
        db.expired_recordings(T, T0 + 9 * HOUR, None, 10)
            .await
            .expect("expired")
            .is_empty()
    );

    db.request_deletion(
        T,
        &[rec.id],
        DeleteMode::MediaOnly,
        "alice",
        "boss",
        "cleanup",
    )
    .await
    .expect("request");
    let pending = db.pending_deletions(T, 10).await.expect("pending");
    assert_eq!(pending[0].delete_authorised_by.as_deref(), Some("boss"));
    assert_eq!(pending[0].delete_mode, Some(DeleteMode::MediaOnly));
    db.mark_deleted(T, rec.id, DeleteMode::MediaOnly)
        .await
        .expect("delete");
    let gone = db
        .recording(T, rec.id)
        .await
        .expect("get")
        .expect("metadata kept");
    assert_eq!(gone.status, RecordingStatus::Deleted);
    assert_eq!(gone.object_key, None);
    assert!(
        db.pending_deletions(T, 10)
            .await
            .expect("pending")
            .is_empty()
    );
    db.mark_deleted(T, rec.id, DeleteMode::All)
        .await
        .expect("delete all");
    assert!(db.recording(T, rec.id).await.expect("get").is_none());
}

#[tokio::test]
async fn expired_recordings_come_in_batches() {
    let f = Fixture::sqlite().await;
    let db = &f.db;
    let mut want = BTreeSet::new();
    for i in 0..7 {
        let mut r = NewRecording::new(format!("c{i}"), T0, Direction::Inbound);
        // Two share each expiry, so batches must break ties by id.
        r.expires_at = Some(T0 + (i / 2) * SEC);
        want.insert(call(db, T, r, 1000).await.id);
    }
    let mut got = Vec::new();
    let mut after = None;
    loop {
        let batch = db
            .expired_recordings(T, T0 + HOUR, after, 3)
            .await
            .expect("batch");
        let Some(last) = batch.last() else { break };
        after = Some((last.expires_at.expect("expiry"), last.id));
        got.extend(batch.iter().map(|r| r.id));
    }
    assert_eq!(got.len(), 7);
    assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), want);
}

/// The shared search data set: five calls with distinguishing fields.
struct Calls {
    alice: Uuid,
    bob: Uuid,
    g1: Uuid,
    g2: Uuid,
    sales: Uuid,
    support: Uuid,
    ids: HashMap<&'static str, Uuid>,
}

async fn seed(db: &Db, tenant: &str) -> Calls {
    let alice = db
        .create_user(tenant, &NewUser::local("alice", "Alice Agent"))
        .await
        .expect("alice")
        .id;
    let bob = db
        .create_user(tenant, &NewUser::local("bob", "Bob"))
        .await
        .expect("bob")
        .id;
    let g1 = db.create_group(tenant, "sales", "").await.expect("g1").id;
    let g2 = db.create_group(tenant, "support", "").await.expect("g2").id;
    let sales = db.create_tag(tenant, "Sales", "").await.expect("tag").id;
    let support = db.create_tag(tenant, "Support", "").await.expect("tag").id;
    let mut ids = HashMap::new();

    let mut r1 = NewRecording::new("r1", T0 + HOUR, Direction::Inbound);
    r1.calling = Party::new("7325550100", "Bill Smith");
    r1.called = Party::new("2001", "Alice Agent");
    r1.owner_user_id = Some(alice);
    r1.groups = vec![g1];
    r1.call_type = CallType::PstnP2p;
    r1.participants = vec![
        Party::new("7325550100", "Bill Smith"),
        Party::new("2001", "Alice Agent"),
    ];
    r1.agents = vec!["agent-7".into()];
    ids.insert("r1", call(db, tenant, r1, 30_500).await.id);

    let mut r2 = NewRecording::new("r2", T0 + 2 * HOUR, Direction::Outbound);
    r2.calling = Party::new("2001", "Alice Agent");
    r2.called = Party::new("9087321234", "Billy Jones");
    r2.owner_user_id = Some(alice);
    r2.call_type = CallType::ExternalP2p;
    ids.insert("r2", call(db, tenant, r2, 10_000).await.id);

    let mut r3 = NewRecording::new("r3", T0 + 3 * HOUR, Direction::Inbound);
    r3.calling = Party::new("5551234", "Carol Billson");
    r3.called = Party::new("2002", "Bob");
    r3.owner_user_id = Some(bob);
    r3.groups = vec![g2];
    r3.call_type = CallType::Queue;
    r3.skills = vec!["mortgages".into()];
    let r3id = r3.id;
    db.create_recording(tenant, &r3).await.expect("r3 active");
    ids.insert("r3", r3id);

    let mut r4 = NewRecording::new("r4", T0 + 4 * HOUR, Direction::Internal);
    r4.calling = Party::new("100%_1", "Dave");
    r4.called = Party::new("2003", "");
    ids.insert("r4", call(db, tenant, r4, 0).await.id);

    let mut r5 = NewRecording::new("r5", T0 + 5 * HOUR, Direction::Internal);
    r5.calling = Party::new("1000x1", "Eve O'Neil");
    r5.called = Party::new("2004", "");
    ids.insert("r5", call(db, tenant, r5, 31_000).await.id);

    db.replace_tags(tenant, &[ids["r1"]], &[sales])
        .await
        .expect("tags");
    db.replace_tags(tenant, &[ids["r2"]], &[sales, support])
        .await
        .expect("tags");
    db.replace_tags(tenant, &[ids["r3"]], &[support])
        .await
        .expect("tags");
    db.add_note(
        tenant,
        ids["r1"],
        Some(alice),
        "Alice",
        "Customer asked about billing; sales follow-up",
    )
    .await
    .expect("note");
    db.add_note(tenant, ids["r2"], Some(alice), "Alice", "Billing question.")
        .await
        .expect("note");
    db.add_note(tenant, ids["r3"], None, "Bob", "Bill paid")
        .await
        .expect("note");
    db.put_transcript(
        tenant,
        &Transcript {
            recording_id: ids["r1"],
            channel: 0,
            engine: "whisper".into(),
            language: "en".into(),
            body: "I would like a refund please".into(),
            words: "[]".into(),
            created_at: T0,
        },
    )
    .await
    .expect("transcript");
    Calls {
        alice,
        bob,
        g1,
        g2,
        sales,
        support,
        ids,
    }
}

impl Calls {
    /// Names (r1..r5) of the calls `q` finds within `scope`; also checks the count agrees.
    async fn find(&self, db: &Db, scope: &AccessScope, q: SearchQuery) -> Vec<&'static str> {
        let page = db
            .search_recordings(T, scope, &q, 100, None)
            .await
            .expect("search");
        let count = db.count_recordings(T, scope, &q).await.expect("count");
        assert_eq!(
            count as usize,
            page.items.len(),
            "count disagrees for {q:?}"
        );
        let mut names: Vec<&'static str> = page
            .items
            .iter()
            .map(|r| {
                *self
                    .ids
                    .iter()
                    .find(|(_, id)| **id == r.id)
                    .expect("known call")
                    .0
            })
            .collect();
        names.sort();
        names
    }

    async fn all(&self, db: &Db, q: SearchQuery) -> Vec<&'static str> {
        self.find(db, &AccessScope::All, q).await
    }
}

fn pat(p: &str) -> Option<PartyPattern> {
    Some(PartyPattern(p.into()))
}

async fn party_wildcards(f: Fixture) {
    let db = &f.db;
    let c = seed(db, T).await;
    let q = |calling: Option<PartyPattern>, called: Option<PartyPattern>| SearchQuery {
        calling,
        called,
        ..Default::default()
    };
    // "732" anywhere in the number; the called-party 9087321234 of r2 is not the calling party.
    assert_eq!(c.all(db, q(pat("732"), None)).await, ["r1"]);
    let either = SearchQuery {
        calling_or_called: pat("732"),
        ..Default::default()
    };
    assert_eq!(c.all(db, either).await, ["r1", "r2"]);
    // "732*" starts with 732.
    assert_eq!(c.all(db, q(pat("732*"), None)).await, ["r1"]);
    assert!(c.all(db, q(None, pat("732*"))).await.is_empty());
    assert_eq!(c.all(db, q(None, pat("908*"))).await, ["r2"]);
    // "*Bill": the word Bill in the name; not Billson, not Billy.
    assert_eq!(c.all(db, q(pat("*Bill"), None)).await, ["r1"]);
    assert!(c.all(db, q(None, pat("*bill"))).await.is_empty());
    // Plain text is "contains", names case-insensitively.
    assert_eq!(c.all(db, q(pat("bill"), None)).await, ["r1", "r3"]);
    assert_eq!(c.all(db, q(None, pat("BILL"))).await, ["r2"]);
    // Name prefix.
    assert_eq!(c.all(db, q(pat("Car*"), None)).await, ["r3"]);
    // Punctuation in names is folded: "o neil" finds "Eve O'Neil".
    assert_eq!(c.all(db, q(pat("*O'Neil"), None)).await, ["r5"]);
    // LIKE metacharacters are literal: "0%_1" is not "0, anything, any char, 1".
    assert_eq!(c.all(db, q(pat("0%_1"), None)).await, ["r4"]);
    assert!(c.all(db, q(pat("1_00"), None)).await.is_empty());
    // Answering party: r1's answering is empty, nothing matches Alice there.
    let ans = SearchQuery {
        answering: pat("alice"),
        ..Default::default()
    };
    assert!(c.all(db, ans).await.is_empty());
}

async fn field_filters(f: Fixture) {
    let db = &f.db;
    let c = seed(db, T).await;
    let dur = |op, seconds| SearchQuery {
        duration: Some(DurationFilter { op, seconds }),
        ..Default::default()
    };
    // Durations: r1 30.5 s, r2 10 s, r3 active (0), r4 0 s, r5 31 s.
    assert_eq!(c.all(db, dur(DurationOp::Eq, 30)).await, ["r1"]);
    assert_eq!(c.all(db, dur(DurationOp::Gt, 30)).await, ["r5"]);
    assert_eq!(c.all(db, dur(DurationOp::Ge, 30)).await, ["r1", "r5"]);
    assert_eq!(c.all(db, dur(DurationOp::Lt, 30)).await, ["r2", "r3", "r4"]);
    assert_eq!(c.all(db, dur(DurationOp::Le, 10)).await, ["r2", "r3", "r4"]);
    let bad = db
        .search_recordings(T, &AccessScope::All, &dur(DurationOp::Eq, -1), 10, None)
        .await;
    assert!(matches!(bad, Err(DbError::Invalid { .. })), "{bad:?}");

    let q = SearchQuery {
        directions: vec![Direction::Inbound],
        ..Default::default()
    };
    assert_eq!(c.all(db, q).await, ["r1", "r3"]);
    let q = SearchQuery {
        call_types: vec![CallType::PstnP2p, CallType::Queue],
        ..Default::default()
    };
    assert_eq!(c.all(db, q).await, ["r1", "r3"]);
    let q = SearchQuery {
        statuses: vec![RecordingStatus::Recording],
        ..Default::default()
    };
    assert_eq!(c.all(db, q).await, ["r3"]);
    let q = SearchQuery {
        release_causes: vec![ReleaseCause::Normal],
        ..Default::default()
    };
    assert_eq!(c.all(db, q).await, ["r1", "r2", "r4", "r5"]);
    let q = SearchQuery {
        release_causes: vec![ReleaseCause::Missed],
        ..Default::default()
    };
    assert!(c.all(db, q).await.is_empty());
    let q = SearchQuery {
        from: Some(T0 + HOUR + HOUR / 2),
        to: Some(T0 + 3 * HOUR + HOUR / 2),
        ..Default::default()
    };
    assert_eq!(c.all(db, q).await, ["r2", "r3"]);
    // The end of the range is exclusive, the start inclusive.
    let q = SearchQuery {
        from: Some(T0 + 2 * HOUR),
        to: Some(T0 + 3 * HOUR),
        ..Default::default()
    };
    assert_eq!(c.all(db, q).await, ["r2"]);
    let backwards = SearchQuery {
        from: Some(T0 + HOUR),
        to: Some(T0),
        ..Default::default()
    };
    assert!(matches!(
        db.count_recordings(T, &AccessScope::All, &backwards).await,
        Err(DbError::Invalid { .. })
    ));
    let q = SearchQuery {
        users: vec![c.bob],
        ..Default::default()
    };
    assert_eq!(c.all(db, q).await, ["r3"]);
    let q = SearchQuery {
        groups: vec![c.g1],
        ..Default::default()
    };
    assert_eq!(c.all(db, q).await, ["r1"]);
    let q = SearchQuery {
        users: vec![c.bob],
        groups: vec![c.g1],
        ..Default::default()
    };
    assert_eq!(c.all(db, q).await, ["r1", "r3"]);
    let q = SearchQuery {
        unassigned: true,
        ..Default::default()
    };
    assert_eq!(c.all(db, q).await, ["r4", "r5"]);
}

async fn notes_tags_participants_text(f: Fixture) {
    let db = &f.db;
    let c = seed(db, T).await;
    let notes = |n: &str| SearchQuery {
        notes: Some(n.into()),
        ..Default::default()
    };
    // Whole words only: "bill" is not "billing".
    assert_eq!(c.all(db, notes("bill")).await, ["r3"]);
    assert_eq!(c.all(db, notes("BILLING")).await, ["r1", "r2"]);
    assert_eq!(c.all(db, notes("sales follow")).await, ["r1"]);
    assert!(c.all(db, notes("bil")).await.is_empty());
    assert!(c.all(db, notes("follow sales")).await.is_empty());

    let tags = |tags: Vec<Uuid>, tag_match| SearchQuery {
        tags,
        tag_match,
        ..Default::default()
    };
    assert_eq!(
        c.all(db, tags(vec![c.sales, c.support], TagMatch::Any))
            .await,
        ["r1", "r2", "r3"]
    );
    assert_eq!(
        c.all(db, tags(vec![c.sales, c.support], TagMatch::All))
            .await,
        ["r2"]
    );
    assert_eq!(
        c.all(db, tags(vec![c.support], TagMatch::All)).await,
        ["r2", "r3"]
    );
    // With a date range the tag's calls are narrowed to it (taggings carry the call's start).
    let in_range = |tag, from, to| SearchQuery {
        tags: vec![tag],
        from: Some(from),
        to: Some(to),
        ..Default::default()
    };
    assert_eq!(
        c.all(db, in_range(c.support, T0 + 2 * HOUR, T0 + 3 * HOUR))
            .await,
        ["r2"]
    );
    assert_eq!(
        c.all(db, in_range(c.sales, T0 + 2 * HOUR + 1, T0 + 4 * HOUR))
            .await,
        Vec::<&str>::new()
    );
    assert_eq!(
        c.all(db, in_range(c.support, T0, T0 + 4 * HOUR)).await,
        ["r2", "r3"]
    );
    // Setting tags on several calls overwrites what each had.
    db.replace_tags(T, &[c.ids["r1"], c.ids["r2"]], &[c.support])
        .await
        .expect("retag");
    assert_eq!(
        c.all(db, tags(vec![c.sales], TagMatch::Any)).await,
        Vec::<&str>::new()
    );
    let names: Vec<String> = db
        .recording_tags(T, c.ids["r2"])
        .await
        .expect("tags")
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["Support"]);
    // An unknown recording makes the whole retag fail, changing nothing.
    let bad = db
        .replace_tags(T, &[c.ids["r1"], Uuid::new_v4()], &[c.sales])
        .await;
    assert!(matches!(bad, Err(DbError::NotFound { .. })), "{bad:?}");
    assert_eq!(
        db.recording_tags(T, c.ids["r1"]).await.expect("tags")[0].name,
        "Support"
    );

    let part = SearchQuery {
        participant: Some("ALICE".into()),
        ..Default::default()
    };
    assert_eq!(c.all(db, part).await, ["r1"]);
    // Free text: comma-separated values, any of them, across numbers, names, agents, skills.
    let text = |t: &str| SearchQuery {
        text: Some(t.into()),
        ..Default::default()
    };
    assert_eq!(c.all(db, text("5551234, jones")).await, ["r2", "r3"]);
    assert_eq!(c.all(db, text("agent-7")).await, ["r1"]);
    assert_eq!(c.all(db, text("Mortgages")).await, ["r3"]);
    assert_eq!(c.all(db, text("r4")).await, ["r4"]);
    let tr = SearchQuery {
        transcript: Some("Refund".into()),
        ..Default::default()
    };
    assert_eq!(c.all(db, tr).await, ["r1"]);
    // Filters combine with AND.
    let combo = SearchQuery {
        directions: vec![Direction::Inbound],
        tags: vec![c.support],
        ..Default::default()
    };
    assert_eq!(c.all(db, combo).await, ["r1", "r3"]);

    // Notes: listed in order, deleted one at a time.
    let listed = db.notes(T, c.ids["r1"]).await.expect("notes");
    assert_eq!(listed.len(), 1);
    db.delete_note(T, listed[0].id).await.expect("delete note");
    assert!(c.all(db, notes("billing")).await == ["r2"]);
    assert!(matches!(
        db.add_note(T, Uuid::new_v4(), None, "x", "hello").await,
        Err(DbError::NotFound { .. })
    ));
}

async fn scopes_never_leak(f: Fixture) {
    let db = &f.db;
    let c = seed(db, T).await;
    let all = SearchQuery::default;
    let own_alice = AccessScope::Own { user_id: c.alice };
    assert_eq!(c.find(db, &own_alice, all()).await, ["r1", "r2"]);
    assert_eq!(
        c.find(db, &AccessScope::Own { user_id: c.bob }, all())
            .await,
        ["r3"]
    );
    let bob_sup = AccessScope::OwnAndGroups {
        user_id: c.bob,
        groups: vec![c.g1],
    };
    assert_eq!(c.find(db, &bob_sup, all()).await, ["r1", "r3"]);
    let sup_only = AccessScope::OwnAndGroups {
        user_id: Uuid::new_v4(),
        groups: vec![c.g2],
    };
    assert_eq!(c.find(db, &sup_only, all()).await, ["r3"]);
    assert!(c.find(db, &AccessScope::None, all()).await.is_empty());
    assert_eq!(
        c.find(db, &AccessScope::All, all()).await,
        ["r1", "r2", "r3", "r4", "r5"]
    );
    // Filters can narrow a scope, never widen it.
    let q = SearchQuery {
        users: vec![c.bob],
        ..Default::default()
    };
    assert!(c.find(db, &own_alice, q).await.is_empty());
    let q = SearchQuery {
        groups: vec![c.g2],
        ..Default::default()
    };
    assert!(c.find(db, &bob_sup, q.clone()).await == ["r3"]);
    assert!(c.find(db, &own_alice, q).await.is_empty());
    let q = SearchQuery {
        text: Some("5551234, bill".into()),
        ..Default::default()
    };
    assert_eq!(c.find(db, &own_alice, q).await, ["r1", "r2"]);
    let q = SearchQuery {
        unassigned: true,
        ..Default::default()
    };
    assert!(c.find(db, &own_alice, q).await.is_empty());
    // A cursor cannot escape the scope either: page through alice's calls one at a time.
    let mut cursor = None;
    let mut seen = Vec::new();
    loop {
        let page = db
            .search_recordings(T, &own_alice, &all(), 1, cursor.as_deref())
            .await
            .expect("page");
        seen.extend(page.items.iter().map(|r| r.owner_user_id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, vec![Some(c.alice), Some(c.alice)]);
}

async fn keyset_pagination_is_stable_under_inserts(f: Fixture) {
    let db = &f.db;
    let mut original = BTreeSet::new();
    for i in 0..53i64 {
        let mut r = NewRecording::new(format!("p{i}"), T0 + (i / 3) * SEC, Direction::Inbound);
        // Ties in every sort key: start (3 per second), duration (7 values), number (5 values).
        r.calling = Party::new(format!("55500{}", i % 5), "");
        original.insert(call(db, T, r, (i % 7) * 1000).await.id);
    }
    for (sort, direction) in [
        (SortKey::StartTime, SortDirection::Desc),
        (SortKey::StartTime, SortDirection::Asc),
        (SortKey::Duration, SortDirection::Asc),
        (SortKey::CallingParty, SortDirection::Desc),
    ] {
        let q = SearchQuery {
            sort,
            direction,
            ..Default::default()
        };
        let mut seen: Vec<Recording> = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let page = db
                .search_recordings(T, &AccessScope::All, &q, 10, cursor.as_deref())
                .await
                .expect("page");
            pages += 1;
            seen.extend(page.items);
            // Insert rows that sort before, inside and after the pages already read.
            for k in 0..2i64 {
                let mut r = NewRecording::new(
                    format!("new-{pages}-{k}"),
                    T0 + (pages * 7 + k * 11) % 20 * SEC,
                    Direction::Outbound,
                );
                r.calling = Party::new(format!("55500{}", (pages + k) % 5), "");
                call(db, T, r, ((pages + k) % 7) * 1000).await;
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
            assert!(pages < 100, "pagination does not terminate");
        }
        let ids: Vec<Uuid> = seen.iter().map(|r| r.id).collect();
        let unique: BTreeSet<Uuid> = ids.iter().copied().collect();
        assert_eq!(
            unique.len(),
            ids.len(),
            "a row came twice ({sort:?} {direction:?})"
        );
        assert!(
            original.is_subset(&unique),
            "rows missing ({sort:?} {direction:?})"
        );
        // The pages concatenate in order.
        for w in seen.windows(2) {
            let ordered = match (sort, direction) {
                (SortKey::StartTime, SortDirection::Desc) => w[0].start_time >= w[1].start_time,
                (SortKey::StartTime, _) => w[0].start_time <= w[1].start_time,
                (SortKey::Duration, _) => w[0].duration_ms <= w[1].duration_ms,
                _ => w[0].calling.number >= w[1].calling.number,
            };
            assert!(ordered, "out of order ({sort:?} {direction:?})");
        }
    }
    // A cursor from another sort order is refused.
    let page = db
        .search_recordings(T, &AccessScope::All, &SearchQuery::default(), 5, None)
        .await
        .expect("page");
    let cursor = page.next_cursor.expect("more pages");
    let other = SearchQuery {
        sort: SortKey::Duration,
        ..Default::default()
    };
    let bad = db
        .search_recordings(T, &AccessScope::All, &other, 5, Some(&cursor))
        .await;
    assert!(matches!(bad, Err(DbError::BadCursor)), "{bad:?}");
    let bad = db
        .search_recordings(
            T,
            &AccessScope::All,
            &SearchQuery::default(),
            5,
            Some("not-hex"),
        )
        .await;
    assert!(matches!(bad, Err(DbError::BadCursor)), "{bad:?}");
}

async fn append_n(db: &Db, tenant: &str, n: usize) {
    for i in 0..n {
        let actor = if i % 2 == 0 { "alice" } else { "bob" };
        let action = if i % 3 == 0 {
            "recording.play"
        } else {
            "recording.download"
        };
        db.append_audit(
            tenant,
            &NewAuditEntry::new(actor, action)
                .item("recording", format!("rec-{i}"))
                .details(serde_json::json!({ "i": i })),
        )
        .await
        .expect("append");
    }
}

async fn audit_chain_verifies_and_filters(f: Fixture) {
    let db = &f.db;
    let empty = db.verify_audit_chain(T).await.expect("verify");
    assert!(empty.is_intact());
    assert_eq!(empty.entries_checked, 0);
    let before = now_micros();
    append_n(db, T, 10).await;
    let mut imp = NewAuditEntry::new("carol", "recording.play").item("recording", "rec-x");
    imp.impersonator = Some("admin".into());
    let e = db.append_audit(T, &imp).await.expect("append");
    assert_eq!(e.seq, 11);
    assert_eq!(e.hash, audit_entry_hash(&e));
    let v = db.verify_audit_chain(T).await.expect("verify");
    assert!(v.is_intact(), "{v:?}");
    assert_eq!((v.entries_checked, v.last_seq), (11, 11));

    let q = |f: AuditFilter| async move { db.query_audit(T, &f, 100).await.expect("query") };
    let by_actor = q(AuditFilter {
        actor: Some("bob".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(by_actor.len(), 5);
    assert!(by_actor.iter().all(|e| e.actor == "bob"));
    assert!(
        by_actor.windows(2).all(|w| w[0].seq > w[1].seq),
        "newest first"
    );
    let plays = q(AuditFilter {
        action: Some("recording.play".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(plays.len(), 5);
    let item = q(AuditFilter {
        item_type: Some("recording".into()),
        item_id: Some("rec-x".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(item.len(), 1);
    assert_eq!(item[0].impersonator.as_deref(), Some("admin"));
    let in_range = q(AuditFilter {
        from: Some(before),
        to: Some(now_micros() + 1),
        ..Default::default()
    })
    .await;
    assert_eq!(in_range.len(), 11);
    let none = q(AuditFilter {
        to: Some(before),
        ..Default::default()
    })
    .await;
    assert!(none.is_empty());
    let page2 = q(AuditFilter {
        before_seq: Some(4),
        ..Default::default()
    })
    .await;
    assert_eq!(page2.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 2, 1]);

    // Concurrent appends never fork the chain.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            db.append_audit(T, &NewAuditEntry::new(format!("user{i}"), "login"))
                .await
                .expect("concurrent append")
        }));
    }
    let mut seqs = BTreeSet::new();
    for t in tasks {
        seqs.insert(t.await.expect("join").seq);
    }
    assert_eq!(seqs, (12..=19).collect());
    assert!(db.verify_audit_chain(T).await.expect("verify").is_intact());
}

/// Drops the append-only guard as an attacker with database access would.
async fn drop_guard(db: &Db) {
    match db {
        Db::Postgres(_) => {
            raw(db, "DROP TRIGGER audit_log_append_only ON audit_log")
                .await
                .expect("drop trigger");
        }
        Db::Sqlite(_) => {
            raw(db, "DROP TRIGGER audit_log_no_update")
                .await
                .expect("drop");
            raw(db, "DROP TRIGGER audit_log_no_delete")
                .await
                .expect("drop");
        }
    }
}

async fn audit_tamper_is_detected_at_the_right_entry(f: Fixture) {
    let db = &f.db;
    append_n(db, T, 10).await;
    append_n(db, "other", 3).await;
    drop_guard(db).await;

    // Edited content.
    raw(
        db,
        "UPDATE audit_log SET details = '{\"i\":99}' WHERE tenant = 'bank' AND seq = 4",
    )
    .await
    .expect("tamper");
    let v = db.verify_audit_chain(T).await.expect("verify");
    assert_eq!(v.first_break, Some(ChainBreak::Altered { seq: 4 }));
    assert_eq!(v.entries_checked, 3);
    // Another tenant's chain is unaffected.
    assert!(
        db.verify_audit_chain("other")
            .await
            .expect("verify")
            .is_intact()
    );

    // Edited content with the entry's own hash recomputed: the next entry no longer links.
    let mut e4 = db
        .query_audit(
            T,
            &AuditFilter {
                before_seq: Some(5),
                ..Default::default()
            },
            1,
        )
        .await
        .expect("query")
        .remove(0);
    e4.hash = audit_entry_hash(&e4);
    raw(
        db,
        &format!(
            "UPDATE audit_log SET hash = '{}' WHERE tenant = 'bank' AND seq = 4",
            e4.hash
        ),
    )
    .await
    .expect("rehash");
    let v = db.verify_audit_chain(T).await.expect("verify");
    assert_eq!(v.first_break, Some(ChainBreak::Relinked { seq: 5 }));

    // A removed entry in the middle.
    raw(
        db,
        "DELETE FROM audit_log WHERE tenant = 'bank' AND seq <= 4",
    )
    .await
    .expect("delete");
    let v = db.verify_audit_chain(T).await.expect("verify");
    assert_eq!(v.first_break, Some(ChainBreak::Missing { seq: 1 }));

    // A removed tail: the head still names it.
    raw(
        db,
        "DELETE FROM audit_log WHERE tenant = 'other' AND seq = 3",
    )
    .await
    .expect("delete tail");
    let v = db.verify_audit_chain("other").await.expect("verify");
    assert_eq!(v.first_break, Some(ChainBreak::Missing { seq: 3 }));
}

#[tokio::test]
async fn audit_missing_middle_entry_is_reported_by_seq() {
    for f in [Fixture::sqlite().await, Fixture::postgres().await] {
        let db = &f.db;
        append_n(db, T, 8).await;
        drop_guard(db).await;
        raw(
            db,
            "DELETE FROM audit_log WHERE tenant = 'bank' AND seq = 6",
        )
        .await
        .expect("delete");
        let v = db.verify_audit_chain(T).await.expect("verify");
        assert_eq!(
            v.first_break,
            Some(ChainBreak::Missing { seq: 6 }),
            "{:?}",
            db.backend()
        );
        assert_eq!(v.entries_checked, 5);
    }
}

async fn audit_guard_rejects_update_and_delete(f: Fixture) {
    let db = &f.db;
    append_n(db, T, 3).await;
    let upd = raw(
        db,
        "UPDATE audit_log SET actor = 'mallory' WHERE tenant = 'bank'",
    )
    .await
    .expect_err("update was allowed");
    assert!(upd.to_string().contains("append-only"), "{upd}");
    let del = raw(
        db,
        "DELETE FROM audit_log WHERE tenant = 'bank' AND seq = 2",
    )
    .await;
    assert!(del.is_err(), "delete was allowed");
    if matches!(db, Db::Postgres(_)) {
        assert!(
            raw(db, "TRUNCATE audit_log").await.is_err(),
            "truncate was allowed"
        );
    }
    let v = db.verify_audit_chain(T).await.expect("verify");
    assert!(v.is_intact());
    assert_eq!(v.entries_checked, 3);
    let actors: BTreeSet<String> = db
        .query_audit(T, &AuditFilter::default(), 10)
        .await
        .expect("query")
        .into_iter()
        .map(|e| e.actor)
        .collect();
    assert!(!actors.contains("mallory"));
}

async fn audit_purge_keeps_chain_verifiable(f: Fixture) {
    let db = &f.db;
    append_n(db, T, 3).await;
    let cutoff = now_micros() + 1;
    // Entries written after the cutoff are kept even if a later purge runs.
    while now_micros() <= cutoff {
        tokio::task::yield_now().await;
    }
    append_n(db, T, 2).await;
    append_n(db, "other", 2).await;
    let report = db.purge_audit(T, cutoff, "retention").await.expect("purge");
    assert_eq!((report.purged, report.through_seq), (3, 3));
    let v = db.verify_audit_chain(T).await.expect("verify");
    assert!(v.is_intact(), "{v:?}");
    assert_eq!((v.anchor_seq, v.entries_checked, v.last_seq), (3, 3, 6));
    let latest = db
        .query_audit(T, &AuditFilter::default(), 1)
        .await
        .expect("q");
    assert_eq!(latest[0].action, "audit.purge");
    assert_eq!(latest[0].actor, "retention");
    // Nothing more to purge before the cutoff: no new entry.
    let again = db.purge_audit(T, cutoff, "retention").await.expect("purge");
    assert_eq!(again.purged, 0);
    append_n(db, T, 1).await;
    assert!(db.verify_audit_chain(T).await.expect("verify").is_intact());
    // The other tenant's chain was not touched.
    let other = db.verify_audit_chain("other").await.expect("verify");
    assert_eq!((other.entries_checked, other.anchor_seq), (2, 0));
    // Moving the anchor (to hide more deletions) is detected.
    raw(
        db,
        "UPDATE audit_head SET anchor_seq = 4 WHERE tenant = 'bank'",
    )
    .await
    .expect("tamper head");
    assert!(!db.verify_audit_chain(T).await.expect("verify").is_intact());
}

async fn tenant_isolation(f: Fixture) {
    let db = &f.db;
    let a = seed(db, T).await;
    let b_alice = db
        .create_user("clinic", &NewUser::local("alice", "Other Alice"))
        .await
        .expect("same username in another tenant")
        .id;
    let mut rb = NewRecording::new("rb", T0 + HOUR, Direction::Inbound);
    rb.calling = Party::new("7325550100", "Bill Smith");
    rb.owner_user_id = Some(b_alice);
    let rb = call(db, "clinic", rb, 30_500).await;
    db.add_note("clinic", rb.id, None, "x", "billing")
        .await
        .expect("note");

    let everything = SearchQuery::default();
    let in_a = a.all(db, everything.clone()).await;
    assert_eq!(in_a, ["r1", "r2", "r3", "r4", "r5"]);
    let in_b = db
        .search_recordings("clinic", &AccessScope::All, &everything, 100, None)
        .await
        .expect("search");
    assert_eq!(in_b.items.iter().map(|r| r.id).collect::<Vec<_>>(), [rb.id]);
    // Even a scope naming another tenant's user finds nothing there.
    let cross = db
        .search_recordings(
            "clinic",
            &AccessScope::Own { user_id: a.alice },
            &everything,
            100,
            None,
        )
        .await
        .expect("search");
    assert!(cross.items.is_empty());
    assert!(
        db.recording("clinic", a.ids["r1"])
            .await
            .expect("get")
            .is_none()
    );
    assert!(
        db.notes("clinic", a.ids["r1"])
            .await
            .expect("notes")
            .is_empty()
    );
    let q = SearchQuery {
        notes: Some("billing".into()),
        ..Default::default()
    };
    assert_eq!(a.all(db, q).await, ["r1", "r2"]);
    // Writes naming another tenant's rows fail.
    let tag_b = db
        .create_tag("clinic", "Sales", "")
        .await
        .expect("same tag name");
    assert!(matches!(
        db.replace_tags("clinic", &[a.ids["r1"]], &[tag_b.id]).await,
        Err(DbError::NotFound { .. })
    ));
    assert!(
        db.replace_tags(T, &[a.ids["r1"]], &[tag_b.id])
            .await
            .is_err()
    );
    assert!(matches!(
        db.add_note("clinic", a.ids["r1"], None, "x", "hi").await,
        Err(DbError::NotFound { .. })
    ));
    assert!(
        db.mark_deleted("clinic", a.ids["r1"], DeleteMode::All)
            .await
            .is_err()
    );
    assert!(db.recording(T, a.ids["r1"]).await.expect("get").is_some());
    // Same number, different tenants, different owners.
    db.add_extension(T, "2001", a.alice).await.expect("ext a");
    db.add_extension("clinic", "2001", b_alice)
        .await
        .expect("ext b");
    assert_eq!(
        db.extension_owner("clinic", "2001").await.expect("owner"),
        Some(b_alice)
    );
    // Audit chains are per tenant.
    append_n(db, T, 2).await;
    let first_b = db
        .append_audit("clinic", &NewAuditEntry::new("x", "login"))
        .await
        .expect("append");
    assert_eq!(first_b.seq, 1);
    assert!(
        db.query_audit("clinic", &AuditFilter::default(), 10)
            .await
            .expect("q")
            .len()
            == 1
    );
}

async fn directory_sessions_alarms(f: Fixture) {
    let db = &f.db;
    let mut nu = NewUser::local("alice", "Alice");
    nu.password_hash = Some("$argon2id$x".into());
    nu.must_change_password = true;
    let alice = db.create_user(T, &nu).await.expect("user");
    assert!(alice.must_change_password);
    assert!(matches!(
        db.create_user(T, &NewUser::local("alice", "again")).await,
        Err(DbError::Conflict(_))
    ));
    let bob = db
        .create_user(T, &NewUser::local("bob", "Bob"))
        .await
        .expect("bob");
    let g = db.create_group(T, "desk", "").await.expect("group");
    db.add_member(T, g.id, alice.id).await.expect("member");
    db.add_member(T, g.id, alice.id)
        .await
        .expect("member twice is a no-op");
    assert!(matches!(
        db.add_member(T, g.id, Uuid::new_v4()).await,
        Err(DbError::NotFound { .. })
    ));
    assert_eq!(
        db.user_groups(T, alice.id).await.expect("groups")[0].name,
        "desk"
    );
    assert_eq!(
        db.group_members(T, g.id).await.expect("members")[0].username,
        "alice"
    );
    db.remove_member(T, g.id, alice.id).await.expect("remove");
    assert!(db.group_members(T, g.id).await.expect("members").is_empty());

    // Extensions: unique per tenant, the conflict names the holder.
    db.add_extension(T, "2001", alice.id).await.expect("ext");
    let err = db
        .add_extension(T, "2001", bob.id)
        .await
        .expect_err("taken");
    assert!(err.to_string().contains("alice"), "{err}");
    db.add_extension(T, "2001", alice.id)
        .await
        .expect("idempotent");
    // Assigning the unassigned calls of that number.
    let mut r = NewRecording::new("u1", T0, Direction::Inbound);
    r.calling = Party::new("2001", "");
    let r = call(db, T, r, 1000).await;
    assert_eq!(
        db.assign_unassigned_calls(T, "2001", alice.id)
            .await
            .expect("assign"),
        1
    );
    assert_eq!(
        db.recording(T, r.id)
            .await
            .expect("get")
            .expect("row")
            .owner_user_id,
        Some(alice.id)
    );

    // Lockout counters.
    assert_eq!(
        db.record_login_failure(T, alice.id, 2, T0)
            .await
            .expect("fail"),
        1
    );
    assert_eq!(
        db.record_login_failure(T, alice.id, 2, T0)
            .await
            .expect("fail"),
        2
    );
    let locked = db.user(T, alice.id).await.expect("get").expect("user");
    assert_eq!(locked.locked_until, Some(T0));
    db.record_login_success(T, alice.id).await.expect("ok");
    let unlocked = db.user(T, alice.id).await.expect("get").expect("user");
    assert_eq!((unlocked.failed_logins, unlocked.locked_until), (0, None));

    // Sessions.
    let now = now_micros();
    db.create_session(T, "h1", alice.id, now + HOUR, "10.0.0.1", "ua")
        .await
        .expect("session");
    db.create_session(T, "h2", alice.id, now + HOUR, "10.0.0.2", "ua")
        .await
        .expect("session");
    let s = db
        .touch_session(T, "h1", now + 5)
        .await
        .expect("touch")
        .expect("live");
    assert_eq!(s.last_seen_at, now + 5);
    assert!(
        db.touch_session(T, "h1", now + 2 * HOUR)
            .await
            .expect("touch")
            .is_none(),
        "expired"
    );
    assert!(
        db.touch_session("clinic", "h1", now)
            .await
            .expect("touch")
            .is_none()
    );
    db.revoke_session(T, "h1").await.expect("revoke");
    assert!(
        db.touch_session(T, "h1", now + 6)
            .await
            .expect("touch")
            .is_none()
    );
    assert_eq!(
        db.revoke_user_sessions(T, alice.id)
            .await
            .expect("revoke all"),
        1
    );
    assert!(
        db.list_sessions(T, alice.id)
            .await
            .expect("list")
            .iter()
            .all(|s| s.revoked_at.is_some())
    );

    // Alarms: one active per type and source.
    use callvault_store::db::AlarmSeverity;
    db.raise_alarm(T, "storage", "s3-main", AlarmSeverity::Major, "unreachable")
        .await
        .expect("raise");
    let again = db
        .raise_alarm(
            T,
            "storage",
            "s3-main",
            AlarmSeverity::Critical,
            "still unreachable",
        )
        .await
        .expect("raise again");
    let active = db.list_alarms(T, false, 10).await.expect("list");
    assert_eq!(active.len(), 1);
    assert_eq!(
        (active[0].id, active[0].severity),
        (again.id, AlarmSeverity::Critical)
    );
    assert!(
        db.clear_alarm(T, "storage", "s3-main")
            .await
            .expect("clear")
    );
    assert!(
        !db.clear_alarm(T, "storage", "s3-main")
            .await
            .expect("clear twice")
    );
    assert!(db.list_alarms(T, false, 10).await.expect("list").is_empty());
    assert_eq!(db.list_alarms(T, true, 10).await.expect("list").len(), 1);
    db.log_activity(T, "recorder", "started")
        .await
        .expect("log");
    db.log_activity(T, "recorder", "draining")
        .await
        .expect("log");
    let act = db.activity(T, None, 10).await.expect("activity");
    assert_eq!(
        act.iter().map(|a| a.message.as_str()).collect::<Vec<_>>(),
        ["draining", "started"]
    );

    // Saved queries are per user and round-trip every filter.
    let q = SearchQuery {
        calling: pat("732*"),
        duration: Some(DurationFilter {
            op: DurationOp::Ge,
            seconds: 30,
        }),
        release_causes: vec![ReleaseCause::Abandoned],
        tag_match: TagMatch::All,
        sort: SortKey::Duration,
        ..Default::default()
    };
    db.save_query(T, alice.id, "Abandoned Calls", &q)
        .await
        .expect("save");
    db.save_query(T, alice.id, "Abandoned Calls", &q)
        .await
        .expect("overwrite");
    let saved = db.saved_queries(T, alice.id).await.expect("saved");
    assert_eq!(saved.len(), 1);
    assert_eq!(saved[0].query, q);
    assert!(db.saved_queries(T, bob.id).await.expect("saved").is_empty());
    db.delete_saved_query(T, bob.id, saved[0].id)
        .await
        .expect("no-op for another user");
    assert_eq!(db.saved_queries(T, alice.id).await.expect("saved").len(), 1);

    // Transcripts per channel, replaced on re-run.
    for body in ["first", "second"] {
        db.put_transcript(
            T,
            &Transcript {
                recording_id: r.id,
                channel: 1,
                engine: "whisper".into(),
                language: "en".into(),
                body: body.into(),
                words: r#"[{"w":"x","start":0.0,"end":0.5}]"#.into(),
                created_at: T0,
            },
        )
        .await
        .expect("transcript");
    }
    let ts = db.transcripts(T, r.id).await.expect("get");
    assert_eq!(ts.len(), 1);
    assert_eq!(ts[0].body, "second");
}

/// A recording assurance test call, once marked by the Call-ID only its job knows, is left out
/// of every search but the explicit one, and expires on its own short retention (never later
/// than the profile's).
async fn assurance_calls_are_marked_hidden_and_expire_early(f: Fixture) {
    let db = &f.db;
    let day = 24 * HOUR;
    let real = call(
        db,
        T,
        NewRecording::new("real", T0, Direction::Inbound),
        1000,
    )
    .await;
    let mut test = NewRecording::new("test", T0, Direction::Inbound);
    test.profile = "agents".into();
    test.sip_call_id = "assurance-1@callvault".into();
    test.expires_at = Some(T0 + 30 * day);
    let test = call(db, T, test, 1000).await;
    assert!(!test.assurance);

    let nothing = db
        .mark_assurance(T, "other-profile", "assurance-1@callvault", 7 * day)
        .await
        .expect("mark");
    assert!(nothing.is_empty(), "another profile's call is not touched");
    let marked = db
        .mark_assurance(T, "agents", "assurance-1@callvault", 7 * day)
        .await
        .expect("mark");
    assert_eq!(marked.len(), 1);
    assert!(marked[0].assurance);
    assert_eq!(marked[0].expires_at, Some(T0 + 7 * day));
    // A profile keeping calls for less than the test retention wins.
    let again = db
        .mark_assurance(T, "agents", "assurance-1@callvault", 90 * day)
        .await
        .expect("mark");
    assert_eq!(again[0].expires_at, Some(T0 + 7 * day));

    let found = |q: SearchQuery| async move {
        db.search_recordings(T, &AccessScope::All, &q, 10, None)
            .await
            .expect("search")
            .items
            .into_iter()
            .map(|r| r.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(found(SearchQuery::default()).await, [real.id]);
    let explicit = SearchQuery {
        assurance: true,
        ..SearchQuery::default()
    };
    assert_eq!(found(explicit.clone()).await, [test.id]);
    assert_eq!(
        db.count_recordings(T, &AccessScope::All, &SearchQuery::default())
            .await
            .expect("count"),
        1
    );
    let expired = db
        .expired_recordings_of_profile(T, "agents", T0 + 8 * day, None, 10)
        .await
        .expect("expired");
    assert_eq!(expired.iter().map(|r| r.id).collect::<Vec<_>>(), [test.id]);

    // Neither archived nor transcribed: the jobs select the real call only.
    let ids = |rows: Vec<Recording>| rows.into_iter().map(|r| r.id).collect::<Vec<_>>();
    let archive = db
        .recordings_to_archive_after(T, "offsite", &[], None, 10)
        .await
        .expect("archive selection");
    assert_eq!(ids(archive), [real.id]);
    assert_eq!(
        ids(db
            .recordings_to_archive(T, "offsite", 10)
            .await
            .expect("archive")),
        [real.id]
    );
    let counts = db.archive_counts(T, "offsite", &[]).await.expect("counts");
    assert_eq!(counts.pending, 1);
    let speech = db
        .speech_candidates(T, "calls", &Default::default(), false, None, 10)
        .await
        .expect("speech selection");
    assert_eq!(ids(speech), [real.id]);
}
