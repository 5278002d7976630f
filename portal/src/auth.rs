//! Sign-in building blocks: argon2id password hashes, session and CSRF tokens, cookies, the
//! password policy, login throttling, bounded password hashing and the aggregation of failed
//! sign-ins in the audit trail. The session flow itself is in `api::auth`.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use callvault_store::db::NewAuditEntry;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

/// Name of the HttpOnly session cookie: `<tenant>.<token>`.
pub const SESSION_COOKIE: &str = "cv_session";
/// Name of the readable cookie carrying the CSRF token for scripts.
pub const CSRF_COOKIE: &str = "cv_csrf";
/// Header an unsafe request must carry the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Minimum password length of local accounts.
pub const MIN_PASSWORD_LEN: usize = 12;

fn argon2() -> Argon2<'static> {
    // OWASP's argon2id baseline: 19 MiB, 2 passes, 1 lane.
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // The OS RNG failing leaves no safe way to mint secrets: refuse loudly.
    getrandom::fill(&mut b).expect("the operating system's random source failed");
    b
}

/// An argon2id PHC string for `password`.
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::encode_b64(&random_bytes::<16>()).map_err(|e| e.to_string())?;
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Whether `password` matches a stored PHC string (false for a malformed one).
pub fn verify_password(stored: &str, password: &str) -> bool {
    PasswordHash::new(stored)
        .map(|h| argon2().verify_password(password.as_bytes(), &h).is_ok())
        .unwrap_or(false)
}

/// Spends the same work as a real check, so unknown usernames answer as slowly as known ones.
pub fn burn_password_check(password: &str) {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let hash = DUMMY.get_or_init(|| hash_password("dummy-password-for-timing").unwrap_or_default());
    let _ = verify_password(hash, password);
}

/// The password policy; `None` when acceptable, else what is wrong.
pub fn password_problem(username: &str, password: &str) -> Option<String> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Some(format!(
            "the password must have at least {MIN_PASSWORD_LEN} characters"
        ));
    }
    if password.eq_ignore_ascii_case(username) {
        return Some("the password must not be the username".to_owned());
    }
    if password
        .chars()
        .all(|c| c == password.chars().next().unwrap_or(' '))
    {
        return Some("the password must not repeat one character".to_owned());
    }
    None
}

/// A fresh secret token (256 bits, hex).
pub fn new_token() -> String {
    hex::encode(random_bytes::<32>())
}

/// What the database stores for a token.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The CSRF token bound to a session token: derived, so it needs no storage, and useless
/// without the HttpOnly session cookie it is checked against.
pub fn csrf_token(session_token: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"callvault csrf v1\0");
    h.update(session_token.as_bytes());
    hex::encode(h.finalize())
}

/// Constant-time string comparison for secrets.
pub fn secret_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// `Set-Cookie` values for a new session.
pub fn session_cookies(tenant: &str, token: &str, secure: bool, max_age: Duration) -> [String; 2] {
    let secure = if secure { "; Secure" } else { "" };
    let age = max_age.as_secs();
    [
        format!(
            "{SESSION_COOKIE}={tenant}.{token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={age}{secure}"
        ),
        format!(
            "{CSRF_COOKIE}={}; Path=/; SameSite=Lax; Max-Age={age}{secure}",
            csrf_token(token)
        ),
    ]
}

/// `Set-Cookie` values that clear the session cookies.
pub fn clear_cookies(secure: bool) -> [String; 2] {
    let secure = if secure { "; Secure" } else { "" };
    [
        format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{secure}"),
        format!("{CSRF_COOKIE}=; Path=/; SameSite=Lax; Max-Age=0{secure}"),
    ]
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// Parses a session cookie value `<tenant>.<token>`.
pub fn parse_session_cookie(value: &str) -> Option<(&str, &str)> {
    let (tenant, token) = value.split_once('.')?;
    (!tenant.is_empty() && token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit()))
        .then_some((tenant, token))
}

