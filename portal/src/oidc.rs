//! OpenID Connect single sign-on: the authorization code flow with PKCE, `state` and `nonce`.
//!
//! `GET /api/v1/auth/oidc/login` sends the browser to the provider; the pending login (state,
//! nonce, PKCE verifier, where to go afterwards) travels in a short-lived HttpOnly cookie signed
//! with a key derived from the client secret, so any portal replica can finish it.
//! `GET /api/v1/auth/oidc/callback` checks that cookie against `state`, redeems the code, verifies
//! the ID token (RS256 signature against the provider's JWKS; `iss`, `aud`/`azp`, `exp`, `nonce`),
//! creates or updates the user (source `oidc`, keyed by the subject), makes the groups claim
//! the user's memberships, and starts the same cookie session as a password sign-in.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use callvault_store::db::{NewAuditEntry, NewUser, User, UserProfile, UserSource};
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::RwLock;

use crate::AppState;
use crate::api::extract::Query;
use crate::api::{failed_sign_in, sign_in};
use crate::auth::Failure;
use crate::auth::{cookie_value, new_token, secret_eq};
use crate::config::ConfigError;
use crate::error::{ApiError, ApiResult, Code};
use crate::net::ClientAddr;

/// Name of the cookie carrying a pending login.
pub const LOGIN_COOKIE: &str = "cv_oidc";
const COOKIE_PATH: &str = "/api/v1/auth/oidc";
/// Clock difference tolerated on `exp`, `iat` and `nbf`.
const LEEWAY_SECS: i64 = 60;

/// A secret setting: compared and cloned like a string, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// Reads a secret from a file (trailing newline dropped); `setting` names it in errors.
    pub fn from_file(setting: &'static str, path: &Path) -> Result<Self, ConfigError> {
        let s = std::fs::read_to_string(path).map_err(|e| ConfigError {
            setting,
            reason: format!("cannot read {}: {e}", path.display()),
        })?;
        Ok(Secret(s.trim_end_matches(['\r', '\n']).to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Settings of single sign-on with one OpenID Connect provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcConfig {
    /// The provider's issuer URL (discovery at `<issuer>/.well-known/openid-configuration`).
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Secret,
    /// This portal's callback as registered at the provider (`…/api/v1/auth/oidc/callback`).
    pub redirect_url: String,
    /// Scopes requested; `openid` is always among them.
    pub scopes: Vec<String>,
    /// The claim that names the user (e.g. `preferred_username`, `email`).
    pub username_claim: String,
    /// The claim listing the user's groups; `None` leaves memberships alone.
    pub groups_claim: Option<String>,
    /// Where the browser goes after signing in when the login named no page.
    pub post_login_redirect: String,
    /// How long a started login may take at the provider.
    pub login_ttl: Duration,
    /// The provider as the sign-in page names it ("Sign in with <display_name>"); the issuer's
    /// host unless set.
    pub display_name: String,
}

impl OidcConfig {
    /// Settings with the usual defaults; the client secret is read from `client_secret_file`.
    pub fn new(
        issuer: impl Into<String>,
        client_id: impl Into<String>,
        client_secret_file: &Path,
        redirect_url: impl Into<String>,
    ) -> Result<Self, ConfigError> {
        let issuer: String = issuer.into();
        let display_name = issuer_host(&issuer);
        Ok(OidcConfig {
            issuer,
            client_id: client_id.into(),
            client_secret: Secret::from_file(
                "CALLVAULT_OIDC_CLIENT_SECRET_FILE",
                client_secret_file,
            )?,
            redirect_url: redirect_url.into(),
            scopes: vec!["openid".into(), "profile".into(), "email".into()],
            username_claim: "preferred_username".into(),
            groups_claim: Some("groups".into()),
            post_login_redirect: "/".into(),
            login_ttl: Duration::from_secs(600),
            display_name,
        })
    }

    /// Checks every setting (called by [`crate::PortalConfig::validate`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let e = |setting: &'static str, reason: &str| ConfigError {
            setting,
            reason: reason.to_owned(),
        };
        let http = |s: &str| s.starts_with("https://") || s.starts_with("http://");
        if !http(&self.issuer) {
            return Err(e("CALLVAULT_OIDC_ISSUER", "must be an http(s) URL"));
        }
        if self.client_id.trim().is_empty() {
            return Err(e("CALLVAULT_OIDC_CLIENT_ID", "must not be empty"));
        }
        if self.client_secret.0.is_empty() {
            return Err(e("CALLVAULT_OIDC_CLIENT_SECRET_FILE", "the file is empty"));
        }
        if !http(&self.redirect_url) || !self.redirect_url.ends_with("/api/v1/auth/oidc/callback") {
            return Err(e(
                "CALLVAULT_OIDC_REDIRECT_URL",
                "must be this portal's http(s) URL ending in /api/v1/auth/oidc/callback",
            ));
        }
        if !self.scopes.iter().any(|s| s == "openid") {
            return Err(e("CALLVAULT_OIDC_SCOPES", "must include openid"));
        }
        if self.username_claim.trim().is_empty() {
            return Err(e("CALLVAULT_OIDC_USERNAME_CLAIM", "must not be empty"));
        }
        if self
            .groups_claim
            .as_deref()
            .is_some_and(|c| c.trim().is_empty())
        {
            return Err(e(
                "CALLVAULT_OIDC_GROUPS_CLAIM",
                "must not be empty when set",
            ));
        }
        if !safe_local_path(&self.post_login_redirect) {
            return Err(e(
                "CALLVAULT_OIDC_POST_LOGIN_REDIRECT",
                "must be a path on this portal (starting with a single /)",
            ));
        }
        if self.display_name.trim().is_empty() {
            return Err(e(
                "CALLVAULT_OIDC_DISPLAY_NAME",
                "must not be empty when set",
            ));
        }
        if self.login_ttl < Duration::from_secs(10) {
            return Err(e("OIDC login timeout", "must be at least 10 seconds"));
        }
        Ok(())
    }

    /// The key signing pending-login cookies: derived from the client secret, which every
    /// replica has and nobody else does.
    fn cookie_key(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"callvault oidc login state v1\0");
        h.update(self.client_secret.0.as_bytes());
        h.finalize().into()
    }
}

