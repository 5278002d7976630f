//! Every CEL rule and the key schema constraints, exercised without a cluster: each case changes
//! one thing in a valid object and checks the rejection names the field (and says why).

use std::collections::BTreeSet;

use callvault_crds::{FieldErrorKind, Resource, validate_document, validate_update};
use serde_json::{Value, json};

fn recording_profile() -> Value {
    json!({
        "apiVersion": "callvault.io/v1alpha1",
        "kind": "RecordingProfile",
        "metadata": {"name": "agents", "namespace": "bank"},
        "spec": {
            "selector": {"groups": ["agents"]},
            "storageTargetRef": {"name": "primary"},
            "encryption": {"keySecretRef": {"name": "key"}}
        }
    })
}

fn access_profile() -> Value {
    json!({
        "apiVersion": "callvault.io/v1alpha1",
        "kind": "AccessProfile",
        "metadata": {"name": "supervisors"},
        "spec": {"subjects": {"groups": ["supervisors"]}, "calls": {"scope": "All"}}
    })
}

fn storage_target(kind: &str) -> Value {
    let spec = match kind {
        "s3" => json!({"type": "s3", "bucket": "calls", "region": "eu-west-2"}),
        "gcs" => json!({"type": "gcs", "bucket": "calls"}),
        "azure" => json!({"type": "azure", "container": "calls", "account": "bankcalls"}),
        _ => json!({"type": "filesystem", "path": "/var/lib/callvault"}),
    };
    json!({
        "apiVersion": "callvault.io/v1alpha1",
        "kind": "StorageTarget",
        "metadata": {"name": "primary"},
        "spec": spec
    })
}

fn connector() -> Value {
    json!({
        "apiVersion": "callvault.io/v1alpha1",
        "kind": "Connector",
        "metadata": {"name": "archive"},
        "spec": {"storageTargetRef": {"name": "archive"}}
    })
}

fn speech_job(engine: Value) -> Value {
    json!({
        "apiVersion": "callvault.io/v1alpha1",
        "kind": "SpeechJob",
        "metadata": {"name": "stt"},
        "spec": {"engine": engine}
    })
}

fn whisper() -> Value {
    speech_job(json!({"type": "whisper", "modelPath": "/models/base.bin"}))
}

/// Set `pointer` (JSON pointer, parents created) to `value`; `Value::Null` removes the field.
fn with(mut doc: Value, pointer: &str, value: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').expect("pointer has a parent");
    let mut node = &mut doc;
    for part in parent.split('/').skip(1) {
        node = node
            .as_object_mut()
            .expect("parent is an object")
            .entry(part)
            .or_insert_with(|| json!({}));
    }
    let map = node.as_object_mut().expect("parent is an object");
    if value.is_null() {
        map.remove(key);
    } else {
        map.insert(key.to_owned(), value);
    }
    doc
}

#[track_caller]
fn accepted(doc: &Value) -> Resource {
    validate_document(doc).unwrap_or_else(|e| panic!("expected accepted, got: {e}"))
}

/// Asserts rejection with an error on `path` whose message contains `needle`; returns the message.
#[track_caller]
fn rejected(doc: &Value, path: &str, needle: &str) -> String {
    let err = match validate_document(doc) {
        Ok(r) => panic!(
            "expected {path} to be rejected, but {} was accepted",
            r.kind()
        ),
        Err(e) => e,
    };
    let errors = err.field_errors();
    errors
        .iter()
        .find(|e| e.path == path && e.message.contains(needle))
        .unwrap_or_else(|| panic!("no error on {path} containing {needle:?}; got: {err}"))
        .message
        .clone()
}