/// Sign-in throttling by the real client (see [`crate::net::ClientAddr`]), in memory.
///
/// - Each source may fail `limit` sign-ins per window, whatever the accounts.
/// - Each account counts failures per source: `lockout_failures` in a row from one source
///   pause that source's sign-ins to the account for `lockout`. The owner's other sources are
///   not affected, so nobody can lock an account's owner out from elsewhere.
/// - Each account accepts `limit` attempts per window from sources that have not signed in to
///   it successfully ("known" sources, remembered for [`KNOWN_SOURCE_FOR`]); known sources
///   bypass that cap, so a distributed guess slows down without locking the owner out.
///
/// A changed password (a reset) clears the account's pauses.
#[derive(Debug)]
pub struct Throttle {
    limit: usize,
    window: Duration,
    lockout_failures: u32,
    lockout: Duration,
    state: Mutex<ThrottleState>,
}

/// How long a source that signed in successfully stays known to the account.
pub const KNOWN_SOURCE_FOR: Duration = Duration::from_secs(30 * 24 * 3600);
/// Memory bounds: accounts and sources remembered, failing and known sources per account.
const MAX_KEYS: usize = 10_000;
const MAX_SOURCES_PER_ACCOUNT: usize = 1024;
const MAX_KNOWN_PER_ACCOUNT: usize = 16;

#[derive(Debug, Default)]
struct ThrottleState {
    sources: HashMap<String, VecDeque<Instant>>,
    accounts: HashMap<String, Account>,
}

#[derive(Debug, Default)]
struct Account {
    /// Fingerprint of the password the counts were made against.
    credential: String,
    /// Attempts from sources not known to the account.
    unknown: VecDeque<Instant>,
    /// Failures in a row per source, and when the last one was.
    failures: HashMap<String, (u32, Instant)>,
    /// Sources that signed in successfully, and when.
    known: HashMap<String, Instant>,
}

/// Why an attempt was refused; each carries the seconds to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The source failed too often (any accounts).
    Source(u64),
    /// The source failed too often on this account.
    Paused(u64),
    /// The account was tried too often from unknown sources.
    Account(u64),
}

impl Refusal {
    /// The audit reason.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Source(_) => "throttled: too many failures from this source",
            Refusal::Paused(_) => "throttled: this source failed too often on the account",
            Refusal::Account(_) => "throttled: too many attempts on the account from new sources",
        }
    }

    pub fn wait(self) -> u64 {
        match self {
            Refusal::Source(w) | Refusal::Paused(w) | Refusal::Account(w) => w,
        }
    }
}

/// Counts an attempt in a sliding window, or `Err(seconds to wait)` (then not counted).
fn window_hit(
    q: &mut VecDeque<Instant>,
    limit: usize,
    window: Duration,
    now: Instant,
) -> Result<(), u64> {
    while q.front().is_some_and(|t| now.duration_since(*t) >= window) {
        q.pop_front();
    }
    if q.len() >= limit
        && let Some(first) = q.front()
    {
        let left = window.saturating_sub(now.duration_since(*first));
        return Err(left.as_secs().max(1));
    }
    q.push_back(now);
    Ok(())
}

/// Drops the oldest entry of a map once it holds `max`.
fn evict_oldest<V>(map: &mut HashMap<String, V>, max: usize, when: impl Fn(&V) -> Instant) {
    if map.len() >= max
        && let Some(oldest) = map
            .iter()
            .min_by_key(|(_, v)| when(v))
            .map(|(k, _)| k.clone())
    {
        map.remove(&oldest);
    }
}

impl Throttle {
    pub fn new(limit: usize, window: Duration, lockout_failures: u32, lockout: Duration) -> Self {
        Throttle {
            limit,
            window,
            lockout_failures,
            lockout,
            state: Mutex::new(ThrottleState::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ThrottleState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `source` may try a sign-in (before any account is looked at): refused once it
    /// failed `limit` times in the window. Successes cost nothing, so colleagues behind one
    /// address do not throttle each other by signing in.
    pub fn source_check(&self, source: &str, now: Instant) -> Result<(), Refusal> {
        let mut st = self.lock();
        let Some(q) = st.sources.get_mut(source) else {
            return Ok(());
        };
        while q
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            q.pop_front();
        }
        match q.front() {
            Some(first) if q.len() >= self.limit => Err(Refusal::Source(
                self.window
                    .saturating_sub(now.duration_since(*first))
                    .as_secs()
                    .max(1),
            )),
            _ => Ok(()),
        }
    }

    /// Counts a failed sign-in of `source`.
    pub fn source_failure(&self, source: &str, now: Instant) {
        let mut st = self.lock();
        if st.sources.len() > MAX_KEYS {
            let window = self.window;
            st.sources
                .retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < window));
        }
        st.sources
            .entry(source.to_owned())
            .or_default()
            .push_back(now);
    }