/// The host (and port) of an issuer URL, the provider's name when none is configured.
fn issuer_host(issuer: &str) -> String {
    let rest = issuer.split_once("://").map_or(issuer, |(_, r)| r);
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    // Credentials in the URL are no part of a name to show.
    host.rsplit('@').next().unwrap_or_default().to_owned()
}

/// A page of this portal to go to: a path, not `//host` or a URL (no open redirect).
fn safe_local_path(p: &str) -> bool {
    p.starts_with('/') && !p.starts_with("//") && !p.contains('\\') && !p.contains("://")
}

/// Why a single sign-on failed.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("the sign-in state is missing, tampered with or expired; start the sign-in again")]
    BadState,
    #[error("the identity provider refused the sign-in: {0}")]
    Provider(String),
    #[error("the identity provider is unreachable or answered nonsense: {0}")]
    Unavailable(String),
    #[error("the ID token is invalid: {0}")]
    Token(String),
    #[error("the ID token lacks the claim {0:?}")]
    MissingClaim(String),
}

impl From<OidcError> for ApiError {
    fn from(e: OidcError) -> Self {
        let code = match &e {
            OidcError::BadState => Code::InvalidRequest,
            OidcError::Provider(_) | OidcError::Token(_) | OidcError::MissingClaim(_) => {
                Code::InvalidCredentials
            }
            OidcError::Unavailable(_) => Code::Unavailable,
        };
        ApiError::new(code, e.to_string())
    }
}

/// What a pending login remembers between the two legs of the flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginState {
    pub state: String,
    pub nonce: String,
    pub verifier: String,
    pub return_to: String,
    /// Unix seconds after which the login is refused.
    pub expires: i64,
}

/// Signs a pending login into a cookie value: `base64url(json).base64url(hmac)`.
pub fn seal_login_state(config: &OidcConfig, s: &LoginState) -> String {
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(s).unwrap_or_default());
    let mac = mac(config, body.as_bytes());
    format!("{body}.{}", URL_SAFE_NO_PAD.encode(mac))
}

fn mac(config: &OidcConfig, data: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length.
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(&config.cookie_key())
        .expect("HMAC accepts any key length");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

/// The pending login of a cookie value, if its signature holds and it has not expired.
pub fn open_login_state(config: &OidcConfig, value: &str, now: i64) -> Option<LoginState> {
    let (body, sig) = value.split_once('.')?;
    let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
    let expected = mac(config, body.as_bytes());
    if sig.len() != expected.len()
        || sig.iter().zip(&expected).fold(0u8, |a, (x, y)| a | (x ^ y)) != 0
    {
        return None;
    }
    let s: LoginState = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).ok()?).ok()?;
    (s.expires > now).then_some(s)
}

