//! OpenID Connect single sign-on against a real provider (the npm `oidc-provider`, started by
//! `start_idp` in scripts/services.d/idp.sh; its URL in `CALLVAULT_TEST_OIDC_ISSUER`).
//!
//! The portal listens on a real port and the test is the browser: it follows redirects one by
//! one, keeps cookies per host, and submits the provider's login and consent forms.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use callvault_portal::PortalConfig;
use callvault_portal::oidc::{OidcConfig, Secret, open_login_state, seal_login_state};
use callvault_store::db::testing::TestDb;
use callvault_store::db::{AuditFilter, NewUser, UserSource, now_micros};
use common::{Fixture, IDP_PASSWORD, T};
use reqwest::StatusCode;
use serde_json::Value;
use url::Url;

// The test client of portal/tests/idp/idp.mjs.
const CLIENT_ID: &str = "callvault-portal";
const CLIENT_SECRET: &str = "callvault-test-client-secret";

const PROFILE: &str = r#"
apiVersion: callvault.io/v1alpha1
kind: AccessProfile
metadata: {name: sso-team}
spec:
  subjects: {groups: [sso-agents]}
  calls: {scope: OwnAndGroups, groups: [sso-agents], actions: {play: true}}
"#;

fn issuer() -> String {
    std::env::var("CALLVAULT_TEST_OIDC_ISSUER").expect(
        "CALLVAULT_TEST_OIDC_ISSUER is not set: `source scripts/services.sh; start_idp` first",
    )
}

struct Portal {
    f: Fixture,
    base: String,
    oidc: OidcConfig,
    _dir: tempfile::TempDir,
}

/// A portal with single sign-on, served on a loopback port.
async fn portal(testdb: TestDb) -> Portal {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let dir = tempfile::tempdir().expect("tempdir");
    let secret_file = dir.path().join("client-secret");
    std::fs::write(&secret_file, format!("{CLIENT_SECRET}\n")).expect("secret file");
    let mut oidc = OidcConfig::new(
        issuer(),
        CLIENT_ID,
        &secret_file,
        format!("{base}/api/v1/auth/oidc/callback"),
    )
    .expect("oidc config");
    oidc.scopes.push("groups".into());
    let config = PortalConfig {
        oidc: Some(oidc.clone()),
        // Failed sign-ins beyond a source's first are audited as a summary when this ends.
        failed_login_audit_window: std::time::Duration::from_millis(200),
        ..common::config()
    };
    let f = Fixture::with(testdb, config).await;
    tokio::spawn(callvault_portal::serve(
        listener,
        f.router.clone(),
        Default::default(),
        std::future::pending(),
    ));
    Portal {
        f,
        base,
        oidc,
        _dir: dir,
    }
}

/// Just enough of a browser: cookies per host (paths ignored), redirects followed by hand.
struct Browser {
    http: reqwest::Client,
    jar: HashMap<String, HashMap<String, String>>,
}

struct Page {
    status: StatusCode,
    url: Url,
    location: Option<Url>,
    body: String,
}