    /// The account's state, reset when its password changed since the counts were made.
    fn account<'a>(
        &self,
        st: &'a mut ThrottleState,
        account: &str,
        credential: &str,
        now: Instant,
    ) -> &'a mut Account {
        if st.accounts.len() > MAX_KEYS {
            let keep = self.lockout.max(self.window);
            st.accounts.retain(|_, a| {
                !a.known.is_empty()
                    || a.failures
                        .values()
                        .any(|(_, t)| now.duration_since(*t) < keep)
                    || a.unknown
                        .back()
                        .is_some_and(|t| now.duration_since(*t) < keep)
            });
        }
        let a = st.accounts.entry(account.to_owned()).or_default();
        if a.credential != credential {
            a.credential = credential.to_owned();
            a.failures.clear();
            a.unknown.clear();
        }
        a
    }

    /// Checks an attempt on `account` (whose stored password has fingerprint `credential`)
    /// from `source`, and counts it against the account when the source is not known to it.
    pub fn account_attempt(
        &self,
        account: &str,
        credential: &str,
        source: &str,
        now: Instant,
    ) -> Result<(), Refusal> {
        let mut st = self.lock();
        let (limit, window, lockout, max) =
            (self.limit, self.window, self.lockout, self.lockout_failures);
        let a = self.account(&mut st, account, credential, now);
        if let Some((n, last)) = a.failures.get(source)
            && *n >= max
        {
            let since = now.duration_since(*last);
            if since < lockout {
                return Err(Refusal::Paused(
                    lockout.saturating_sub(since).as_secs().max(1),
                ));
            }
            a.failures.remove(source);
        }
        a.known
            .retain(|_, t| now.duration_since(*t) < KNOWN_SOURCE_FOR);
        if a.known.contains_key(source) {
            return Ok(());
        }
        window_hit(&mut a.unknown, limit, window, now).map_err(Refusal::Account)
    }

    /// A wrong password on `account` from `source`; true when that source is now paused.
    pub fn failure(&self, account: &str, credential: &str, source: &str, now: Instant) -> bool {
        let mut st = self.lock();
        let a = self.account(&mut st, account, credential, now);
        if !a.failures.contains_key(source) {
            evict_oldest(&mut a.failures, MAX_SOURCES_PER_ACCOUNT, |(_, t)| *t);
        }
        let f = a.failures.entry(source.to_owned()).or_insert((0, now));
        *f = (f.0.saturating_add(1), now);
        f.0 >= self.lockout_failures
    }

    /// A successful sign-in: the source's failures are forgotten and it becomes known.
    pub fn success(&self, account: &str, credential: &str, source: &str, now: Instant) {
        let mut st = self.lock();
        let a = self.account(&mut st, account, credential, now);
        a.failures.remove(source);
        if !a.known.contains_key(source) {
            evict_oldest(&mut a.known, MAX_KNOWN_PER_ACCOUNT, |t| *t);
        }
        a.known.insert(source.to_owned(), now);
    }
}

/// Password hashing off the async runtime, bounded: `concurrency` hashes run at once on the
/// blocking pool and `queue` more may wait; beyond that a caller is refused at once (503 with
/// Retry-After) instead of piling up memory and latency.
#[derive(Debug)]
pub struct Hasher {
    admit: Arc<Semaphore>,
    run: Arc<Semaphore>,
}

/// The hashing queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many password checks are waiting")]
pub struct Busy;

impl Hasher {
    pub fn new(concurrency: usize, queue: usize) -> Self {
        Hasher {
            admit: Arc::new(Semaphore::new(concurrency.saturating_add(queue))),
            run: Arc::new(Semaphore::new(concurrency)),
        }
    }