/// What discovery tells about the provider.
#[derive(Debug, Clone, Deserialize)]
pub struct ProviderMetadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    #[serde(default)]
    pub userinfo_endpoint: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct Jwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default, rename = "use")]
    use_: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

#[derive(Debug)]
struct Cached {
    metadata: ProviderMetadata,
    jwks: Jwks,
    jwks_fetched: Instant,
}

/// The provider as this portal knows it: discovered on first use, keys refreshed when a token
/// names one not seen yet.
#[derive(Debug)]
pub struct Oidc {
    pub config: OidcConfig,
    http: reqwest::Client,
    cached: RwLock<Option<Arc<Cached>>>,
}

#[derive(Debug, Deserialize)]
struct TokenResponse {
    id_token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
}

impl Oidc {
    pub fn new(config: OidcConfig) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            // The provider's answers are read, never followed elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Oidc {
            config,
            http,
            cached: RwLock::new(None),
        }
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, OidcError> {
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| OidcError::Unavailable(format!("{url}: {e}")))?;
        if !resp.status().is_success() {
            return Err(OidcError::Unavailable(format!(
                "{url}: HTTP {}",
                resp.status()
            )));
        }
        resp.json()
            .await
            .map_err(|e| OidcError::Unavailable(format!("{url}: {e}")))
    }

    async fn provider(&self, refresh_keys: bool) -> Result<Arc<Cached>, OidcError> {
        if let Some(c) = self.cached.read().await.clone()
            && (!refresh_keys || c.jwks_fetched.elapsed() < Duration::from_secs(30))
        {
            return Ok(c);
        }
        let mut slot = self.cached.write().await;
        let metadata = match slot.as_ref() {
            Some(c) => c.metadata.clone(),
            None => {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    self.config.issuer.trim_end_matches('/')
                );
                let m: ProviderMetadata = self.get_json(&url).await?;
                // Discovery must describe the configured issuer (OpenID Connect Discovery §4.3).
                if m.issuer != self.config.issuer {
                    return Err(OidcError::Unavailable(format!(
                        "discovery names issuer {:?}, not the configured {:?}",
                        m.issuer, self.config.issuer
                    )));
                }
                m
            }
        };
        let jwks: Jwks = self.get_json(&metadata.jwks_uri).await?;
        let c = Arc::new(Cached {
            metadata,
            jwks,
            jwks_fetched: Instant::now(),
        });
        *slot = Some(c.clone());
        Ok(c)
    }

    /// The provider's authorization URL for a new login, and the login to remember.
    pub async fn start(
        &self,
        return_to: &str,
        now: i64,
    ) -> Result<(String, LoginState), OidcError> {
        let p = self.provider(false).await?;
        let verifier = URL_SAFE_NO_PAD.encode(hex::decode(new_token()).unwrap_or_default());
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let ttl = i64::try_from(self.config.login_ttl.as_secs()).unwrap_or(600);
        let s = LoginState {
            state: new_token(),
            nonce: new_token(),
            verifier,
            return_to: return_to.to_owned(),
            expires: now.saturating_add(ttl),
        };
        let mut url = url::Url::parse(&p.metadata.authorization_endpoint)
            .map_err(|e| OidcError::Unavailable(format!("authorization endpoint: {e}")))?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.config.client_id)
            .append_pair("redirect_uri", &self.config.redirect_url)
            .append_pair("scope", &self.config.scopes.join(" "))
            .append_pair("state", &s.state)
            .append_pair("nonce", &s.nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        Ok((url.into(), s))
    }

    /// Redeems an authorization code and returns the verified claims of the signed-in user
    /// (the ID token's, completed from the userinfo endpoint when it lacks the configured ones).
    pub async fn finish(
        &self,
        code: &str,
        login: &LoginState,
        now: i64,
    ) -> Result<Map<String, Value>, OidcError> {
        let p = self.provider(false).await?;
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "authorization_code")
            .append_pair("code", code)
            .append_pair("redirect_uri", &self.config.redirect_url)
            .append_pair("code_verifier", &login.verifier)
            .finish();
        // client_secret_basic: both parts form-encoded first (RFC 6749 §2.3.1).
        let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let basic = STANDARD.encode(format!(
            "{}:{}",
            enc(&self.config.client_id),
            enc(self.config.client_secret.expose())
        ));
        let resp = self
            .http
            .post(&p.metadata.token_endpoint)
            .header(header::AUTHORIZATION, format!("Basic {basic}"))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .body(form)
            .send()
            .await
            .map_err(|e| OidcError::Unavailable(format!("token endpoint: {e}")))?;
        let status = resp.status();
        let body: Value = resp
            .json()
            .await
            .map_err(|e| OidcError::Unavailable(format!("token endpoint: {e}")))?;
        if !status.is_success() {
            return Err(OidcError::Provider(format!(
                "token endpoint: {} {}",
                body["error"].as_str().unwrap_or("error"),
                body["error_description"].as_str().unwrap_or_default()
            )));
        }
        let tokens: TokenResponse = serde_json::from_value(body)
            .map_err(|e| OidcError::Unavailable(format!("token response: {e}")))?;
        let id_token = tokens
            .id_token
            .ok_or_else(|| OidcError::Token("the token response has no id_token".into()))?;
        let mut claims = match self.verify(&p, &id_token, &login.nonce, now) {
            Err(OidcError::Token(m)) if m.starts_with("unknown key") => {
                // The provider may have rotated its keys since they were fetched.
                let p = self.provider(true).await?;
                self.verify(&p, &id_token, &login.nonce, now)?
            }
            other => other?,
        };
        let wanted =
            std::iter::once(&self.config.username_claim).chain(self.config.groups_claim.as_ref());
        let missing = wanted.into_iter().any(|c| !claims.contains_key(c));
        if missing
            && let (Some(endpoint), Some(token)) =
                (&p.metadata.userinfo_endpoint, &tokens.access_token)
        {
            let info: Map<String, Value> = self
                .http
                .get(endpoint)
                .bearer_auth(token)
                .send()
                .await
                .map_err(|e| OidcError::Unavailable(format!("userinfo: {e}")))?
                .json()
                .await
                .map_err(|e| OidcError::Unavailable(format!("userinfo: {e}")))?;
            // Userinfo about someone else must not be merged (OpenID Connect Core §5.3.2).
            if info.get("sub") != claims.get("sub") {
                return Err(OidcError::Token("userinfo names another subject".into()));
            }
            for (k, v) in info {
                claims.entry(k).or_insert(v);
            }
        }
        Ok(claims)
    }

    /// Verifies an ID token's signature and claims (OpenID Connect Core §3.1.3.7).
    fn verify(
        &self,
        p: &Cached,
        token: &str,
        nonce: &str,
        now: i64,
    ) -> Result<Map<String, Value>, OidcError> {
        let bad = |m: &str| OidcError::Token(m.to_owned());
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("not a signed JWT"));
        };
        let header: Map<String, Value> = URL_SAFE_NO_PAD
            .decode(h)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| bad("unreadable header"))?;
        // Only RS256, the algorithm every provider must offer; never `none`, never HMAC.
        if header.get("alg").and_then(Value::as_str) != Some("RS256") {
            return Err(bad("signature algorithm is not RS256"));
        }
        let kid = header.get("kid").and_then(Value::as_str);
        let rsa_keys: Vec<&Jwk> = p
            .jwks
            .keys
            .iter()
            .filter(|k| k.kty == "RSA" && k.use_.as_deref().is_none_or(|u| u == "sig"))
            .collect();
        let key = match kid {
            Some(kid) => rsa_keys.iter().find(|k| k.kid.as_deref() == Some(kid)),
            None if rsa_keys.len() == 1 => rsa_keys.first(),
            None => None,
        }
        .ok_or_else(|| bad(&format!("unknown key {kid:?}")))?;
        let n = key
            .n
            .as_deref()
            .and_then(|n| URL_SAFE_NO_PAD.decode(n).ok());
        let e = key
            .e
            .as_deref()
            .and_then(|e| URL_SAFE_NO_PAD.decode(e).ok());
        let (Some(n), Some(e)) = (n, e) else {
            return Err(bad("the provider's key lacks n or e"));
        };
        let public = rsa::PublicKey::new(
            rsa::BoxedUint::from_be_slice_vartime(&n),
            rsa::BoxedUint::from_be_slice_vartime(&e),
        )
        .map_err(|e| bad(&format!("the provider's key is unusable: {e}")))?;
        let sig = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| bad("unreadable signature"))?;
        let digest = Sha256::digest(format!("{h}.{c}").as_bytes());
        public
            .verify(rsa::Pkcs1v15Sign::new::<Sha256>(), &digest, &sig)
            .map_err(|_| bad("the signature does not verify"))?;
        let claims: Map<String, Value> = URL_SAFE_NO_PAD
            .decode(c)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| bad("unreadable claims"))?;
        if claims.get("iss").and_then(Value::as_str) != Some(p.metadata.issuer.as_str()) {
            return Err(bad("issued by another issuer"));
        }
        let aud_ok = match claims.get("aud") {
            Some(Value::String(a)) => *a == self.config.client_id,
            Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(&self.config.client_id)),
            _ => false,
        };
        if !aud_ok {
            return Err(bad("not issued to this portal (aud)"));
        }
        if let Some(azp) = claims.get("azp").and_then(Value::as_str)
            && azp != self.config.client_id
        {
            return Err(bad("issued to another party (azp)"));
        }
        let exp = claims
            .get("exp")
            .and_then(Value::as_i64)
            .ok_or_else(|| bad("no exp"))?;
        if exp + LEEWAY_SECS <= now {
            return Err(bad("expired"));
        }
        if claims.get("iat").and_then(Value::as_i64).is_none() {
            return Err(bad("no iat"));
        }
        if claims
            .get("nbf")
            .and_then(Value::as_i64)
            .is_some_and(|nbf| nbf - LEEWAY_SECS > now)
        {
            return Err(bad("not valid yet (nbf)"));
        }
        let got = claims
            .get("nonce")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !secret_eq(got, nonce) {
            return Err(bad("the nonce does not match this sign-in"));
        }
        if claims
            .get("sub")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(bad("no sub"));
        }
        Ok(claims)
    }
}

