//! SCIM 2.0 provisioning at `/scim/v2`, as an identity provider drives it, on real PostgreSQL
//! and SQLite.

mod common;

use axum::http::{Method, StatusCode};
use callvault_portal::PortalConfig;
use callvault_portal::oidc::Secret;
use callvault_store::db::testing::TestDb;
use callvault_store::db::{AuditFilter, UserSource};
use common::{Client, Fixture, Resp, T};
use serde_json::{Value, json};
use uuid::Uuid;

const TOKEN: &str = "scim-test-token-0123456789abcdef0123456789";
const PATCH: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

const PROFILE: &str = r#"
apiVersion: callvault.io/v1alpha1
kind: AccessProfile
metadata: {name: provisioned}
spec:
  subjects: {groups: [scim-team]}
  calls: {scope: All, actions: {play: true}}
"#;

async fn fixture(testdb: TestDb) -> Fixture {
    Fixture::with(
        testdb,
        PortalConfig {
            scim_token: Some(Secret::new(TOKEN)),
            ..common::config()
        },
    )
    .await
}

struct Scim(Client);

impl Scim {
    async fn call(&mut self, method: Method, path: &str, body: Option<Value>) -> Resp {
        self.0
            .send(
                method,
                &format!("/scim/v2{path}"),
                body,
                &[("authorization", &format!("Bearer {TOKEN}"))],
            )
            .await
    }

    async fn get(&mut self, path: &str) -> (StatusCode, Value) {
        let r = self.call(Method::GET, path, None).await;
        (r.status, r.json())
    }

    async fn send(&mut self, method: Method, path: &str, body: Value) -> (StatusCode, Value) {
        let r = self.call(method, path, Some(body)).await;
        (r.status, r.json())
    }
}

/// A web session of a provisioned user, as single sign-on would start it (they have no password).
async fn session_of(f: &Fixture, user: Uuid) -> Client {
    use callvault_portal::auth::{new_token, token_hash};
    let token = new_token();
    let expires = chrono::Utc::now().timestamp_micros() + 3_600_000_000;
    f.db.create_session(T, &token_hash(&token), user, expires, "127.0.0.1", "test")
        .await
        .expect("session");
    let mut c = Client::new(f.router.clone());
    c.cookie = Some(format!(
        "{}={T}.{token}",
        callvault_portal::auth::SESSION_COOKIE
    ));
    c
}

fn is_error(v: &Value, status: u16) -> bool {
    v["schemas"][0] == "urn:ietf:params:scim:api:messages:2.0:Error"
        && v["status"].as_str() == Some(status.to_string().as_str())
}