    /// Runs `f` on the blocking pool once a slot is free; `Err(Busy)` when the queue is full.
    /// The slot is held until `f` ends, even if the caller goes away.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Busy> {
        let admitted = self.admit.clone().try_acquire_owned().map_err(|_| Busy)?;
        let slot = self.run.clone().acquire_owned().await.map_err(|_| Busy)?;
        tokio::task::spawn_blocking(move || {
            let _held = (admitted, slot);
            f()
        })
        .await
        .map_err(|_| Busy)
    }
}

/// Largest username a sign-in may name, in bytes (checked before anything else is done).
pub const MAX_USERNAME: usize = 256;
/// Largest password a sign-in or password change may carry, in bytes.
pub const MAX_PASSWORD: usize = 1024;
/// Largest sign-in request body, in bytes.
pub const MAX_SIGN_IN_BODY: usize = 16 * 1024;

/// Failed sign-ins as audit entries, bounded: per tenant, source, method and window, the first failure
/// is written at once and the rest become one summary entry (count, reasons, up to
/// [`MAX_SUMMARY_NAMES`] usernames) when the window ends. At most [`MAX_PENDING_SOURCES`]
/// sources are followed per window; failures of further sources share one summary.
#[derive(Debug)]
pub struct FailedSignIns {
    window: Duration,
    overflow_tenant: String,
    /// By tenant, source and method.
    pending: Mutex<HashMap<(String, String, String), Pending>>,
}

pub const MAX_PENDING_SOURCES: usize = 1000;
pub const MAX_SUMMARY_NAMES: usize = 10;
/// Usernames and reasons are cut to so many characters in the audit trail.
const NAME_CHARS: usize = 64;
const REASON_CHARS: usize = 200;
/// Distinct reasons a summary names; further ones are counted as `other`.
const MAX_SUMMARY_REASONS: usize = 10;
/// The source key failures beyond [`MAX_PENDING_SOURCES`] are counted under.
pub const OTHER_SOURCES: &str = "other sources";

#[derive(Debug)]
struct Pending {
    opened: Instant,
    from: i64,
    to: i64,
    ip: String,
    /// Failures after the first (the first has its own entry).
    more: u64,
    reasons: BTreeMap<String, u64>,
    names: BTreeSet<String>,
    names_omitted: u64,
}

/// One failed sign-in.
#[derive(Debug, Clone, Copy)]
pub struct Failure<'a> {
    pub tenant: &'a str,
    /// The throttling key of the client ([`crate::net::ClientAddr::source`]).
    pub source: &'a str,
    /// The client's address as shown.
    pub ip: &'a str,
    pub username: &'a str,
    pub reason: &'a str,
    /// `password` or `oidc`.
    pub method: &'a str,
}

/// Text from a client as the audit trail keeps it: at most `max` characters.
fn cut(text: &str, max: usize) -> String {
    let mut chars = text.chars();
    let cut: String = chars.by_ref().take(max).collect();
    if chars.next().is_some() {
        format!("{cut}…")
    } else {
        cut
    }
}

impl FailedSignIns {
    pub fn new(window: Duration, overflow_tenant: &str) -> Self {
        FailedSignIns {
            window,
            overflow_tenant: overflow_tenant.to_owned(),
            pending: Mutex::new(HashMap::new()),
        }
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    /// Folds a failure in; returns the entry to write now when it is its window's first.
    pub fn record(
        &self,
        f: &Failure<'_>,
        now: Instant,
        at: i64,
    ) -> Option<(String, NewAuditEntry)> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let mut key = (
            f.tenant.to_owned(),
            f.source.to_owned(),
            f.method.to_owned(),
        );
        let mut first = !pending.contains_key(&key);
        if first && pending.len() >= MAX_PENDING_SOURCES {
            key = (
                self.overflow_tenant.clone(),
                OTHER_SOURCES.to_owned(),
                f.method.to_owned(),
            );
            first = false;
        }
        let name = cut(f.username, NAME_CHARS);
        let reason = cut(f.reason, REASON_CHARS);
        let p = pending.entry(key).or_insert_with(|| Pending {
            opened: now,
            from: at,
            to: at,
            ip: if first {
                f.ip.to_owned()
            } else {
                String::new()
            },
            more: 0,
            reasons: BTreeMap::new(),
            names: BTreeSet::new(),
            names_omitted: 0,
        });
        if first {
            return Some((
                f.tenant.to_owned(),
                NewAuditEntry::new(&name, "login.failed")
                    .item("user", &name)
                    .details(json!({ "reason": reason, "ip": f.ip, "method": f.method })),
            ));
        }
        p.more += 1;
        p.to = at;
        let reason = if p.reasons.len() < MAX_SUMMARY_REASONS || p.reasons.contains_key(&reason) {
            reason
        } else {
            "other".to_owned()
        };
        *p.reasons.entry(reason).or_default() += 1;
        if p.names.len() < MAX_SUMMARY_NAMES || p.names.contains(&name) {
            p.names.insert(name);
        } else {
            p.names_omitted += 1;
        }
        None
    }