#[test]
fn defaults_are_applied_like_the_api_server() {
    let Resource::RecordingProfile(rp) = accepted(&recording_profile()) else {
        panic!("wrong kind")
    };
    assert_eq!(rp.spec.retention.days, 365);
    assert_eq!(rp.spec.max_duration_seconds, 18000);
    assert_eq!(rp.spec.selector.sample_percent, 100);
    assert_eq!(rp.spec.selector.schedule.time_zone, "UTC");
    assert!(
        rp.spec.selector.schedule.windows.is_empty(),
        "default schedule is 24/7"
    );
    assert!(rp.spec.recorder.fail_closed);
    assert_eq!(rp.spec.recorder.min_replicas, 2);
    assert_eq!(rp.spec.recorder.rtp_port_range.start, 20000);
    assert_eq!(rp.spec.recorder.media_timeout_seconds, 60);
    assert_eq!(rp.spec.recorder.spool.min_free_mib, 256);
    assert_eq!(rp.spec.recorder.options_probe_seconds, 60);
    assert_eq!(rp.spec.encryption.key_secret_ref.key, "public.pem");
    assert!(!rp.spec.disabled);

    let Resource::StorageTarget(st) = accepted(&storage_target("s3")) else {
        panic!("wrong kind")
    };
    assert_eq!(st.spec.capacity_alarm_percent, 90);
    assert!(!st.spec.virtual_hosted_style);

    let Resource::Connector(c) = accepted(&connector()) else {
        panic!("wrong kind")
    };
    assert_eq!(c.spec.schedule, "*/5 * * * *");
    assert!(c.spec.encrypt && c.spec.active);

    let Resource::SpeechJob(sj) = accepted(&whisper()) else {
        panic!("wrong kind")
    };
    assert_eq!(sj.spec.language, "en-US");
    assert_eq!(sj.spec.concurrency, 2);
    assert!(sj.spec.schedule.is_none(), "no schedule means run once");
}