fn names(list: &Value) -> Vec<String> {
    list["Resources"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r["userName"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

async fn provisioning(f: Fixture) {
    f.profiles(PROFILE);
    let mut scim = Scim(Client::new(f.router.clone()));

    // The token is required and must be the right one; errors use the SCIM error schema.
    let mut anon = Client::new(f.router.clone());
    let r = anon.get("/scim/v2/Users").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(is_error(&r.json(), 401), "{}", r.json());
    let r = anon
        .send(
            Method::GET,
            "/scim/v2/Users",
            None,
            &[("authorization", "Bearer wrong")],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/scim+json")
    );

    // Discovery.
    let (s, spc) = scim.get("/ServiceProviderConfig").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(spc["patch"]["supported"], true);
    assert_eq!(spc["authenticationSchemes"][0]["type"], "oauthbearertoken");
    let (_, types) = scim.get("/ResourceTypes").await;
    assert_eq!(types["totalResults"], 2);
    let (_, schemas) = scim.get("/Schemas").await;
    assert_eq!(
        schemas["Resources"][0]["id"],
        "urn:ietf:params:scim:schemas:core:2.0:User"
    );

    // Create a user with numbers: they associate calls with the user.
    let (s, carol) = scim
        .send(
            Method::POST,
            "/Users",
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": "carol", "externalId": "ext-carol",
                "name": {"formatted": "Carol Provisioned"},
                "emails": [{"value": "carol@example.test", "type": "work", "primary": true}],
                "phoneNumbers": [{"value": "+4930111", "type": "work"}, {"value": "2001"}],
                "active": true,
            }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{carol}");
    let carol_id: Uuid = carol["id"].as_str().expect("id").parse().expect("uuid");
    assert_eq!(carol["displayName"], "Carol Provisioned");
    assert_eq!(carol["emails"][0]["value"], "carol@example.test");
    assert_eq!(carol["active"], true);
    let row = f.db.user(T, carol_id).await.expect("db").expect("row");
    assert_eq!(row.source, UserSource::Scim);
    assert_eq!(row.external_id.as_deref(), Some("ext-carol"));
    assert_eq!(
        f.db.extension_owner(T, "2001").await.expect("db"),
        Some(carol_id)
    );
    assert_eq!(
        f.db.extension_owner(T, "+4930111").await.expect("db"),
        Some(carol_id)
    );

    // Uniqueness of names and numbers.
    let (s, e) = scim
        .send(Method::POST, "/Users", json!({"userName": "carol"}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(is_error(&e, 409) && e["scimType"] == "uniqueness", "{e}");
    let (s, e) = scim
        .send(
            Method::POST,
            "/Users",
            json!({"userName": "eve", "phoneNumbers": [{"value": "2001"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    assert!(f.db.user_by_username(T, "eve").await.expect("db").is_none());
    let (s, e) = scim
        .send(Method::POST, "/Users", json!({"displayName": "no name"}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(e["scimType"], "invalidValue");
    let r = scim
        .0
        .send(
            Method::POST,
            "/scim/v2/Users",
            None,
            &[("authorization", &format!("Bearer {TOKEN}"))],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["scimType"], "invalidSyntax");

    // Filter and pagination.
    for n in ["u01", "u02", "u03", "u04"] {
        let (s, b) = scim
            .send(Method::POST, "/Users", json!({"userName": n}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
    }
    let (s, list) = scim.get("/Users?filter=userName%20eq%20%22CAROL%22").await;
    assert_eq!(s, StatusCode::OK, "{list}");
    assert_eq!(list["totalResults"], 1);
    assert_eq!(names(&list), vec!["carol"]);
    let (_, list) = scim
        .get("/Users?filter=externalId%20eq%20%22ext-carol%22")
        .await;
    assert_eq!(names(&list), vec!["carol"]);
    let (_, list) = scim.get("/Users?startIndex=2&count=2").await;
    assert_eq!(list["totalResults"], 5);
    assert_eq!(list["startIndex"], 2);
    assert_eq!(list["itemsPerPage"], 2);
    assert_eq!(names(&list), vec!["u01", "u02"]);
    let (_, list) = scim.get("/Users?startIndex=5&count=10").await;
    assert_eq!(names(&list), vec!["u04"]);
    let (s, e) = scim.get("/Users?filter=userName%20sw%20%22c%22").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(e["scimType"], "invalidFilter");
    let (s, e) = scim.get(&format!("/Users/{}", Uuid::new_v4())).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(is_error(&e, 404), "{e}");

    // Replace: omitted numbers are released, new ones taken.
    let (s, carol) = scim
        .send(
            Method::PUT,
            &format!("/Users/{carol_id}"),
            json!({"userName": "carol", "externalId": "ext-carol", "displayName": "Carol R.",
                   "phoneNumbers": [{"value": "2002"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{carol}");
    assert_eq!(carol["displayName"], "Carol R.");
    assert_eq!(f.db.extension_owner(T, "2001").await.expect("db"), None);
    assert_eq!(
        f.db.extension_owner(T, "2002").await.expect("db"),
        Some(carol_id)
    );

    // PATCH: numbers added and removed one by one, and the name.
    let (s, carol) = scim
        .send(
            Method::PATCH,
            &format!("/Users/{carol_id}"),
            json!({"schemas": [PATCH], "Operations": [
                {"op": "add", "path": "phoneNumbers", "value": [{"value": "2003"}]},
                {"op": "remove", "path": "phoneNumbers[value eq \"2002\"]"},
                {"op": "replace", "path": "displayName", "value": "Carol P."},
            ]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{carol}");
    assert_eq!(carol["displayName"], "Carol P.");
    assert_eq!(
        carol["phoneNumbers"],
        json!([{"value": "2003", "type": "work"}])
    );
    assert_eq!(f.db.extension_owner(T, "2002").await.expect("db"), None);
    let (s, e) = scim
        .send(
            Method::PATCH,
            &format!("/Users/{carol_id}"),
            json!({"Operations": []}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "a PATCH names its schema: {e}");

    // Groups: members set by the provider give AccessProfiles naming the group to the
    // provider's accounts; a local password account's rights come from an admin, so SCIM
    // never widens them.
    let dave_id = f.user("dave", &[]).await;
    let mut dave = f.login("dave").await;
    let me = dave.get("/api/v1/auth/me").await.json();
    assert_eq!(me["scope"], "None");
    let (s, frank) = scim
        .send(Method::POST, "/Users", json!({"userName": "frank"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{frank}");
    let frank_id: Uuid = frank["id"].as_str().expect("id").parse().expect("uuid");
    let mut frank = session_of(&f, frank_id).await;
    let (s, group) = scim
        .send(
            Method::POST,
            "/Groups",
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                   "displayName": "scim-team", "externalId": "ext-team",
                   "members": [{"value": carol_id.to_string()}]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{group}");
    let gid = group["id"].as_str().expect("id").to_owned();
    assert_eq!(group["members"][0]["value"], carol_id.to_string());
    let (s, e) = scim
        .send(
            Method::PATCH,
            &format!("/Groups/{gid}"),
            json!({"schemas": [PATCH], "Operations": [
                {"op": "add", "path": "members", "value": [{"value": dave_id.to_string()}]}]}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{e}");
    let detail = e["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("\"dave\"") && detail.contains("call scope All"),
        "the refusal names the account and the right: {e}"
    );
    let me = dave.get("/api/v1/auth/me").await.json();
    assert_eq!(me["scope"], "None");
    let (s, group) = scim
        .send(
            Method::PATCH,
            &format!("/Groups/{gid}"),
            json!({"schemas": [PATCH], "Operations": [
                {"op": "add", "path": "members", "value": [{"value": frank_id.to_string()}]},
                {"op": "remove", "path": format!("members[value eq \"{carol_id}\"]")},
            ]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{group}");
    let members: Vec<&str> = group["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| m["value"].as_str())
        .collect();
    assert_eq!(members, vec![frank_id.to_string().as_str()]);
    let me = frank.get("/api/v1/auth/me").await.json();
    assert_eq!(me["scope"], "All", "{me}");
    assert_eq!(me["profiles"], json!(["provisioned"]));
    let (_, u) = scim.get(&format!("/Users/{frank_id}")).await;
    assert_eq!(u["groups"][0]["display"], "scim-team");
    // A list page shows each user exactly as their own resource does (numbers and groups
    // are read for the whole page at once, and must land on the right users).
    let (_, all) = scim.get("/Users?count=100").await;
    let listed = all["Resources"].as_array().expect("Resources");
    assert!(listed.len() >= 2, "{all}");
    assert!(
        listed
            .iter()
            .any(|r| r["groups"].as_array().is_some_and(|g| !g.is_empty()))
    );
    assert!(
        listed
            .iter()
            .any(|r| r["phoneNumbers"].as_array().is_some_and(|n| !n.is_empty()))
    );
    for r in listed {
        let (_, one) = scim
            .get(&format!("/Users/{}", r["id"].as_str().expect("id")))
            .await;
        assert_eq!(r, &one, "the list's resource equals the user's own");
    }
    let (_, list) = scim
        .get("/Groups?filter=displayName%20eq%20%22scim-team%22")
        .await;
    assert_eq!(list["totalResults"], 1);
    let (s, e) = scim
        .send(
            Method::PATCH,
            &format!("/Groups/{gid}"),
            json!({"schemas": [PATCH], "Operations": [
                {"op": "add", "path": "members", "value": [{"value": Uuid::new_v4().to_string()}]}]}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "unknown member: {e}");

    // Renamed by the provider: the profile naming the old name no longer applies.
    let (s, group) = scim
        .send(
            Method::PATCH,
            &format!("/Groups/{gid}"),
            json!({"schemas": [PATCH], "Operations": [{"op": "replace", "value": {"displayName": "scim-renamed"}}]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{group}");
    assert_eq!(group["displayName"], "scim-renamed");
    let me = frank.get("/api/v1/auth/me").await.json();
    assert_eq!(me["scope"], "None");
    // A signed-in user's session is no SCIM credential.
    let r = frank.get("/scim/v2/Users").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // Members replaced as a whole.
    let (s, group) = scim
        .send(
            Method::PATCH,
            &format!("/Groups/{gid}"),
            json!({"schemas": [PATCH], "Operations": [
                {"op": "replace", "path": "members", "value": [{"value": carol_id.to_string()}]}]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{group}");
    assert_eq!(
        group["members"].as_array().map(Vec::len),
        Some(1),
        "{group}"
    );
    assert_eq!(group["members"][0]["value"], carol_id.to_string());
    let members =
        f.db.group_members(T, gid.parse().expect("uuid"))
            .await
            .expect("db");
    assert_eq!(
        members.iter().map(|u| u.id).collect::<Vec<_>>(),
        vec![carol_id]
    );

    // Deactivation (the string boolean some providers send) ends sessions and sign-in.
    let (s, u) = scim
        .send(
            Method::PATCH,
            &format!("/Users/{dave_id}"),
            json!({"schemas": [PATCH], "Operations": [{"op": "replace", "value": {"active": "False"}}]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{u}");
    assert_eq!(u["active"], false);
    let r = dave.get("/api/v1/auth/me").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.json());
    let (s, _) = Client::new(f.router.clone())
        .json(
            Method::POST,
            "/api/v1/auth/login",
            json!({"username": "dave", "password": common::PASSWORD}),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "a disabled account cannot sign in"
    );

    // The externalId filter matches users of every source, ordered by name and paged; a
    // single sign-on account may carry the same id as a provisioned one.
    let mut nu = callvault_store::db::NewUser::local("aaron-sso", "Aaron");
    nu.source = UserSource::Oidc;
    nu.external_id = Some("ext-carol".into());
    let aaron = f.db.create_user(T, &nu).await.expect("oidc user");
    let ext_carol = "/Users?filter=externalId%20eq%20%22ext-carol%22";
    let (_, list) = scim.get(ext_carol).await;
    assert_eq!(list["totalResults"], 2, "{list}");
    assert_eq!(names(&list), vec!["aaron-sso", "carol"]);
    let (_, list) = scim.get(&format!("{ext_carol}&startIndex=2&count=1")).await;
    assert_eq!(list["totalResults"], 2, "{list}");
    assert_eq!(names(&list), vec!["carol"]);
    let (_, list) = scim
        .get("/Users?filter=externalId%20eq%20%22EXT-CAROL%22")
        .await;
    assert_eq!(list["totalResults"], 0, "externalId is case-exact: {list}");

    // DELETE deprovisions: gone for SCIM, numbers and groups released, sessions ended; the
    // account row stays (disabled) so that its calls stay attributable.
    let mut carol_web = session_of(&f, carol_id).await;
    assert_eq!(
        carol_web.get("/api/v1/auth/me").await.status,
        StatusCode::OK
    );
    let r = scim
        .call(Method::DELETE, &format!("/Users/{carol_id}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let (s, e) = scim.get(&format!("/Users/{carol_id}")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(is_error(&e, 404), "{e}");
    for (method, body) in [
        (Method::PUT, json!({"userName": "carol"})),
        (
            Method::PATCH,
            json!({"schemas": [PATCH], "Operations": [{"op": "replace", "path": "active", "value": true}]}),
        ),
    ] {
        let (s, e) = scim
            .send(method.clone(), &format!("/Users/{carol_id}"), body)
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{method} after delete: {e}");
    }
    let r = scim
        .call(Method::DELETE, &format!("/Users/{carol_id}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let (_, list) = scim.get("/Users?filter=userName%20eq%20%22carol%22").await;
    assert_eq!(list["totalResults"], 0, "{list}");
    let (_, list) = scim.get(ext_carol).await;
    assert_eq!(list["totalResults"], 1, "{list}");
    assert_eq!(names(&list), vec!["aaron-sso"]);
    let (_, list) = scim.get(&format!("{ext_carol}&count=0")).await;
    assert_eq!(list["totalResults"], 1, "{list}");
    assert_eq!(list["itemsPerPage"], 0, "{list}");
    f.db.deprovision_user(T, aaron.id)
        .await
        .expect("deprovision");
    let (_, list) = scim.get(ext_carol).await;
    assert_eq!(list["totalResults"], 0, "{list}");
    let (_, list) = scim.get("/Users").await;
    assert!(!names(&list).contains(&"carol".to_owned()), "{list}");
    let row = f.db.user(T, carol_id).await.expect("db").expect("row kept");
    assert!(row.disabled);
    assert_eq!(f.db.extension_owner(T, "2003").await.expect("db"), None);
    assert!(f.db.user_groups(T, carol_id).await.expect("db").is_empty());
    assert_eq!(
        carol_web.get("/api/v1/auth/me").await.status,
        StatusCode::UNAUTHORIZED
    );
    let (_, group) = scim.get(&format!("/Groups/{gid}")).await;
    assert_eq!(group["members"], json!([]), "{group}");
    let (s, e) = scim
        .send(
            Method::PATCH,
            &format!("/Groups/{gid}"),
            json!({"schemas": [PATCH], "Operations": [
                {"op": "add", "path": "members", "value": [{"value": carol_id.to_string()}]}]}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "a deprovisioned member: {e}");

    // Provisioned again under the same name: the same account comes back, enabled.
    let (s, back) = scim
        .send(
            Method::POST,
            "/Users",
            json!({"userName": "carol", "phoneNumbers": [{"value": "2003"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{back}");
    assert_eq!(back["id"], carol_id.to_string());
    assert_eq!(back["active"], true);
    assert_eq!(
        f.db.extension_owner(T, "2003").await.expect("db"),
        Some(carol_id)
    );
    assert!(
        !f.db
            .user(T, carol_id)
            .await
            .expect("db")
            .expect("row")
            .disabled
    );

    let r = scim
        .call(Method::DELETE, &format!("/Groups/{gid}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let (s, e) = scim.get(&format!("/Groups/{gid}")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(is_error(&e, 404));

    // Every change, and every refused widening, is in the audit trail, by `scim`.
    let actions: Vec<String> =
        f.db.query_audit(T, &AuditFilter::default(), 10_000)
            .await
            .expect("audit")
            .into_iter()
            .filter(|e| e.actor == "scim")
            .map(|e| e.action)
            .collect();
    for a in [
        "scim.user.create",
        "scim.user.replace",
        "scim.user.patch",
        "scim.user.delete",
        "scim.user.reprovision",
        "scim.group.create",
        "scim.group.patch",
        "scim.group.delete",
    ] {
        assert!(actions.iter().any(|x| x == a), "{a} in {actions:?}");
    }
    // Creates of six users, one replace, two user patches, one delete, one return, one
    // group create, three group patches (the refused ones changed nothing), one group delete,
    // and the refused widening of a local account.
    assert_eq!(
        actions.iter().filter(|a| *a == "scim.refused").count(),
        1,
        "{actions:?}"
    );
    assert_eq!(
        actions.len(),
        6 + 1 + 2 + 1 + 1 + 1 + 3 + 1 + 1,
        "{actions:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_scim_provisioning() {
    provisioning(fixture(TestDb::postgres().await).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_scim_provisioning() {
    provisioning(fixture(TestDb::sqlite().await).await).await;
}

/// With no token configured, no token works: 401 as for a wrong one.
#[tokio::test]
async fn scim_is_off_without_a_token() {
    let f = Fixture::sqlite().await;
    let r = Client::new(f.router.clone())
        .send(
            Method::GET,
            "/scim/v2/Users",
            None,
            &[("authorization", &format!("Bearer {TOKEN}"))],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(is_error(&r.json(), 401));
}

/// An identity provider cannot delete a user on legal hold: 409 with the reason, and the
/// account keeps its sign-in, groups and numbers. A userName taken in another case is refused
/// as not unique.
async fn legal_hold_and_unique_names(f: Fixture) {
    let mut scim = Scim(Client::new(f.router.clone()));
    let (s, held) = scim
        .send(
            Method::POST,
            "/Users",
            json!({"userName": "held", "phoneNumbers": [{"value": "2101"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{held}");
    let id: Uuid = held["id"].as_str().expect("id").parse().expect("uuid");
    f.db.set_user_legal_hold(T, id, true).await.expect("hold");
    let r = scim
        .call(Method::DELETE, &format!("/Users/{id}"), None)
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let e = r.json();
    assert!(is_error(&e, 409), "{e}");
    assert!(
        e["detail"]
            .as_str()
            .is_some_and(|d| d.contains("legal hold")),
        "{e}"
    );
    let (s, still) = scim.get(&format!("/Users/{id}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(still["active"], true);
    assert_eq!(f.db.extension_owner(T, "2101").await.expect("db"), Some(id));

    let (s, e) = scim
        .send(Method::POST, "/Users", json!({"userName": "HELD"}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    assert_eq!(e["scimType"], "uniqueness");

    f.db.set_user_legal_hold(T, id, false).await.expect("lift");
    let r = scim
        .call(Method::DELETE, &format!("/Users/{id}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_scim_legal_hold_and_unique_names() {
    legal_hold_and_unique_names(fixture(TestDb::postgres().await).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_scim_legal_hold_and_unique_names() {
    legal_hold_and_unique_names(fixture(TestDb::sqlite().await).await).await;
}