    /// Summaries of the windows that ended by `now`, removed.
    pub fn due(&self, now: Instant) -> Vec<(String, NewAuditEntry)> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let ended: Vec<_> = pending
            .iter()
            .filter(|(_, p)| now.duration_since(p.opened) >= self.window)
            .map(|(k, _)| k.clone())
            .collect();
        ended
            .into_iter()
            .filter_map(|k| {
                let p = pending.remove(&k)?;
                let (tenant, source, method) = k;
                (p.more > 0).then(|| {
                    (
                        tenant,
                        NewAuditEntry::new(UNAUTHENTICATED, "login.failed")
                            .item("source", &source)
                            .details(json!({
                                "summary": true,
                                "method": method,
                                "ip": p.ip,
                                "attempts": p.more,
                                "reasons": p.reasons,
                                "usernames": p.names,
                                "usernames_omitted": p.names_omitted,
                                "from": p.from,
                                "to": p.to,
                            })),
                    )
                })
            })
            .collect()
    }
}

/// The audit actor of failures no single username stands for.
pub const UNAUTHENTICATED: &str = "(unauthenticated)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("correct horse battery").expect("hash");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password(&h, "correct horse battery"));
        assert!(!verify_password(&h, "correct horse batterY"));
        assert!(!verify_password("not a hash", "x"));
    }

    #[test]
    fn policy_names_the_problem() {
        assert!(password_problem("bob", "short").is_some());
        assert!(password_problem("bobbobbobbob", "BOBBOBBOBBOB").is_some());
        assert!(password_problem("bob", "aaaaaaaaaaaaaa").is_some());
        assert!(password_problem("bob", "a long enough passphrase").is_none());
    }

    #[test]
    fn cookies_parse_back() {
        let token = new_token();
        let [session, csrf] = session_cookies("bank", &token, true, Duration::from_secs(60));
        assert!(session.contains("HttpOnly") && session.contains("Secure"));
        assert!(session.contains("SameSite=Lax"));
        assert!(!csrf.contains("HttpOnly"));
        let header = format!("a=b; {}", session.split(';').next().unwrap_or_default());
        let value = cookie_value(&header, SESSION_COOKIE).expect("cookie");
        assert_eq!(parse_session_cookie(value), Some(("bank", token.as_str())));
        assert!(parse_session_cookie("bank.short").is_none());
    }

    const M: Duration = Duration::from_secs(60);

    #[test]
    fn sources_are_limited_by_their_failures_per_window() {
        let t = Throttle::new(2, M, 5, 15 * M);
        let now = Instant::now();
        assert!(t.source_check("ip:1", now).is_ok());
        t.source_failure("ip:1", now);
        assert!(t.source_check("ip:1", now).is_ok());
        t.source_failure("ip:1", now);
        let r = t.source_check("ip:1", now).expect_err("third is refused");
        assert!(matches!(r, Refusal::Source(w) if w >= 59));
        assert!(t.source_check("ip:2", now).is_ok(), "another source");
        assert!(
            t.source_check("ip:1", now + Duration::from_secs(61))
                .is_ok()
        );
    }

    #[test]
    fn failures_pause_only_their_source_and_a_reset_lifts_the_pause() {
        let t = Throttle::new(100, M, 3, 15 * M);
        let now = Instant::now();
        t.success("bob", "pw1", "home", now);
        for i in 0..3 {
            assert!(t.account_attempt("bob", "pw1", "evil", now).is_ok());
            assert_eq!(t.failure("bob", "pw1", "evil", now), i == 2);
        }
        let r = t
            .account_attempt("bob", "pw1", "evil", now)
            .expect_err("paused");
        assert!(matches!(r, Refusal::Paused(w) if w > 800));
        assert!(
            t.account_attempt("bob", "pw1", "home", now).is_ok(),
            "owner"
        );
        assert!(
            t.account_attempt("bob", "pw1", "new", now).is_ok(),
            "another source"
        );
        let later = now + 15 * M;
        assert!(
            t.account_attempt("bob", "pw1", "evil", later).is_ok(),
            "pause over"
        );
        for _ in 0..3 {
            t.failure("bob", "pw1", "evil", later);
        }
        assert!(t.account_attempt("bob", "pw1", "evil", later).is_err());
        assert!(
            t.account_attempt("bob", "pw2", "evil", later).is_ok(),
            "a new password clears pauses"
        );
    }

    #[test]
    fn unknown_sources_are_slowed_per_account_but_known_ones_are_not() {
        let t = Throttle::new(2, M, 5, 15 * M);
        let now = Instant::now();
        t.success("bob", "pw", "home", now);
        assert!(t.account_attempt("bob", "pw", "a", now).is_ok());
        assert!(t.account_attempt("bob", "pw", "b", now).is_ok());
        let r = t
            .account_attempt("bob", "pw", "c", now)
            .expect_err("slowed");
        assert!(matches!(r, Refusal::Account(_)));
        for _ in 0..10 {
            assert!(t.account_attempt("bob", "pw", "home", now).is_ok());
        }
        assert!(
            t.account_attempt("alice", "pw", "c", now).is_ok(),
            "per account"
        );
    }

    #[test]
    fn failed_sign_ins_are_one_entry_then_one_summary_per_window() {
        let log = FailedSignIns::new(M, "default");
        let now = Instant::now();
        let long = "x".repeat(1_000_000);
        let f = |name: &'static str| Failure {
            tenant: "default",
            source: "192.0.2.1",
            ip: "192.0.2.1",
            username: name,
            reason: "wrong password",
            method: "password",
        };
        let (tenant, first) = log
            .record(
                &Failure {
                    username: &long,
                    ..f("x")
                },
                now,
                1,
            )
            .expect("first is written");
        assert_eq!(tenant, "default");
        assert!(first.actor.chars().count() <= NAME_CHARS + 1);
        for i in 0..1000 {
            let name: &'static str = if i % 2 == 0 { "a" } else { "b" };
            assert!(log.record(&f(name), now, 2 + i).is_none());
        }
        assert!(log.due(now).is_empty(), "window still open");
        let due = log.due(now + M);
        assert_eq!(due.len(), 1);
        let d: serde_json::Value = due[0].1.details.clone();
        assert_eq!(d["attempts"], 1000);
        assert_eq!(d["usernames"], json!(["a", "b"]));
        assert!(log.due(now + 2 * M).is_empty(), "drained");
    }

    #[test]
    fn sources_beyond_the_bound_share_one_summary() {
        let log = FailedSignIns::new(M, "default");
        let now = Instant::now();
        let sources: Vec<String> = (0..MAX_PENDING_SOURCES + 50)
            .map(|i| format!("s{i}"))
            .collect();
        let written = sources
            .iter()
            .filter(|s| {
                log.record(
                    &Failure {
                        tenant: "t",
                        source: s,
                        ip: s,
                        username: "u",
                        reason: "r",
                        method: "password",
                    },
                    now,
                    0,
                )
                .is_some()
            })
            .count();
        assert_eq!(written, MAX_PENDING_SOURCES);
        let due = log.due(now + M);
        assert_eq!(due.len(), 1, "only the overflow has more than its first");
        assert_eq!(due[0].0, "default");
        assert_eq!(due[0].1.details["attempts"], 50);
    }
}