impl Browser {
    fn new() -> Self {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            jar: HashMap::new(),
        }
    }

    fn host(url: &Url) -> String {
        format!(
            "{}:{}",
            url.host_str().unwrap_or_default(),
            url.port_or_known_default().unwrap_or(0)
        )
    }

    fn cookie(&self, url: &Url, name: &str) -> Option<String> {
        self.jar.get(&Self::host(url))?.get(name).cloned()
    }

    fn set_cookie(&mut self, url: &Url, name: &str, value: &str) {
        self.jar
            .entry(Self::host(url))
            .or_default()
            .insert(name.to_owned(), value.to_owned());
    }

    async fn send(&mut self, req: reqwest::RequestBuilder, url: Url) -> Page {
        let cookies = self
            .jar
            .get(&Self::host(&url))
            .map(|c| {
                c.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default();
        let req = if cookies.is_empty() {
            req
        } else {
            req.header("cookie", cookies)
        };
        let resp = req.send().await.expect("request");
        for v in resp.headers().get_all("set-cookie") {
            let v = v.to_str().unwrap_or_default();
            let Some((name, value)) = v.split(';').next().and_then(|kv| kv.split_once('=')) else {
                continue;
            };
            let gone = value.is_empty()
                || v.to_ascii_lowercase().contains("max-age=0")
                || v.to_ascii_lowercase().contains("expires=thu, 01 jan 1970");
            let jar = self.jar.entry(Self::host(&url)).or_default();
            if gone {
                jar.remove(name.trim());
            } else {
                jar.insert(name.trim().to_owned(), value.to_owned());
            }
        }
        let location = resp
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .and_then(|l| url.join(l).ok());
        Page {
            status: resp.status(),
            url,
            location,
            body: resp.text().await.unwrap_or_default(),
        }
    }

    async fn get(&mut self, url: &Url) -> Page {
        self.send(self.http.get(url.clone()), url.clone()).await
    }

    async fn post_form(&mut self, url: &Url, form: &[(&str, &str)]) -> Page {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let req = self
            .http
            .post(url.clone())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        self.send(req, url.clone()).await
    }

    /// Follows redirects from `page` while they stay on `host` (the provider); returns the
    /// last page there, or the redirect that leaves it (to the portal's callback).
    async fn follow_on(&mut self, mut page: Page, host: &str) -> Page {
        for _ in 0..10 {
            match &page.location {
                Some(next) if page.status.is_redirection() && Self::host(next) == host => {
                    let next = next.clone();
                    page = self.get(&next).await;
                }
                _ => return page,
            }
        }
        panic!("too many redirects at {}", page.url);
    }
}

fn form_action(page: &Page) -> Url {
    let at = page
        .body
        .find("action=\"")
        .unwrap_or_else(|| panic!("no form on {}: {}", page.url, page.body));
    let rest = &page.body[at + 8..];
    let action = &rest[..rest.find('"').expect("closing quote")];
    page.url.join(action).expect("form action")
}

/// Signs in at the provider as `username` and returns the callback URL the provider sends the
/// browser to (not visited yet).
async fn authorize(b: &mut Browser, p: &Portal, username: &str) -> Url {
    let start = Url::parse(&format!(
        "{}/api/v1/auth/oidc/login?return_to=/recordings",
        p.base
    ))
    .expect("url");
    let r = b.get(&start).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "login: {}", r.body);
    let to_idp = r.location.clone().expect("redirect to the provider");
    let q: HashMap<_, _> = to_idp.query_pairs().into_owned().collect();
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["code_challenge_method"], "S256");
    assert!(q.contains_key("nonce") && q.contains_key("state"));
    assert!(
        b.cookie(&start, "cv_oidc").is_some(),
        "pending-login cookie"
    );
    let idp_host = Browser::host(&to_idp);
    let page = b.follow_on(r, &idp_host).await;
    assert_eq!(page.status, StatusCode::OK, "login form: {}", page.body);
    let action = form_action(&page);
    let mut page = b
        .post_form(&action, &[("login", username), ("password", IDP_PASSWORD)])
        .await;
    page = b.follow_on(page, &idp_host).await;
    if page.status == StatusCode::OK {
        // The consent form.
        assert!(page.body.contains("groups"), "scopes shown: {}", page.body);
        let action = form_action(&page);
        page = b.post_form(&action, &[]).await;
        page = b.follow_on(page, &idp_host).await;
    }
    let callback = page
        .location
        .clone()
        .unwrap_or_else(|| panic!("no redirect to the portal: {} {}", page.status, page.body));
    assert!(
        callback
            .as_str()
            .starts_with(&format!("{}/api/v1/auth/oidc/callback?", p.base)),
        "{callback}"
    );
    callback
}

async fn api(b: &mut Browser, p: &Portal, path: &str) -> (StatusCode, Value) {
    let url = Url::parse(&format!("{}{path}", p.base)).expect("url");
    let r = b.get(&url).await;
    (
        r.status,
        serde_json::from_str(&r.body).unwrap_or(Value::Null),
    )
}

async fn audit(p: &Portal) -> Vec<(String, String, Value)> {
    p.f.db
        .query_audit(T, &AuditFilter::default(), 10_000)
        .await
        .expect("audit")
        .into_iter()
        .map(|e| {
            (
                e.actor,
                e.action,
                serde_json::from_str(&e.details).unwrap_or(Value::Null),
            )
        })
        .collect()
}