fn now_secs() -> i64 {
    callvault_store::db::now_micros() / 1_000_000
}

fn oidc_of(state: &AppState) -> ApiResult<&Oidc> {
    state
        .oidc
        .as_ref()
        .ok_or_else(|| ApiError::not_found("single sign-on is not configured"))
}

fn login_cookie(value: &str, max_age: u64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{LOGIN_COOKIE}={value}; Path={COOKIE_PATH}; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
    )
}

fn redirect(to: &str, cookies: &[String]) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    resp
}

/// `GET /api/v1/auth/providers`: how one may sign in, for the sign-in page (no session
/// needed): local accounts always, single sign-on when configured.
pub async fn providers(State(state): State<Arc<AppState>>) -> Json<Value> {
    let oidc = state.oidc.as_ref().map(|o| {
        json!({
            "display_name": o.config.display_name,
            "login_url": "/api/v1/auth/oidc/login",
        })
    });
    Json(json!({ "local": true, "oidc": oidc }))
}

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    #[serde(default)]
    pub return_to: Option<String>,
}

/// `GET /api/v1/auth/oidc/login`: sends the browser to the provider.
pub async fn login(
    State(state): State<Arc<AppState>>,
    Query(q): Query<LoginQuery>,
) -> ApiResult<Response> {
    let oidc = oidc_of(&state)?;
    let return_to = q
        .return_to
        .filter(|p| safe_local_path(p))
        .unwrap_or_else(|| oidc.config.post_login_redirect.clone());
    let (url, login) = oidc.start(&return_to, now_secs()).await?;
    let cookie = login_cookie(
        &seal_login_state(&oidc.config, &login),
        oidc.config.login_ttl.as_secs(),
        state.config.secure_cookies,
    );
    Ok(redirect(&url, &[cookie]))
}

