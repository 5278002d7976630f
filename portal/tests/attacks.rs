//! The attacks of the portal's threat model, each kept as a regression test: oversized
//! unauthenticated input, audit flooding by failed sign-ins, hashing floods, throttle evasion
//! and lock-out of an account's owner, spreadsheet formulas in exports, slow clients, missing
//! security headers, public metrics, and tampered media served as audio.

mod common;

use std::io::Read as _;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use callvault_portal::PortalConfig;
use callvault_store::db::AuditFilter;
use callvault_store::db::testing::TestDb;
use callvault_store::format::{Header, Layout, MAX_HEADER_LEN};
use common::{Client, Fixture, PASSWORD, T, audio};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ADMIN_PROFILE: &str = r#"
apiVersion: callvault.io/v1alpha1
kind: AccessProfile
metadata: {name: admins}
spec:
  subjects: {groups: [admins]}
  calls:
    scope: All
    actions: {play: true, download: true, export: true, tag: true, addNotes: true}
  admin: {configureSystem: true, auditTrail: true, manageTags: true}
  keys: [KEY]
"#;

async fn setup(f: &Fixture) {
    f.profiles(&ADMIN_PROFILE.replace("KEY", &f.key_id));
    f.user("admin", &["admins"]).await;
}

async fn fixture(testdb: TestDb, config: PortalConfig) -> Fixture {
    let f = Fixture::with(testdb, config).await;
    setup(&f).await;
    f
}

/// The failed sign-in entries of the audit trail.
async fn failures(f: &Fixture) -> Vec<callvault_store::db::AuditEntry> {
    f.db.query_audit(T, &AuditFilter::default(), 100_000)
        .await
        .expect("audit")
        .into_iter()
        .filter(|e| e.action == "login.failed")
        .collect()
}

fn details(e: &callvault_store::db::AuditEntry) -> Value {
    serde_json::from_str(&e.details).unwrap_or(Value::Null)
}

async fn sign_in(c: &mut Client, username: &str, password: &str) -> common::Resp {
    c.send(
        Method::POST,
        "/api/v1/auth/login",
        Some(json!({"username": username, "password": password})),
        &[],
    )
    .await
}

/// Polls `check` until it holds, for at most `within`.
async fn eventually<F: std::future::Future<Output = bool>>(
    within: Duration,
    mut check: impl FnMut() -> F,
) -> bool {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn oversized_sign_in_input_is_refused_before_hashing_or_auditing(testdb: TestDb) {
    let f = fixture(testdb, common::config()).await;
    let before = failures(&f).await.len();
    let mut anon = Client::from_peer(f.router.clone(), "192.0.2.10");
    // The reported attack: megabyte usernames. Refused by size, named, not audited.
    let r = sign_in(&mut anon, &"u".repeat(1 << 20), "whatever whatever").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap_or_default()
            .contains("bytes")
    );
    let r = sign_in(&mut anon, &"u".repeat(300), "whatever whatever").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("username"),
        "{}",
        r.json()
    );
    let r = sign_in(&mut anon, "admin", &"p".repeat(2000)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("password")
    );
    let r = anon
        .send(
            Method::POST,
            "/api/v1/auth/login",
            Some(json!({"username": "admin", "password": "x", "tenant": "../../etc"})),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("tenant")
    );
    // Every header is bounded, before any handler runs.
    let big = "a".repeat(9 * 1024);
    let r = anon
        .send(
            Method::POST,
            "/api/v1/auth/login",
            Some(json!({"username": "admin", "password": "wrong wrong wrong"})),
            &[("user-agent", &big)],
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large"
        )
    );
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap_or_default()
            .contains("user-agent")
    );
    let many: Vec<(String, String)> = (0..40)
        .map(|i| (format!("x-filler-{i}"), "b".repeat(1000)))
        .collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = anon.send(Method::GET, "/api/v1/auth/me", None, &many).await;
    assert_eq!(r.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(failures(&f).await.len(), before, "nothing of it audited");
    // A change of password is bounded the same way.
    let mut admin = f.login("admin").await;
    let r = admin
        .send(
            Method::POST,
            "/api/v1/auth/password",
            Some(json!({"current_password": PASSWORD, "new_password": "n".repeat(5000)})),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("new_password")
    );
}