async fn sign_in_provisions_the_user_and_groups_claim(p: Portal) {
    p.f.profiles(PROFILE);
    let team = p.f.group("sso-agents").await;
    let others = p.f.group("others").await;
    let colleague = p.f.user("colleague", &["sso-agents"]).await;
    let plain = common::audio(2000, 1);
    let team_call =
        p.f.recording(Some(colleague), vec![team], "100", "200", &plain)
            .await;
    let other_call =
        p.f.recording(None, vec![others], "300", "400", &plain)
            .await;

    let mut b = Browser::new();
    // The sign-in page learns of the provider without a session: its name (by default the
    // issuer's host) and where its button starts.
    let (s, providers) = api(&mut b, &p, "/api/v1/auth/providers").await;
    assert_eq!(s, StatusCode::OK, "{providers}");
    let host = issuer().split_once("://").expect("url").1.to_owned();
    assert_eq!(
        providers,
        serde_json::json!({"local": true, "oidc": {"display_name": host, "login_url": "/api/v1/auth/oidc/login"}})
    );
    let callback = authorize(&mut b, &p, "alice").await;
    let done = b.get(&callback).await;
    assert_eq!(
        done.status,
        StatusCode::SEE_OTHER,
        "callback: {}",
        done.body
    );
    assert_eq!(
        done.location.as_ref().map(Url::path),
        Some("/recordings"),
        "back to the page the sign-in started from"
    );
    let base = Url::parse(&p.base).expect("base");
    assert!(b.cookie(&base, "cv_session").is_some(), "session cookie");
    assert!(
        b.cookie(&base, "cv_oidc").is_none(),
        "pending login cleared"
    );

    // The same cookie session as a password sign-in; the AccessProfile naming the claimed
    // group applies.
    let (s, me) = api(&mut b, &p, "/api/v1/auth/me").await;
    assert_eq!(s, StatusCode::OK, "{me}");
    assert_eq!(me["user"]["username"], "alice");
    assert_eq!(me["user"]["source"], "oidc");
    assert_eq!(me["user"]["email"], "alice@example.test");
    assert_eq!(me["scope"], "OwnAndGroups");
    assert_eq!(me["profiles"], serde_json::json!(["sso-team"]));
    let (s, list) = api(&mut b, &p, "/api/v1/recordings").await;
    assert_eq!(s, StatusCode::OK, "{list}");
    let ids: Vec<&str> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert!(ids.contains(&team_call.id.to_string().as_str()), "{list}");
    assert!(!ids.contains(&other_call.id.to_string().as_str()), "{list}");

    let alice =
        p.f.db
            .user_by_username(T, "alice")
            .await
            .expect("db")
            .expect("alice");
    assert_eq!(alice.source, UserSource::Oidc);
    assert_eq!(alice.external_id.as_deref(), Some("sub-0001"));
    assert!(alice.password_hash.is_none());
    let groups: Vec<String> =
        p.f.db
            .user_groups(T, alice.id)
            .await
            .expect("groups")
            .into_iter()
            .map(|g| g.name)
            .collect();
    assert_eq!(groups, vec!["everyone", "sso-agents"]);

    // Unsafe requests need the CSRF token of this session, as after a password sign-in.
    let csrf = b.cookie(&base, "cv_csrf").expect("csrf cookie");
    let logout = Url::parse(&format!("{}/api/v1/auth/logout", p.base)).expect("url");
    let r = b.send(b.http.post(logout.clone()), logout.clone()).await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "no CSRF header: {}",
        r.body
    );

    // The claim is authoritative: a membership it does not list goes at the next sign-in.
    let stale = p.f.group("stale").await;
    p.f.db.add_member(T, stale, alice.id).await.expect("member");
    let mut b2 = Browser::new();
    let callback = authorize(&mut b2, &p, "alice").await;
    assert_eq!(b2.get(&callback).await.status, StatusCode::SEE_OTHER);
    let groups: Vec<String> =
        p.f.db
            .user_groups(T, alice.id)
            .await
            .expect("groups")
            .into_iter()
            .map(|g| g.name)
            .collect();
    assert_eq!(groups, vec!["everyone", "sso-agents"]);
    let users: Vec<String> =
        p.f.db
            .list_users(T)
            .await
            .expect("users")
            .into_iter()
            .map(|u| u.username)
            .collect();
    assert_eq!(
        users.iter().filter(|u| *u == "alice").count(),
        1,
        "{users:?}"
    );

    let r = b
        .send(
            b.http.post(logout.clone()).header("x-csrf-token", csrf),
            logout,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    // Bob's claim names no group: no profile applies to him.
    let mut b3 = Browser::new();
    let callback = authorize(&mut b3, &p, "bob").await;
    assert_eq!(b3.get(&callback).await.status, StatusCode::SEE_OTHER);
    let (_, me) = api(&mut b3, &p, "/api/v1/auth/me").await;
    assert_eq!(me["user"]["username"], "bob");
    assert_eq!(me["scope"], "None");

    let log = audit(&p).await;
    let oidc_logins = log
        .iter()
        .filter(|(a, act, d)| a == "alice" && act == "login" && d["method"] == "oidc")
        .count();
    assert_eq!(oidc_logins, 2, "{log:?}");
    assert!(
        log.iter()
            .any(|(a, act, d)| a == "alice" && act == "user.create" && d["source"] == "oidc")
    );
    assert!(log.iter().any(|(a, act, d)| a == "alice"
        && act == "user.groups"
        && d["removed"] == serde_json::json!(["stale"])));
}