#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub error_description: Option<String>,
}

async fn refuse(state: &AppState, who: &str, reason: &str, client: ClientAddr) -> ApiResult<()> {
    // Before the ID token is verified nobody is known; the audit still names the attempt.
    let who = if who.is_empty() {
        "(single sign-on)"
    } else {
        who
    };
    let (source, ip) = (client.source(), client.to_string());
    failed_sign_in(
        state,
        &Failure {
            tenant: &state.config.default_tenant,
            source: &source,
            ip: &ip,
            username: who,
            reason,
            method: "oidc",
        },
    )
    .await
}

/// `GET /api/v1/auth/oidc/callback`: completes the sign-in and starts a session.
pub async fn callback(
    State(state): State<Arc<AppState>>,
    client: ClientAddr,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> ApiResult<Response> {
    let oidc = oidc_of(&state)?;
    let cookies = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join("; ");
    let login = cookie_value(&cookies, LOGIN_COOKIE)
        .and_then(|v| open_login_state(&oidc.config, v, now_secs()))
        .filter(|l| q.state.as_deref().is_some_and(|s| secret_eq(s, &l.state)));
    let Some(login) = login else {
        refuse(&state, "", "bad or expired state", client).await?;
        return Err(OidcError::BadState.into());
    };
    if let Some(err) = q.error {
        let reason = format!("{err}: {}", q.error_description.unwrap_or_default());
        refuse(&state, "", &reason, client).await?;
        return Err(OidcError::Provider(reason).into());
    }
    let code = q
        .code
        .ok_or_else(|| ApiError::invalid("the callback has neither code nor error"))?;
    let claims = match oidc.finish(&code, &login, now_secs()).await {
        Ok(c) => c,
        Err(e) => {
            refuse(&state, "", &e.to_string(), client).await?;
            return Err(e.into());
        }
    };
    let tenant = state.config.default_tenant.clone();
    let user = provision(&state, oidc, &tenant, &claims, client).await?;
    let s = sign_in(&state, &tenant, &user, "oidc", client, &headers).await?;
    let mut set = s.set_cookies.to_vec();
    set.push(login_cookie("", 0, state.config.secure_cookies));
    Ok(redirect(&login.return_to, &set))
}

fn claim_str(claims: &Map<String, Value>, name: &str) -> Option<String> {
    claims
        .get(name)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// The group names of a claim: a list of strings, or one string.
pub fn claim_groups(claims: &Map<String, Value>, name: &str) -> Vec<String> {
    let mut groups: Vec<String> = match claims.get(name) {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect(),
        Some(Value::String(s)) if !s.trim().is_empty() => vec![s.trim().to_owned()],
        _ => Vec::new(),
    };
    groups.sort();
    groups.dedup();
    groups
}

/// Creates or updates the user the claims describe, and their memberships; audits changes.
async fn provision(
    state: &AppState,
    oidc: &Oidc,
    tenant: &str,
    claims: &Map<String, Value>,
    client: ClientAddr,
) -> ApiResult<User> {
    let sub = claim_str(claims, "sub").unwrap_or_default();
    let Some(username) = claim_str(claims, &oidc.config.username_claim) else {
        refuse(state, &sub, "no username claim", client).await?;
        return Err(OidcError::MissingClaim(oidc.config.username_claim.clone()).into());
    };
    let profile = UserProfile {
        username: username.clone(),
        display_name: claim_str(claims, "name").unwrap_or_else(|| username.clone()),
        email: claim_str(claims, "email").unwrap_or_default(),
        external_id: Some(sub.clone()),
    };
    let db = &state.db;
    let user = match db
        .user_by_external_id(tenant, UserSource::Oidc, &sub)
        .await?
    {
        Some(u) => {
            let before = UserProfile {
                username: u.username.clone(),
                display_name: u.display_name.clone(),
                email: u.email.clone(),
                external_id: u.external_id.clone(),
            };
            if before != profile {
                db.update_user_profile(tenant, u.id, &profile).await?;
                db.append_audit(
                    tenant,
                    &NewAuditEntry::new(&username, "user.update")
                        .item("user", u.id.to_string())
                        .details(json!({ "source": "oidc", "username": username,
                            "previous_username": u.username })),
                )
                .await?;
            }
            db.user(tenant, u.id).await?.unwrap_or(u)
        }
        None => match db.user_by_username(tenant, &username).await? {
            // Provisioned by SCIM from the same directory, which owns the name (and the
            // profile): single sign-on is how such users sign in.
            Some(u) if u.source == UserSource::Scim => u,
            Some(_) => {
                // Someone else (a local account, or another provider's) holds the name: taking it over
                // would hand their calls to whoever the provider calls so.
                refuse(
                    state,
                    &username,
                    "username taken by another account",
                    client,
                )
                .await?;
                return Err(ApiError::new(
                    Code::Conflict,
                    format!(
                        "the username {username:?} belongs to an account not linked to this identity provider"
                    ),
                ));
            }
            None => {
                let u = db
                    .create_user(
                        tenant,
                        &NewUser {
                            username: username.clone(),
                            display_name: profile.display_name.clone(),
                            email: profile.email.clone(),
                            password_hash: None,
                            must_change_password: false,
                            time_zone: "UTC".into(),
                            source: UserSource::Oidc,
                            external_id: Some(sub.clone()),
                        },
                    )
                    .await?;
                db.append_audit(
                    tenant,
                    &NewAuditEntry::new(&username, "user.create")
                        .item("user", u.id.to_string())
                        .details(json!({ "source": "oidc", "username": username, "subject": sub })),
                )
                .await?;
                u
            }
        },
    };
    // A disabled (or deprovisioned) account is refused by the sign-in; its memberships stay
    // as they are.
    if user.disabled {
        return Ok(user);
    }
    if let Some(claim) = &oidc.config.groups_claim {
        let groups = claim_groups(claims, claim);
        let (added, removed) = db.set_user_groups_by_name(tenant, user.id, &groups).await?;
        if !added.is_empty() || !removed.is_empty() {
            db.append_audit(
                tenant,
                &NewAuditEntry::new(&username, "user.groups")
                    .item("user", user.id.to_string())
                    .details(json!({ "source": "oidc", "added": added, "removed": removed })),
            )
            .await?;
        }
    }
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> OidcConfig {
        OidcConfig {
            issuer: "https://idp.example".into(),
            client_id: "portal".into(),
            client_secret: Secret::new("s3cret"),
            redirect_url: "https://portal.example/api/v1/auth/oidc/callback".into(),
            scopes: vec!["openid".into()],
            username_claim: "preferred_username".into(),
            groups_claim: Some("groups".into()),
            post_login_redirect: "/".into(),
            login_ttl: Duration::from_secs(600),
            display_name: "Example IdP".into(),
        }
    }

    #[test]
    fn the_provider_is_named_by_its_issuer_host_unless_set() {
        assert_eq!(issuer_host("https://idp.example/realms/x"), "idp.example");
        assert_eq!(issuer_host("http://127.0.0.1:58090"), "127.0.0.1:58090");
        assert_eq!(issuer_host("https://u:p@login.example?x"), "login.example");
        let mut c = config();
        c.display_name = " ".into();
        assert!(c.validate().is_err());
    }

    #[test]
    fn login_state_round_trips_and_refuses_tampering_and_expiry() {
        let c = config();
        let s = LoginState {
            state: "st".into(),
            nonce: "no".into(),
            verifier: "ve".into(),
            return_to: "/".into(),
            expires: 100,
        };
        let sealed = seal_login_state(&c, &s);
        assert_eq!(open_login_state(&c, &sealed, 99), Some(s.clone()));
        assert_eq!(open_login_state(&c, &sealed, 100), None, "expired");
        let (body, sig) = sealed.split_once('.').expect("two parts");
        let forged = LoginState {
            expires: 10_000,
            ..s
        };
        let forged_body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).expect("json"));
        assert_eq!(
            open_login_state(&c, &format!("{forged_body}.{sig}"), 99),
            None
        );
        let other = OidcConfig {
            client_secret: Secret::new("other"),
            ..config()
        };
        assert_eq!(open_login_state(&other, &format!("{body}.{sig}"), 99), None);
    }

    #[test]
    fn settings_are_checked_and_secrets_not_printed() {
        assert!(config().validate().is_ok());
        assert!(!format!("{:?}", config()).contains("s3cret"));
        let bad = OidcConfig {
            post_login_redirect: "//evil.example".into(),
            ..config()
        };
        assert_eq!(
            bad.validate().expect_err("open redirect").setting,
            "CALLVAULT_OIDC_POST_LOGIN_REDIRECT"
        );
        let bad = OidcConfig {
            scopes: vec!["profile".into()],
            ..config()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn groups_claim_accepts_a_list_or_one_name() {
        let c: Map<String, Value> =
            serde_json::from_value(json!({"g": ["b", "a", "b", " "], "one": "x", "n": 3}))
                .expect("map");
        assert_eq!(claim_groups(&c, "g"), vec!["a", "b"]);
        assert_eq!(claim_groups(&c, "one"), vec!["x"]);
        assert!(claim_groups(&c, "n").is_empty());
        assert!(claim_groups(&c, "missing").is_empty());
    }
}