async fn failed_sign_ins_from_one_source_are_aggregated(testdb: TestDb) {
    let window = Duration::from_secs(2);
    let f = fixture(
        testdb,
        PortalConfig {
            failed_login_audit_window: window,
            ..common::config()
        },
    )
    .await;
    let before = failures(&f).await.len();
    let mut attacker = Client::from_peer(f.router.clone(), "198.51.100.7");
    let start = Instant::now();
    for i in 0..60 {
        let name = format!("{i:03}{}", "n".repeat(250));
        let r = sign_in(&mut attacker, &name, "wrong wrong wrong").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let elapsed = start.elapsed();
    // Per window: the first failure at once, the rest as one summary when it ends. Every
    // attempt is accounted for.
    let counted = |rows: &[callvault_store::db::AuditEntry]| -> u64 {
        rows.iter()
            .map(|e| {
                let d = details(e);
                if d["summary"] == true {
                    d["attempts"].as_u64().unwrap_or(0)
                } else {
                    1
                }
            })
            .sum()
    };
    let all_in = eventually(Duration::from_secs(20), || async {
        counted(&failures(&f).await[before..]) == 60
    })
    .await;
    let rows = failures(&f).await.split_off(before);
    assert!(all_in, "60 failures accounted for: {}", counted(&rows));
    let windows = (elapsed.as_secs_f64() / window.as_secs_f64()).ceil() as usize + 1;
    assert!(
        rows.len() <= 2 * windows,
        "60 failures in {elapsed:?} became {} entries",
        rows.len()
    );
    for e in &rows {
        assert!(
            e.details.len() + e.actor.len() < 2048,
            "a small entry: {}",
            e.details
        );
        let d = details(e);
        assert_eq!(d["ip"], "198.51.100.7");
        if d["summary"] == true {
            assert!(d["usernames"].as_array().map_or(0, Vec::len) <= 10);
        }
    }
    // Each summary names at most ten usernames and counts the rest; where the windows fall
    // depends on the machine's speed, so the bound is checked on whichever summary overflowed.
    let summaries: Vec<_> = rows
        .iter()
        .map(details)
        .filter(|d| d["summary"] == true)
        .collect();
    for d in &summaries {
        let named = d["usernames"].as_array().map_or(0, Vec::len) as u64;
        let omitted = d["usernames_omitted"].as_u64().unwrap_or(0);
        assert_eq!(named + omitted, d["attempts"].as_u64().unwrap_or(0), "{d}");
    }
    assert!(
        summaries
            .iter()
            .any(|d| d["usernames_omitted"].as_u64().unwrap_or(0) > 0),
        "a summary of more than ten usernames: {summaries:?}"
    );
}

async fn password_hashing_is_bounded(testdb: TestDb) {
    let f = fixture(
        testdb,
        PortalConfig {
            hashing_concurrency: 1,
            hashing_queue: 1,
            ..common::config()
        },
    )
    .await;
    let attempts = (0..12).map(|i| {
        let mut c = Client::from_peer(f.router.clone(), &format!("203.0.113.{i}"));
        async move { sign_in(&mut c, "admin", "wrong wrong wrong").await }
    });
    let answers = futures::future::join_all(attempts).await;
    let busy: Vec<_> = answers
        .iter()
        .filter(|r| r.status == StatusCode::SERVICE_UNAVAILABLE)
        .collect();
    let denied = answers
        .iter()
        .filter(|r| r.status == StatusCode::UNAUTHORIZED)
        .count();
    assert!(!busy.is_empty(), "twelve at once overflow a queue of one");
    assert!(denied >= 2, "the admitted ones are checked: {denied}");
    assert_eq!(busy.len() + denied, 12);
    for r in busy {
        assert_eq!(r.code(), "unavailable");
        assert_eq!(r.headers["retry-after"], "1");
    }
    // Once the flood is over, the owner signs in.
    f.login("admin").await;
    let mut ops = Client::new(f.ops.clone());
    let m = String::from_utf8(ops.get("/metrics").await.body.to_vec()).expect("utf8");
    assert!(
        !m.contains("callvault_portal_password_hashing_busy_total 0\n"),
        "{m}"
    );
}

async fn throttling_follows_the_real_client(testdb: TestDb) {
    let f = fixture(
        testdb,
        PortalConfig {
            login_attempts_per_minute: 3,
            trusted_proxies: callvault_portal::config::parse_trusted_proxies("10.0.0.1")
                .expect("proxies"),
            ..common::config()
        },
    )
    .await;
    // Rotating X-Forwarded-For from a client that is not a proxy gains nothing.
    let mut rotating = Client::from_peer(f.router.clone(), "198.51.100.20");
    for i in 0..3 {
        let xff = format!("192.0.2.{i}");
        let r = rotating
            .send(
                Method::POST,
                "/api/v1/auth/login",
                Some(json!({"username": "ghost", "password": "wrong wrong wrong"})),
                &[("x-forwarded-for", &xff)],
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let r = rotating
        .send(
            Method::POST,
            "/api/v1/auth/login",
            Some(json!({"username": "ghost", "password": "wrong wrong wrong"})),
            &[("x-forwarded-for", "192.0.2.200")],
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "too_many_attempts")
    );
    let wait: u64 = r.headers["retry-after"]
        .to_str()
        .expect("h")
        .parse()
        .expect("secs");
    assert!((1..=60).contains(&wait));
    // Other clients do not share its bucket: the owner signs in.
    let mut owner = Client::from_peer(f.router.clone(), "198.51.100.21");
    assert_eq!(
        sign_in(&mut owner, "admin", PASSWORD).await.status,
        StatusCode::OK
    );
    // Behind the trusted proxy, each forwarded client has its own bucket, and what a client
    // wrote before the proxy's hop is not believed.
    for i in 0..4 {
        let mut c = Client::from_peer(f.router.clone(), "10.0.0.1");
        let xff = format!("6.6.6.6, 192.0.2.{}", 50 + i);
        let r = c
            .send(
                Method::POST,
                "/api/v1/auth/login",
                Some(json!({"username": "ghost", "password": "wrong wrong wrong"})),
                &[("x-forwarded-for", &xff)],
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "client {i}");
    }
    let audited: Vec<Value> = failures(&f).await.iter().map(details).collect();
    assert!(
        audited.iter().any(|d| d["ip"] == "192.0.2.53"),
        "the forwarded client is audited"
    );
    assert!(!audited.iter().any(|d| d["ip"] == "6.6.6.6"));
    assert!(
        audited
            .iter()
            .any(|d| d["ip"] == "198.51.100.20"
                && d["reason"].as_str().is_some_and(|r| !r.is_empty())),
        "the rotating client is audited under its real address"
    );
}

async fn an_attacker_cannot_lock_the_owner_out(testdb: TestDb) {
    let f = fixture(
        testdb,
        PortalConfig {
            login_attempts_per_minute: 10,
            lockout_failures: 3,
            failed_login_audit_window: Duration::from_millis(300),
            ..common::config()
        },
    )
    .await;
    // The owner signs in from their usual place.
    let mut home = Client::from_peer(f.router.clone(), "192.0.2.1");
    assert_eq!(
        sign_in(&mut home, "admin", PASSWORD).await.status,
        StatusCode::OK
    );
    // Three failures from the attacker pause the attacker's source on the account, even
    // with the right password, and say so with the time to wait...
    let mut evil = Client::from_peer(f.router.clone(), "203.0.113.66");
    for _ in 0..3 {
        assert_eq!(
            sign_in(&mut evil, "admin", "wrong wrong wrong")
                .await
                .status,
            StatusCode::UNAUTHORIZED
        );
    }
    let r = sign_in(&mut evil, "admin", PASSWORD).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::FORBIDDEN, "account_locked"),
        "{}",
        r.json()
    );
    assert!(r.headers.contains_key("retry-after"));
    // ...and sources new to the account are slowed down together (10 attempts a minute)...
    let mut refused = None;
    for i in 0..8 {
        let mut c = Client::from_peer(f.router.clone(), &format!("203.0.113.{}", 100 + i));
        let r = sign_in(&mut c, "admin", "wrong wrong wrong").await;
        if r.status != StatusCode::UNAUTHORIZED {
            refused = Some((i, r));
            break;
        }
    }
    let (i, r) = refused.expect("slowed down");
    assert_eq!(
        (i, r.status),
        (6, StatusCode::TOO_MANY_REQUESTS),
        "{}",
        r.json()
    );
    // ...but the owner, from their usual source, is not locked out.
    let mut home2 = Client::from_peer(f.router.clone(), "192.0.2.1");
    assert_eq!(
        sign_in(&mut home2, "admin", PASSWORD).await.status,
        StatusCode::OK
    );
    // Every decision is in the audit trail.
    let throttled = eventually(Duration::from_secs(20), || async {
        let reasons: Vec<String> = failures(&f)
            .await
            .iter()
            .map(|e| details(e).to_string())
            .collect();
        reasons
            .iter()
            .any(|r| r.contains("too many attempts on the account"))
            && reasons
                .iter()
                .any(|r| r.contains("failed too often on the account"))
    })
    .await;
    assert!(throttled, "throttling decisions audited");
}

