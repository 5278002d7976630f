//! Sign-in building blocks: argon2id password hashes, session and CSRF tokens, cookies, the
//! password policy and login throttling. The session flow itself is in `api::auth`.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use sha2::{Digest, Sha256};

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

/// Sliding-window limit on sign-in attempts per key (client address, account): a brute force
/// is slowed before the per-account lockout in the database stops it.
#[derive(Debug)]
pub struct Throttle {
    limit: usize,
    window: Duration,
    hits: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl Throttle {
    pub fn new(limit: usize, window: Duration) -> Self {
        Throttle {
            limit,
            window,
            hits: Mutex::new(HashMap::new()),
        }
    }

    /// Counts an attempt for every key; `Err(seconds to wait)` when any key is over the limit
    /// (the attempt is then not counted).
    pub fn attempt(&self, keys: &[String], now: Instant) -> Result<(), u64> {
        let mut hits = self.hits.lock().unwrap_or_else(|e| e.into_inner());
        // Bound memory: forget idle keys.
        if hits.len() > 10_000 {
            hits.retain(|_, q| {
                q.back()
                    .is_some_and(|t| now.duration_since(*t) < self.window)
            });
        }
        let mut wait = 0u64;
        for key in keys {
            let q = hits.entry(key.clone()).or_default();
            while q
                .front()
                .is_some_and(|t| now.duration_since(*t) >= self.window)
            {
                q.pop_front();
            }
            if q.len() >= self.limit
                && let Some(first) = q.front()
            {
                let left = self.window.saturating_sub(now.duration_since(*first));
                wait = wait.max(left.as_secs().max(1));
            }
        }
        if wait > 0 {
            return Err(wait);
        }
        for key in keys {
            hits.entry(key.clone()).or_default().push_back(now);
        }
        Ok(())
    }
}

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

    #[test]
    fn throttle_blocks_then_recovers() {
        let t = Throttle::new(2, Duration::from_secs(60));
        let now = Instant::now();
        let keys = vec!["ip:1".to_owned()];
        assert!(t.attempt(&keys, now).is_ok());
        assert!(t.attempt(&keys, now).is_ok());
        let wait = t.attempt(&keys, now).expect_err("third is refused");
        assert!(wait >= 59);
        assert!(t.attempt(&keys, now + Duration::from_secs(61)).is_ok());
    }
}