async fn forged_or_stale_logins_are_refused(p: Portal) {
    let base = Url::parse(&p.base).expect("base");
    let mut b = Browser::new();
    let callback = authorize(&mut b, &p, "alice").await;
    let pending = b.cookie(&base, "cv_oidc").expect("pending login");
    let query: Vec<(String, String)> = callback.query_pairs().into_owned().collect();
    let with_state = |state: &str| {
        let mut u = callback.clone();
        u.query_pairs_mut().clear().extend_pairs(
            query
                .iter()
                .map(|(k, v)| (k.as_str(), if k == "state" { state } else { v.as_str() })),
        );
        u
    };
    let refused = |r: &Page| {
        let v: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
        (r.status, v["code"].as_str().unwrap_or_default().to_owned())
    };

    // Another state than the one this browser started with.
    let r = b.get(&with_state("0123456789abcdef")).await;
    assert_eq!(
        refused(&r),
        (StatusCode::BAD_REQUEST, "invalid_request".into()),
        "{}",
        r.body
    );
    assert!(r.body.contains("sign-in state"), "{}", r.body);
    // The pending-login cookie altered (its signature no longer holds).
    let mut chars: Vec<char> = pending.chars().collect();
    chars[5] = if chars[5] == 'A' { 'B' } else { 'A' };
    b.set_cookie(&base, "cv_oidc", &chars.into_iter().collect::<String>());
    let r = b.get(&callback).await;
    assert_eq!(refused(&r).0, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(r.body.contains("sign-in state"), "{}", r.body);
    // Expired: the same login, correctly signed, but past its deadline.
    let login = open_login_state(&p.oidc, &pending, 0).expect("genuine cookie opens");
    let now = now_micros() / 1_000_000;
    let expired = callvault_portal::oidc::LoginState {
        expires: now - 1,
        ..login.clone()
    };
    b.set_cookie(&base, "cv_oidc", &seal_login_state(&p.oidc, &expired));
    let r = b.get(&callback).await;
    assert_eq!(refused(&r).0, StatusCode::BAD_REQUEST, "{}", r.body);
    // Another browser (login CSRF: someone else's callback URL) has no pending login.
    let mut stranger = Browser::new();
    let r = stranger.get(&callback).await;
    assert_eq!(refused(&r).0, StatusCode::BAD_REQUEST, "{}", r.body);
    // A key that is not the portal's cannot forge one either.
    let other = OidcConfig {
        client_secret: Secret::new("not the client secret"),
        ..p.oidc.clone()
    };
    b.set_cookie(&base, "cv_oidc", &seal_login_state(&other, &login));
    assert_eq!(refused(&b.get(&callback).await).0, StatusCode::BAD_REQUEST);
    assert!(
        b.cookie(&base, "cv_session").is_none(),
        "no session from refused callbacks"
    );

    // The genuine login still completes: the refusals were about the state alone.
    b.set_cookie(&base, "cv_oidc", &pending);
    let r = b.get(&callback).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert!(b.cookie(&base, "cv_session").is_some());
    // A code works once.
    b.set_cookie(&base, "cv_oidc", &pending);
    let r = b.get(&callback).await;
    assert_eq!(
        refused(&r),
        (StatusCode::UNAUTHORIZED, "invalid_credentials".into()),
        "{}",
        r.body
    );

    // A genuine state whose nonce is not the one the ID token carries.
    let mut b = Browser::new();
    let callback = authorize(&mut b, &p, "bob").await;
    let pending = b.cookie(&base, "cv_oidc").expect("pending login");
    let login = open_login_state(&p.oidc, &pending, 0).expect("opens");
    let wrong = callvault_portal::oidc::LoginState {
        nonce: "f".repeat(64),
        ..login
    };
    b.set_cookie(&base, "cv_oidc", &seal_login_state(&p.oidc, &wrong));
    let r = b.get(&callback).await;
    assert_eq!(
        refused(&r),
        (StatusCode::UNAUTHORIZED, "invalid_credentials".into()),
        "{}",
        r.body
    );
    assert!(r.body.contains("nonce"), "{}", r.body);
    assert!(b.cookie(&base, "cv_session").is_none());
    assert!(
        p.f.db
            .user_by_username(T, "bob")
            .await
            .expect("db")
            .is_none(),
        "no user from a refused sign-in"
    );

    // Each refusal is audited: the first of the source at once, the rest in its summary.
    let failed = |log: &[(String, String, Value)]| -> u64 {
        log.iter()
            .filter(|(_, act, d)| act == "login.failed" && d["method"] == "oidc")
            .map(|(_, _, d)| d["attempts"].as_u64().unwrap_or(1))
            .sum()
    };
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while failed(&audit(&p).await) < 7 && std::time::Instant::now() < until {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let log = audit(&p).await;
    assert_eq!(failed(&log), 7, "{log:?}");
}

/// Users provisioned by SCIM from the same directory sign in through the provider; a local
/// account of the same name is never taken over; a deprovisioned account stays out.
async fn provisioned_users_sign_in_through_the_provider(p: Portal) {
    p.f.profiles(PROFILE);
    let refused = |r: &Page| {
        let v: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
        (r.status, v["code"].as_str().unwrap_or_default().to_owned())
    };
    let local_bob = p.f.user("bob", &[]).await;
    let mut b = Browser::new();
    let callback = authorize(&mut b, &p, "bob").await;
    let r = b.get(&callback).await;
    assert_eq!(
        refused(&r),
        (StatusCode::CONFLICT, "conflict".to_owned()),
        "{}",
        r.body
    );
    assert_eq!(
        p.f.db
            .user(T, local_bob)
            .await
            .expect("db")
            .expect("bob")
            .source,
        UserSource::Local
    );

    let mut nu = NewUser::local("alice", "Alice Provisioned");
    nu.source = UserSource::Scim;
    nu.external_id = Some("directory-alice".into());
    let alice = p.f.db.create_user(T, &nu).await.expect("scim user").id;
    let mut b = Browser::new();
    let callback = authorize(&mut b, &p, "alice").await;
    let r = b.get(&callback).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let (s, me) = api(&mut b, &p, "/api/v1/auth/me").await;
    assert_eq!(s, StatusCode::OK, "{me}");
    assert_eq!(
        me["user"]["id"],
        alice.to_string(),
        "the provisioned account"
    );
    assert_eq!(me["user"]["source"], "scim");
    assert_eq!(
        me["user"]["display_name"], "Alice Provisioned",
        "SCIM owns the profile"
    );
    assert_eq!(me["scope"], "OwnAndGroups", "{me}");
    assert_eq!(p.f.db.list_users(T).await.expect("users").len(), 2);

    p.f.db
        .deprovision_user(T, alice)
        .await
        .expect("deprovision");
    let mut b = Browser::new();
    let callback = authorize(&mut b, &p, "alice").await;
    let r = b.get(&callback).await;
    assert_eq!(
        refused(&r),
        (StatusCode::FORBIDDEN, "account_disabled".to_owned()),
        "{}",
        r.body
    );
    let base = Url::parse(&p.base).expect("base");
    assert!(b.cookie(&base, "cv_session").is_none());
    assert!(
        p.f.db.user_groups(T, alice).await.expect("db").is_empty(),
        "the groups claim does not bring memberships back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_oidc_signs_in_provisioned_users_only() {
    provisioned_users_sign_in_through_the_provider(portal(TestDb::postgres().await).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_oidc_sign_in_provisions_the_user_and_groups_claim() {
    sign_in_provisions_the_user_and_groups_claim(portal(TestDb::postgres().await).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_oidc_sign_in_provisions_the_user_and_groups_claim() {
    sign_in_provisions_the_user_and_groups_claim(portal(TestDb::sqlite().await).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_oidc_refuses_forged_or_stale_state_and_wrong_nonce() {
    forged_or_stale_logins_are_refused(portal(TestDb::postgres().await).await).await;
}