async fn exports_defuse_every_formula_trigger(testdb: TestDb) {
    let f = fixture(testdb, common::config()).await;
    let mut c = f.login("admin").await;
    // Caller names as SIP metadata gives them (the fixture names a party after its number).
    let payloads = [
        "=1+1",
        "+1+HYPERLINK(\"http://evil.example\",\"x\")",
        "-2+3",
        "@SUM(A1)",
        "\tcmd",
        "\r=cmd",
    ];
    let mut ids = Vec::new();
    for p in payloads {
        let rec = f.recording(None, vec![], p, "100", &audio(100, 1)).await;
        ids.push(rec.id);
    }
    // A note and a tag.
    let noted = f
        .recording(None, vec![], "200", "300", &audio(100, 2))
        .await;
    let (s, _) = c
        .json(
            Method::POST,
            &format!("/api/v1/recordings/{}/notes", noted.id),
            json!({"body": "+1+HYPERLINK(\"http://evil.example\")"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let tagged = f
        .recording(None, vec![], "400", "500", &audio(100, 3))
        .await;
    let (s, tag) = c
        .json(Method::POST, "/api/v1/tags", json!({"name": "-cmd|calc"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{tag}");
    let (s, _) = c
        .json(
            Method::PUT,
            "/api/v1/recordings/tags",
            json!({"recordings": [tagged.id], "tags": [tag["id"]]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    ids.extend([noted.id, tagged.id]);

    let r = c
        .send(
            Method::POST,
            "/api/v1/recordings/export",
            Some(json!({"format": "csv", "recordings": ids})),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let csv = String::from_utf8(r.body.to_vec()).expect("utf8");
    // Every field of every line: none starts with a trigger once unquoted.
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = csv.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            '"' if quoted && chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' | '\n' if !quoted => fields.push(std::mem::take(&mut field)),
            '\r' if !quoted => {}
            c => field.push(c),
        }
    }
    for p in payloads {
        let cell = fields
            .iter()
            .find(|f| f.trim_start_matches('\'').starts_with(p))
            .unwrap_or_else(|| panic!("{p:?} exported"));
        assert!(cell.starts_with('\''), "{p:?} defused: {cell:?}");
    }
    for p in ["+1+HYPERLINK(\"http://evil.example\")", "-cmd|calc"] {
        let cell = fields
            .iter()
            .find(|f| f.contains(p))
            .unwrap_or_else(|| panic!("{p:?} exported"));
        assert_eq!(cell, &format!("'{p}"), "defused");
    }
    assert!(
        fields
            .iter()
            .all(|f| !f.starts_with(['=', '+', '-', '@', '\t', '\r'])),
        "no field starts a formula"
    );

    // XLSX: string cells only, the triggering ones with Excel's quote prefix.
    let r = c
        .send(
            Method::POST,
            "/api/v1/recordings/export",
            Some(json!({"format": "xlsx", "recordings": ids})),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let mut x = zip::ZipArchive::new(std::io::Cursor::new(r.body.to_vec())).expect("xlsx");
    let mut part = |name: &str| {
        let mut s = String::new();
        x.by_name(name)
            .expect(name)
            .read_to_string(&mut s)
            .expect("read");
        s
    };
    let (sheet, strings, styles) = (
        part("xl/worksheets/sheet1.xml"),
        part("xl/sharedStrings.xml"),
        part("xl/styles.xml"),
    );
    assert!(!sheet.contains("<f>"), "no formulas");
    let strings: Vec<String> = strings
        .split("<si>")
        .skip(1)
        .map(|si| {
            let t = si.split("</t>").next().unwrap_or_default();
            t[t.find('>').map_or(0, |i| i + 1)..]
                .replace("&quot;", "\"")
                .replace("&amp;", "&")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("_x0009_", "\t")
                .replace("_x000D_", "\r")
        })
        .collect();
    let xfs: Vec<&str> = styles
        .split("<cellXfs")
        .nth(1)
        .and_then(|s| s.split("</cellXfs>").next())
        .expect("cellXfs")
        .split("<xf ")
        .skip(1)
        .collect();
    // Each cell: <c r="A1" s="1" t="s"><v>12</v></c>
    let mut checked = 0;
    for c in sheet.split("<c ").skip(1) {
        let attr = |name: &str| {
            c.split(&format!("{name}=\""))
                .nth(1)
                .and_then(|s| s.split('"').next())
                .map(str::to_owned)
        };
        let Some(v) = c.split("<v>").nth(1).and_then(|s| s.split("</v>").next()) else {
            continue;
        };
        assert_eq!(attr("t").as_deref(), Some("s"), "a string cell: {c}");
        let text = &strings[v.parse::<usize>().expect("index")];
        if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
            let style: usize = attr("s").and_then(|s| s.parse().ok()).unwrap_or(0);
            assert!(
                xfs[style].contains("quotePrefix=\"1\""),
                "{text:?} carries the quote prefix"
            );
            checked += 1;
        }
    }
    assert!(checked >= payloads.len() + 2, "{checked} triggering cells");
}

async fn security_headers_on_every_response_and_metrics_apart(testdb: TestDb) {
    let f = fixture(testdb, common::config()).await;
    let mut anon = Client::new(f.router.clone());
    let mut c = f.login("admin").await;
    let answers = [
        ("API error", anon.get("/api/v1/auth/me").await),
        ("unknown API path", anon.get("/api/v1/nope").await),
        ("unknown path", anon.get("/nope").await),
        ("API answer", c.get("/api/v1/auth/me").await),
        (
            "sign-in refusal",
            sign_in(&mut anon, "admin", "wrong wrong wrong").await,
        ),
        ("UI", anon.get("/").await),
        ("probe", anon.get("/healthz").await),
    ];
    for (what, r) in &answers {
        let h = |name: &str| {
            r.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert_eq!(h("x-content-type-options"), "nosniff", "{what}");
        assert_eq!(h("x-frame-options"), "DENY", "{what}");
        assert_eq!(h("referrer-policy"), "no-referrer", "{what}");
        assert!(
            h("content-security-policy").contains("frame-ancestors 'none'"),
            "{what}"
        );
        if *what != "UI" {
            assert_eq!(h("cache-control"), "no-store", "{what}");
        }
    }
    // The UI keeps its own policy (scripts from the portal) and revalidation.
    let ui = &answers[5].1;
    assert!(
        ui.headers["content-security-policy"]
            .to_str()
            .expect("csp")
            .contains("script-src 'self'")
    );
    assert_eq!(ui.headers["cache-control"], "no-cache");
    // Metrics: not on the users' listener; on the operations router.
    assert_eq!(anon.get("/metrics").await.status, StatusCode::NOT_FOUND);
    let mut ops = Client::new(f.ops.clone());
    let m = ops.get("/metrics").await;
    assert_eq!(m.status, StatusCode::OK);
    let m = String::from_utf8(m.body.to_vec()).expect("utf8");
    assert!(m.contains("callvault_portal_login_failures_total 1"), "{m}");
    assert!(m.contains("callvault_portal_login_throttled_total 0"));
}

async fn tampered_media_is_refused_before_any_audio(testdb: TestDb) {
    let f = fixture(testdb, common::config()).await;
    let mut c = f.login("admin").await;
    // Longer than one streamed piece (1 MiB), so a later chunk is read after the start.
    let plain = audio(1_300_000, 5);
    let plain = &plain;
    let flip = |at: u64| {
        let f = &f;
        async move {
            let rec = f.recording(None, vec![], "100", "200", plain).await;
            let key = rec.object_key.clone().expect("key");
            let mut bytes = f.storage.get(&key).await.expect("get").to_vec();
            let head = &bytes[..bytes.len().min(MAX_HEADER_LEN)];
            let header = Header::parse(head).expect("header");
            let layout = Layout::complete(&header, bytes.len() as u64).expect("layout");
            let span = layout.span(at, at + 1).expect("span");
            bytes[span.ciphertext.start as usize + 3] ^= 1;
            f.storage.put(&key, bytes.into()).await.expect("put");
            rec.id
        }
    };
    // The first chunk fails: an error, before any byte of audio, for playback, a seek and
    // a download; audited and counted.
    let first = flip(10).await;
    for (path, range) in [
        (format!("/api/v1/recordings/{first}/media"), None),
        (
            format!("/api/v1/recordings/{first}/media"),
            Some("bytes=0-99"),
        ),
        (format!("/api/v1/recordings/{first}/download"), None),
    ] {
        let headers: Vec<(&str, &str)> = range.iter().map(|r| ("range", *r)).collect();
        let r = c.send(Method::GET, &path, None, &headers).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::CONFLICT, "conflict"),
            "{path} {range:?}"
        );
        assert!(
            r.json()["message"]
                .as_str()
                .unwrap_or_default()
                .contains("failed authentication")
        );
        assert!(r.headers.get("content-range").is_none());
    }
    let tampered =
        f.db.query_audit(T, &AuditFilter::default(), 10_000)
            .await
            .expect("audit")
            .into_iter()
            .filter(|e| e.action == "media.tampered" && e.item_id == first.to_string())
            .count();
    assert_eq!(tampered, 3);
    // A later chunk fails: the start plays, the body is cut there (never completes).
    let later = flip(1_200_000).await;
    let req = axum::http::Request::get(format!("/api/v1/recordings/{later}/media"))
        .header("cookie", c.cookie.clone().expect("cookie"))
        .extension(axum::extract::ConnectInfo(std::net::SocketAddr::from((
            [192, 0, 2, 9],
            1,
        ))))
        .body(axum::body::Body::empty())
        .expect("request");
    let resp = tower::ServiceExt::oneshot(f.router.clone(), req)
        .await
        .expect("infallible");
    assert_eq!(resp.status(), StatusCode::OK);
    let body = http_body_util::BodyExt::collect(resp.into_body()).await;
    assert!(
        body.is_err(),
        "the stream is cut, not completed with altered audio"
    );
    // Seeking straight to the failing chunk: an error again, before any byte.
    let r = c
        .send(
            Method::GET,
            &format!("/api/v1/recordings/{later}/media"),
            None,
            &[("range", "bytes=1199990-")],
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let mut ops = Client::new(f.ops.clone());
    let m = String::from_utf8(ops.get("/metrics").await.body.to_vec()).expect("utf8");
    assert!(m.contains("callvault_portal_media_tampered_total 5"), "{m}");
}

/// A real listener with the portal's server loop (timeouts, socket peers).
async fn listen(
    f: &Fixture,
    header_timeout: Duration,
) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(callvault_portal::serve(
        listener,
        f.router.clone(),
        callvault_portal::ServerLimits { header_timeout },
        async move {
            let _ = stopped.await;
        },
    ));
    (addr, stop)
}

/// Sends raw bytes and reads the answer until the server closes (or `within` passes).
async fn exchange(addr: std::net::SocketAddr, request: &str, within: Duration) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(request.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(within, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

async fn slow_clients_are_cut_off_and_others_served(testdb: TestDb) {
    let f = fixture(
        testdb,
        PortalConfig {
            body_timeout: Duration::from_secs(1),
            login_attempts_per_minute: 3,
            ..common::config()
        },
    )
    .await;
    let (addr, _stop) = listen(&f, Duration::from_secs(1)).await;
    // Slow headers: a request that never finishes its headers is disconnected.
    let start = Instant::now();
    let mut loris = tokio::net::TcpStream::connect(addr).await.expect("connect");
    loris
        .write_all(b"GET /api/v1/auth/me HTTP/1.1\r\nHost: portal\r\nX-Slow: 1")
        .await
        .expect("write");
    // Meanwhile others are served.
    let ok = exchange(
        addr,
        "GET /healthz HTTP/1.1\r\nHost: portal\r\nConnection: close\r\n\r\n",
        Duration::from_secs(10),
    )
    .await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), loris.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "the slow client is disconnected");
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "not before the timeout"
    );
    // An idle kept-alive connection is closed too.
    let start = Instant::now();
    let idle = exchange(
        addr,
        "GET /healthz HTTP/1.1\r\nHost: portal\r\n\r\n",
        Duration::from_secs(10),
    )
    .await;
    assert!(idle.starts_with("HTTP/1.1 200"), "{idle}");
    assert!(start.elapsed() < Duration::from_secs(5), "closed when idle");
    // A body that never arrives ends the request with an error.
    let body = exchange(
        addr,
        "POST /api/v1/auth/login HTTP/1.1\r\nHost: portal\r\nContent-Type: application/json\r\n\
         Content-Length: 100\r\n\r\n{\"username\":",
        Duration::from_secs(10),
    )
    .await;
    assert!(body.starts_with("HTTP/1.1 400"), "{body}");
    // Over a real socket, X-Forwarded-For from an untrusted peer changes nothing.
    let mut last = String::new();
    for i in 0..4 {
        let json = r#"{"username":"ghost","password":"wrong wrong wrong"}"#;
        last = exchange(
            addr,
            &format!(
                "POST /api/v1/auth/login HTTP/1.1\r\nHost: portal\r\nConnection: close\r\n\
                 X-Forwarded-For: 192.0.2.{i}\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\n\r\n{json}",
                json.len()
            ),
            Duration::from_secs(10),
        )
        .await;
    }
    assert!(last.starts_with("HTTP/1.1 429"), "{last}");
    let audited: Vec<Value> = failures(&f).await.iter().map(details).collect();
    assert!(
        audited.iter().any(|d| d["ip"] == "127.0.0.1"),
        "{audited:?}"
    );
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(callvault_store::db::testing::TestDb::postgres().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(callvault_store::db::testing::TestDb::sqlite().await).await
            }
        }
    )*};
}

suite!(
    oversized_sign_in_input_is_refused_before_hashing_or_auditing,
    failed_sign_ins_from_one_source_are_aggregated,
    password_hashing_is_bounded,
    throttling_follows_the_real_client,
    an_attacker_cannot_lock_the_owner_out,
    exports_defuse_every_formula_trigger,
    security_headers_on_every_response_and_metrics_apart,
    tampered_media_is_refused_before_any_audio,
    slow_clients_are_cut_off_and_others_served,
);