/// Every message of every rule a rejected case below triggered; checked against the CRDs.
fn rule_messages_in_crds() -> BTreeSet<String> {
    fn walk(v: &Value, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::Array(rules)) = m.get("x-kubernetes-validations") {
                    for r in rules {
                        out.insert(
                            r["message"]
                                .as_str()
                                .expect("every rule has a message")
                                .into(),
                        );
                    }
                }
                m.values().for_each(|x| walk(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    for crd in callvault_crds::crds() {
        walk(
            &serde_json::to_value(&crd).expect("CRD serializes"),
            &mut out,
        );
    }
    out
}

#[test]
fn every_cel_rule_rejects_what_it_should_and_accepts_the_rest() {
    let mut hit = BTreeSet::new();
    let mut reject = |doc: Value, path: &str, needle: &str| {
        hit.insert(rejected(&doc, path, needle));
    };
    let rp = recording_profile;

    // RecordingProfile: selector.
    accepted(&with(
        with(rp(), "/spec/selector/groups", json!([])),
        "/spec/selector/allUsers",
        json!(true),
    ));
    reject(
        with(rp(), "/spec/selector/groups", json!([])),
        "spec.selector.groups",
        "at least one group",
    );
    // An empty Allow number filter would silently record nothing.
    reject(
        with(
            rp(),
            "/spec/selector/numbers/placed/listType",
            json!("Allow"),
        ),
        "spec.selector.numbers.placed.numbers",
        "at least one number or a regex",
    );
    accepted(&with(
        with(
            rp(),
            "/spec/selector/numbers/placed/listType",
            json!("Allow"),
        ),
        "/spec/selector/numbers/placed/regex",
        json!("^44"),
    ));
    accepted(&with(
        with(
            rp(),
            "/spec/selector/numbers/received/listType",
            json!("Allow"),
        ),
        "/spec/selector/numbers/received/numbers",
        json!(["17326524689"]),
    ));
    accepted(&with(rp(), "/spec/selector/samplePercent", json!(1)));
    reject(
        with(rp(), "/spec/selector/samplePercent", json!(0)),
        "spec.selector.samplePercent",
        "between 1 and 100",
    );
    reject(
        with(rp(), "/spec/selector/samplePercent", json!(101)),
        "spec.selector.samplePercent",
        "less than or equal to 100",
    );
    // Schedule windows: start < end, zero-padded HH:MM, valid weekday.
    let window = |d: &str, s: &str, e: &str| {
        with(
            rp(),
            "/spec/selector/schedule/windows",
            json!([{"day": d, "start": s, "end": e}]),
        )
    };
    accepted(&window("Monday", "08:00", "24:00"));
    reject(
        window("Monday", "18:00", "08:00"),
        "spec.selector.schedule.windows[0].end",
        "end must be after start",
    );
    reject(
        window("Monday", "08:00", "08:00"),
        "spec.selector.schedule.windows[0].end",
        "end must be after start",
    );
    reject(
        window("Monday", "8:00", "17:00"),
        "spec.selector.schedule.windows[0].start",
        "should match",
    );
    reject(
        window("Funday", "08:00", "17:00"),
        "spec.selector.schedule.windows[0].day",
        "Unsupported value",
    );
    // Retention.
    accepted(&with(rp(), "/spec/retention/days", json!(1)));
    reject(
        with(rp(), "/spec/retention/days", json!(0)),
        "spec.retention.days",
        "at least 1",
    );
    // Recorder pool.
    reject(
        with(
            with(rp(), "/spec/recorder/minReplicas", json!(5)),
            "/spec/recorder/maxReplicas",
            json!(3),
        ),
        "spec.recorder.minReplicas",
        "must not exceed",
    );
    accepted(&with(
        rp(),
        "/spec/recorder/rtpPortRange",
        json!({"start": 1024, "end": 5059}),
    ));
    accepted(&with(
        rp(),
        "/spec/recorder/rtpPortRange",
        json!({"start": 60000, "end": 65535}),
    ));
    reject(
        with(
            rp(),
            "/spec/recorder/rtpPortRange",
            json!({"start": 60000, "end": 65536}),
        ),
        "spec.recorder.rtpPortRange.end",
        "less than or equal to 65535",
    );
    reject(
        with(
            rp(),
            "/spec/recorder/rtpPortRange",
            json!({"start": 30000, "end": 20000}),
        ),
        "spec.recorder.rtpPortRange.start",
        "must be below",
    );
    reject(
        with(
            rp(),
            "/spec/recorder/rtpPortRange",
            json!({"start": 20001, "end": 29999}),
        ),
        "spec.recorder.rtpPortRange.start",
        "must be even",
    );
    reject(
        with(
            rp(),
            "/spec/recorder/rtpPortRange",
            json!({"start": 80, "end": 29999}),
        ),
        "spec.recorder.rtpPortRange.start",
        "greater than or equal to 1024",
    );
    reject(
        with(
            rp(),
            "/spec/recorder/rtpPortRange",
            json!({"start": 20000, "end": 20099}),
        ),
        "spec.recorder.rtpPortRange",
        "too small",
    );
    accepted(&with(
        with(
            rp(),
            "/spec/recorder/rtpPortRange",
            json!({"start": 20000, "end": 20099}),
        ),
        "/spec/recorder/sessionsPerReplica",
        json!(25),
    ));
    reject(
        with(
            rp(),
            "/spec/recorder/spool",
            json!({"alarmPercent": 90, "criticalPercent": 85}),
        ),
        "spec.recorder.spool.criticalPercent",
        "must not be below",
    );
    accepted(&with(
        rp(),
        "/spec/recorder/spool",
        json!({"alarmPercent": 90, "criticalPercent": 90, "minFreeMiB": 0}),
    ));
    reject(
        with(rp(), "/spec/recorder/sip/port", json!(20002)),
        "spec.recorder.sip.port",
        "outside",
    );
    reject(
        with(rp(), "/spec/recorder/sip/transports", json!(["TLS"])),
        "spec.recorder.sip.tlsSecretRef",
        "required when transports include TLS",
    );
    let tls = with(
        with(rp(), "/spec/recorder/sip/transports", json!(["TLS"])),
        "/spec/recorder/sip/tlsSecretRef",
        json!({"name": "sip-tls"}),
    );
    accepted(&tls);
    // TLS and TCP are both TCP ports: one number cannot serve both.
    let both = with(
        tls.clone(),
        "/spec/recorder/sip/transports",
        json!(["UDP", "TCP", "TLS"]),
    );
    accepted(&both);
    reject(
        with(both.clone(), "/spec/recorder/sip/tlsPort", json!(5060)),
        "spec.recorder.sip.tlsPort",
        "must differ from spec.recorder.sip.port",
    );
    accepted(&with(
        tls.clone(),
        "/spec/recorder/sip/tlsPort",
        json!(5060),
    ));
    reject(
        with(rp(), "/spec/recorder/sip/tlsVerifyClient", json!(true)),
        "spec.recorder.sip.tlsVerifyClient",
        "needs TLS in transports",
    );
    accepted(&with(
        tls,
        "/spec/recorder/sip/tlsVerifyClient",
        json!(true),
    ));

    // AccessProfile.
    let ap = access_profile;
    reject(
        with(ap(), "/spec/subjects", json!({})),
        "spec.subjects.groups",
        "at least one group or user",
    );
    accepted(&with(ap(), "/spec/subjects", json!({"users": ["alice"]})));
    reject(
        with(ap(), "/spec/calls", json!({"scope": "OwnAndGroups"})),
        "spec.calls.groups",
        "must name at least one group",
    );
    accepted(&with(
        ap(),
        "/spec/calls",
        json!({"scope": "OwnAndGroups", "groups": ["team-a"]}),
    ));
    reject(
        with(
            ap(),
            "/spec/calls",
            json!({"scope": "Own", "groups": ["team-a"]}),
        ),
        "spec.calls.groups",
        "only allowed when",
    );
    reject(
        with(ap(), "/spec/keys", json!(["not-a-key-id"])),
        "spec.keys[0]",
        "should match",
    );

    // StorageTarget: each type needs its own fields and no others.
    for kind in ["s3", "gcs", "azure", "filesystem"] {
        accepted(&storage_target(kind));
    }
    reject(
        with(storage_target("s3"), "/spec/bucket", Value::Null),
        "spec.bucket",
        "required when spec.type is s3 or gcs",
    );
    reject(
        with(storage_target("gcs"), "/spec/bucket", Value::Null),
        "spec.bucket",
        "required when spec.type is s3 or gcs",
    );
    reject(
        with(storage_target("azure"), "/spec/bucket", json!("calls")),
        "spec.bucket",
        "only allowed when spec.type is s3 or gcs",
    );
    reject(
        with(storage_target("azure"), "/spec/container", Value::Null),
        "spec.container",
        "required when spec.type is azure",
    );
    reject(
        with(storage_target("s3"), "/spec/container", json!("calls")),
        "spec.container",
        "only allowed when spec.type is azure",
    );
    reject(
        with(storage_target("azure"), "/spec/account", Value::Null),
        "spec.account",
        "required when spec.type is azure",
    );
    reject(
        with(storage_target("gcs"), "/spec/account", json!("bankcalls")),
        "spec.account",
        "only allowed when spec.type is azure",
    );
    reject(
        with(storage_target("filesystem"), "/spec/path", Value::Null),
        "spec.path",
        "required when spec.type is filesystem",
    );
    reject(
        with(storage_target("s3"), "/spec/path", json!("/data")),
        "spec.path",
        "only allowed when spec.type is filesystem",
    );
    accepted(&with(
        storage_target("filesystem"),
        "/spec/claimName",
        json!("recordings"),
    ));
    reject(
        with(storage_target("s3"), "/spec/claimName", json!("recordings")),
        "spec.claimName",
        "only allowed when spec.type is filesystem",
    );
    accepted(&with(
        storage_target("azure"),
        "/spec/endpoint",
        json!("http://azurite:10000/devstoreaccount1"),
    ));
    reject(
        with(
            storage_target("filesystem"),
            "/spec/endpoint",
            json!("https://minio:9000"),
        ),
        "spec.endpoint",
        "not allowed when spec.type is filesystem",
    );
    reject(
        with(storage_target("gcs"), "/spec/region", json!("europe-west2")),
        "spec.region",
        "only allowed when spec.type is s3",
    );
    accepted(&with(
        storage_target("s3"),
        "/spec/virtualHostedStyle",
        json!(true),
    ));
    reject(
        with(
            storage_target("azure"),
            "/spec/virtualHostedStyle",
            json!(true),
        ),
        "spec.virtualHostedStyle",
        "only allowed when spec.type is s3",
    );
    accepted(&with(
        storage_target("s3"),
        "/spec/credentialsSecretRef",
        json!({"name": "s3"}),
    ));
    reject(
        with(
            storage_target("filesystem"),
            "/spec/credentialsSecretRef",
            json!({"name": "s3"}),
        ),
        "spec.credentialsSecretRef",
        "not allowed when spec.type is filesystem",
    );
    reject(
        with(
            storage_target("filesystem"),
            "/spec/path",
            json!("/data/../etc"),
        ),
        "spec.path",
        "'..' segments",
    );
    accepted(&with(
        storage_target("s3"),
        "/spec/prefix",
        json!("recordings/emea"),
    ));
    reject(
        with(
            storage_target("s3"),
            "/spec/prefix",
            json!("recordings/../other"),
        ),
        "spec.prefix",
        "'.' or '..' segments",
    );
    reject(
        with(storage_target("s3"), "/spec/prefix", json!("/recordings")),
        "spec.prefix",
        "should match",
    );
    accepted(&with(
        storage_target("s3"),
        "/spec/capacityAlarmPercent",
        json!(100),
    ));
    reject(
        with(storage_target("s3"), "/spec/capacityAlarmPercent", json!(0)),
        "spec.capacityAlarmPercent",
        "between 1 and 100",
    );
    // Space-based cleanup: filesystem only, at least one limit, each in range.
    let cleanup = accepted(&with(
        storage_target("filesystem"),
        "/spec/spaceCleanup",
        json!({"maxUsedBytes": 1_000_000, "minFreePercent": 10}),
    ));
    let Resource::StorageTarget(cleanup) = cleanup else {
        panic!("a StorageTarget")
    };
    assert_eq!(
        cleanup.spec.space_cleanup.and_then(|c| c.max_used_bytes),
        Some(1_000_000)
    );
    reject(
        with(
            storage_target("s3"),
            "/spec/spaceCleanup",
            json!({"minFreePercent": 10}),
        ),
        "spec.spaceCleanup",
        "only allowed when spec.type is filesystem",
    );
    reject(
        with(
            storage_target("filesystem"),
            "/spec/spaceCleanup",
            json!({}),
        ),
        "spec.spaceCleanup",
        "needs maxUsedBytes or minFreePercent",
    );
    reject(
        with(
            storage_target("filesystem"),
            "/spec/spaceCleanup",
            json!({"minFreePercent": 100}),
        ),
        "spec.spaceCleanup.minFreePercent",
        "between 1 and 99",
    );
    reject(
        with(
            storage_target("filesystem"),
            "/spec/spaceCleanup",
            json!({"maxUsedBytes": 0}),
        ),
        "spec.spaceCleanup.maxUsedBytes",
        "",
    );
    reject(
        with(storage_target("s3"), "/spec/type", json!("ftp")),
        "spec.type",
        "Unsupported value",
    );

    // SpeechJob engines.
    reject(
        speech_job(json!({"type": "whisper"})),
        "spec.engine.modelPath",
        "required when spec.engine.type is whisper",
    );
    reject(
        speech_job(
            json!({"type": "google", "modelPath": "/m", "credentialsSecretRef": {"name": "g"}}),
        ),
        "spec.engine.modelPath",
        "only allowed when",
    );
    reject(
        speech_job(json!({"type": "openai", "endpoint": "http://stt:8000", "claimName": "models"})),
        "spec.engine.claimName",
        "only allowed when",
    );
    reject(
        speech_job(json!({"type": "google"})),
        "spec.engine.credentialsSecretRef",
        "required when spec.engine.type is google",
    );
    accepted(&speech_job(
        json!({"type": "google", "credentialsSecretRef": {"name": "g"}}),
    ));
    reject(
        speech_job(
            json!({"type": "whisper", "modelPath": "/m", "credentialsSecretRef": {"name": "x"}}),
        ),
        "spec.engine.credentialsSecretRef",
        "runs offline",
    );
    reject(
        speech_job(json!({"type": "whisper", "modelPath": "/m", "endpoint": "http://x:1"})),
        "spec.engine.endpoint",
        "runs offline",
    );
    reject(
        speech_job(json!({"type": "openai"})),
        "spec.engine.credentialsSecretRef",
        "no endpoint is set",
    );
    accepted(&speech_job(
        json!({"type": "openai", "endpoint": "http://whisper-server:8000"}),
    ));
    reject(
        with(
            whisper(),
            "/spec/filter",
            json!({"minDurationSeconds": 60, "maxDurationSeconds": 30}),
        ),
        "spec.filter.minDurationSeconds",
        "must not exceed",
    );
    accepted(&with(
        whisper(),
        "/spec/filter",
        json!({"minDurationSeconds": 30, "maxDurationSeconds": 60}),
    ));
    reject(
        with(
            whisper(),
            "/spec/filter",
            json!({"from": "2025-02-01T00:00:00Z", "to": "2025-01-01T00:00:00Z"}),
        ),
        "spec.filter.from",
        "before",
    );
    accepted(&with(
        whisper(),
        "/spec/filter",
        json!({"from": "2025-01-01T00:00:00Z", "to": "2025-02-01T00:00:00Z"}),
    ));

    // Transition rules (need the old object): checked in their own tests, counted here.
    let old = with(rp(), "/spec/disabled", json!(true));
    let err = validate_update(&rp(), &old).expect_err("re-enabling is refused");
    hit.extend(err.field_errors().iter().map(|e| e.message.clone()));
    let old = connector();
    let err = validate_update(&with(connector(), "/spec/encrypt", json!(false)), &old)
        .expect_err("decrypting is refused");
    hit.extend(err.field_errors().iter().map(|e| e.message.clone()));

    // A recorder's spool volume is made once: its size and class cannot change, nor be set
    // or dropped later; its thresholds can.
    let spool = |v: Value| with(rp(), "/spec/recorder/spool", v);
    let sized = spool(json!({"size": "20Gi", "storageClassName": "fast"}));
    for changed in [
        json!({"size": "40Gi", "storageClassName": "fast"}),
        json!({"size": "20Gi", "storageClassName": "slow"}),
        json!({"storageClassName": "fast"}),
    ] {
        let err = validate_update(&spool(changed.clone()), &sized)
            .expect_err("the spool volume is immutable");
        let e = &err.field_errors()[0];
        assert!(
            e.path == "spec.recorder.spool" && e.message.contains("cannot change"),
            "{changed}: {err}"
        );
        hit.insert(e.message.clone());
    }
    validate_update(&spool(json!({"size": "20Gi"})), &rp()).expect_err("nor set later");
    validate_update(
        &spool(json!({"size": "20Gi", "storageClassName": "fast", "alarmPercent": 70})),
        &sized,
    )
    .expect("the thresholds may change");
    validate_update(
        &with(rp(), "/spec/recorder/drainGraceSeconds", json!(1200)),
        &rp(),
    )
    .expect("the drain grace may change");

    for (kind, field, value) in [
        ("s3", "type", json!("gcs")),
        ("s3", "bucket", json!("other-bucket")),
        ("azure", "container", json!("other")),
        ("azure", "account", json!("otheraccount")),
        ("filesystem", "path", json!("/mnt/other")),
    ] {
        let old = storage_target(kind);
        let new = with(storage_target(kind), &format!("/spec/{field}"), value);
        let err = validate_update(&new, &old).expect_err("storage location is immutable");
        let e = err
            .field_errors()
            .iter()
            .find(|e| e.path == format!("spec.{field}"))
            .unwrap_or_else(|| panic!("no error on spec.{field}: {err}"));
        assert!(e.message.contains("immutable"), "{e}");
        hit.insert(e.message.clone());
    }
    let old = storage_target("s3");
    validate_update(
        &with(
            storage_target("s3"),
            "/spec/capacityAlarmPercent",
            json!(70),
        ),
        &old,
    )
    .expect("other StorageTarget fields may change");

    // Connector and SpeechJob schedules: what a CronJob runs, anything else refused at
    // admission rather than when the operator creates the CronJob.
    for schedule in [
        "*/5 * * * *",
        "0 2 * * 1-5",
        "0,30 8-18 * jan-jun MON",
        "59 23 31 12 7",
        "@hourly",
    ] {
        accepted(&with(connector(), "/spec/schedule", json!(schedule)));
        accepted(&with(whisper(), "/spec/schedule", json!(schedule)));
        accepted(&with(
            recording_profile(),
            "/spec/assurance/schedule",
            json!(schedule),
        ));
    }
    for schedule in [
        "61 * * * *",
        "0 24 * * *",
        "0 0 0 * *",
        "0 0 * 13 *",
        "0 0 * * 8",
        "* * * *",
        "@every 5m",
        "every 5 minutes",
    ] {
        for doc in [connector(), whisper()] {
            hit.insert(rejected(
                &with(doc, "/spec/schedule", json!(schedule)),
                "spec.schedule",
                "must be a cron schedule",
            ));
        }
        hit.insert(rejected(
            &with(
                recording_profile(),
                "/spec/assurance/schedule",
                json!(schedule),
            ),
            "spec.assurance.schedule",
            "must be a cron schedule",
        ));
    }

    // What the CEL pattern lets through but the jobs' own parser refuses, with the reason:
    // the same parser decides at admission and at run time, so an accepted schedule runs.
    for (schedule, reason) in [
        ("5-1 * * * *", "runs backwards"),
        ("*/0 * * * *", "step \"0\" is not a positive number"),
        ("0 0 30 2 *", "would never run"),
        ("0 0 31 4,6,9,11 *", "would never run"),
    ] {
        for doc in [connector(), whisper()] {
            rejected(
                &with(doc, "/spec/schedule", json!(schedule)),
                "spec.schedule",
                reason,
            );
        }
    }

    let missing: Vec<_> = rule_messages_in_crds().difference(&hit).cloned().collect();
    assert!(
        missing.is_empty(),
        "CEL rules never exercised by a rejected case: {missing:#?}"
    );
}

#[test]
fn disabled_is_one_way() {
    let enabled = recording_profile();
    let disabled = with(recording_profile(), "/spec/disabled", json!(true));
    validate_update(&disabled, &enabled).expect("disabling is allowed");
    validate_update(&disabled, &disabled).expect("staying disabled is allowed");
    let err = validate_update(&enabled, &disabled).expect_err("re-enabling is refused");
    let e = &err.field_errors()[0];
    assert_eq!(e.path, "spec.disabled");
    assert_eq!(e.kind, FieldErrorKind::Forbidden);
    assert!(e.message.contains("one-way"), "{e}");
    // Omitting the field defaults it to false, which is re-enabling too.
    let omitted = with(recording_profile(), "/spec/disabled", Value::Null);
    assert!(validate_update(&omitted, &disabled).is_err());
    // On create there is no old object: a new disabled profile is fine.
    validate_document(&disabled).expect("creating a disabled profile is allowed");
}

#[test]
fn connector_encrypt_is_one_way() {
    let plain = with(connector(), "/spec/encrypt", json!(false));
    let encrypted = connector();
    validate_document(&plain).expect("a plaintext archive may be created");
    validate_update(&encrypted, &plain).expect("switching encryption on is allowed");
    let err = validate_update(&plain, &encrypted).expect_err("switching encryption off is refused");
    assert_eq!(err.field_errors()[0].path, "spec.encrypt");
    assert!(
        validate_update(&with(connector(), "/spec/encrypt", Value::Null), &encrypted).is_ok(),
        "default is true"
    );
}

#[test]
fn schema_limits_are_enforced_with_the_field_named() {
    let rp = recording_profile;
    let long = "1".repeat(2049);
    rejected(
        &with(rp(), "/spec/selector/numbers/received/regex", json!(long)),
        "spec.selector.numbers.received.regex",
        "Too long",
    );
    accepted(&with(
        rp(),
        "/spec/selector/numbers/received/regex",
        json!("1".repeat(2048)),
    ));
    // Quantities as Kubernetes writes them; anything else is named before a pod is made.
    for (pointer, value) in [
        (
            "/spec/recorder/resources",
            json!({"requests": {"cpu": "2 cores"}}),
        ),
        (
            "/spec/recorder/resources",
            json!({"limits": {"memory": "1GB"}}),
        ),
        ("/spec/recorder/spool", json!({"size": "-5Gi"})),
    ] {
        let path = match value.pointer("/requests/cpu") {
            Some(_) => "spec.recorder.resources.requests.cpu",
            None if value.get("limits").is_some() => "spec.recorder.resources.limits.memory",
            None => "spec.recorder.spool.size",
        };
        rejected(&with(rp(), pointer, value), path, "should match");
    }
    accepted(&with(
        rp(),
        "/spec/recorder/resources",
        json!({"requests": {"cpu": "500m", "memory": "1.5Gi"}, "limits": {"memory": "3Gi"}}),
    ));
    rejected(
        &with(rp(), "/spec/recorder/drainGraceSeconds", json!(86401)),
        "spec.recorder.drainGraceSeconds",
        "",
    );
    let many: Vec<String> = (0..129).map(|i| format!("4420794600{i:02}")).collect();
    rejected(
        &with(rp(), "/spec/selector/numbers/placed/numbers", json!(many)),
        "spec.selector.numbers.placed.numbers",
        "Too many",
    );
    rejected(
        &with(
            rp(),
            "/spec/selector/numbers/placed/numbers",
            json!(["+4420"]),
        ),
        "spec.selector.numbers.placed.numbers[0]",
        "should match",
    );
    rejected(
        &with(rp(), "/spec/selector/groups", json!(["a", "a"])),
        "spec.selector.groups[1]",
        "Duplicate",
    );
    rejected(
        &with(rp(), "/spec/storageTargetRef", Value::Null),
        "spec.storageTargetRef",
        "Required",
    );
    rejected(
        &with(rp(), "/spec/encryption", Value::Null),
        "spec.encryption",
        "Required",
    );
    rejected(
        &with(rp(), "/spec/retention/days", json!("a year")),
        "spec.retention.days",
        "must be of type integer",
    );
    rejected(
        &with(rp(), "/spec/selector/mode", json!("Sometimes")),
        "spec.selector.mode",
        "Unsupported value",
    );
    rejected(
        &with(rp(), "/spec/retention/day", json!(30)),
        "spec.retention.day",
        "not declared",
    );
    rejected(
        &with(rp(), "/metadata/name", json!("Agents_1")),
        "metadata.name",
        "RFC 1123",
    );
    rejected(
        &with(rp(), "/metadata/name", Value::Null),
        "metadata.name",
        "Required",
    );
}

#[test]
fn documents_that_are_not_callvault_resources_are_told_apart() {
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}});
    assert!(matches!(
        validate_document(&secret),
        Err(callvault_crds::ValidationError::NotCallVault { .. })
    ));
    let wrong_version = with(recording_profile(), "/apiVersion", json!("callvault.io/v1"));
    rejected(&wrong_version, "apiVersion", "not served");
    let text = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n---\n";
    let text = format!(
        "{text}{}",
        serde_json::to_string(&storage_target("s3")).expect("json")
    );
    let resources = callvault_crds::validate_yaml(&text).expect("the Secret is skipped");
    assert_eq!(resources.len(), 1);
    let errors = callvault_crds::validate_yaml("kind: [unclosed").expect_err("bad YAML");
    assert!(matches!(
        errors[0],
        callvault_crds::ValidationError::Yaml { .. }
    ));
}

#[test]
fn status_in_a_document_is_ignored_like_a_subresource() {
    let doc = with(
        recording_profile(),
        "/status",
        json!({"readyReplicas": "lots"}),
    );
    accepted(&doc);
}
