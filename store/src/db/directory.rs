//! Users, groups, memberships, extensions and web sessions.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::exec::{DbRow, args, conflict_on_unique};
use super::model::{parse, text_enum};
use super::{Db, DbError, Result, invalid, now_micros};

text_enum!(
    /// Where a user came from.
    UserSource {
        Local => "local",
        Oidc => "oidc",
        Scim => "scim",
    }
);

/// A user to create.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub username: String,
    pub display_name: String,
    pub email: String,
    /// An already-hashed password (the portal hashes); `None` for SSO users.
    pub password_hash: Option<String>,
    pub must_change_password: bool,
    pub time_zone: String,
    pub source: UserSource,
    pub external_id: Option<String>,
}

impl NewUser {
    pub fn local(username: impl Into<String>, display_name: impl Into<String>) -> Self {
        Self {
            username: username.into(),
            display_name: display_name.into(),
            email: String::new(),
            password_hash: None,
            must_change_password: false,
            time_zone: "UTC".to_owned(),
            source: UserSource::Local,
            external_id: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub tenant: String,
    pub id: Uuid,
    pub username: String,
    pub display_name: String,
    pub email: String,
    #[serde(skip_serializing)]
    pub password_hash: Option<String>,
    pub must_change_password: bool,
    pub disabled: bool,
    pub failed_logins: i64,
    pub locked_until: Option<i64>,
    pub legal_hold: bool,
    pub time_zone: String,
    pub source: UserSource,
    pub external_id: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub tenant: String,
    pub id: Uuid,
    pub name: String,
    pub description: String,
    pub external_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebSession {
    pub tenant: String,
    /// Hash of the session token; the token itself is never stored.
    pub id_hash: String,
    pub user_id: Uuid,
    pub created_at: i64,
    pub last_seen_at: i64,
    pub expires_at: i64,
    pub ip: String,
    pub user_agent: String,
    pub revoked_at: Option<i64>,
}

const USER_COLUMNS: &str = "tenant, id, username, display_name, email, password_hash, \
    must_change_password, disabled, failed_logins, locked_until, legal_hold, time_zone, source, \
    external_id, created_at, updated_at";

pub(super) fn user_from_row(r: &dyn DbRow) -> Result<User> {
    Ok(User {
        tenant: r.text("tenant")?,
        id: r.uuid("id")?,
        username: r.text("username")?,
        display_name: r.text("display_name")?,
        email: r.text("email")?,
        password_hash: r.opt_text("password_hash")?,
        must_change_password: r.bool("must_change_password")?,
        disabled: r.bool("disabled")?,
        failed_logins: r.i64("failed_logins")?,
        locked_until: r.opt_i64("locked_until")?,
        legal_hold: r.bool("legal_hold")?,
        time_zone: r.text("time_zone")?,
        source: parse("source", r.text("source")?)?,
        external_id: r.opt_text("external_id")?,
        created_at: r.i64("created_at")?,
        updated_at: r.i64("updated_at")?,
    })
}

fn group_from_row(r: &dyn DbRow) -> Result<Group> {
    Ok(Group {
        tenant: r.text("tenant")?,
        id: r.uuid("id")?,
        name: r.text("name")?,
        description: r.text("description")?,
        external_id: r.opt_text("external_id")?,
    })
}

fn session_from_row(r: &dyn DbRow) -> Result<WebSession> {
    Ok(WebSession {
        tenant: r.text("tenant")?,
        id_hash: r.text("id_hash")?,
        user_id: r.uuid("user_id")?,
        created_at: r.i64("created_at")?,
        last_seen_at: r.i64("last_seen_at")?,
        expires_at: r.i64("expires_at")?,
        ip: r.text("ip")?,
        user_agent: r.text("user_agent")?,
        revoked_at: r.opt_i64("revoked_at")?,
    })
}

/// The refusal of a user name another user holds in some case.
pub(crate) fn name_taken(wanted: &str, holder: &str) -> DbError {
    if wanted == holder {
        DbError::Conflict(format!("user {wanted:?} already exists"))
    } else {
        DbError::Conflict(format!(
            "user name {wanted:?} is taken by user {holder:?} (user names are unique regardless of case)"
        ))
    }
}

/// The refusal to delete a user on legal hold (the message says "legal hold": the portal
/// answers it with the `legal_hold` code).
pub(crate) fn on_legal_hold(username: &str) -> DbError {
    DbError::Conflict(format!(
        "user {username:?} is on legal hold and cannot be deleted; lift the hold first"
    ))
}

fn user_not_found(tenant: &str, id: impl ToString) -> DbError {
    DbError::NotFound {
        kind: "user",
        tenant: tenant.to_owned(),
        id: id.to_string(),
    }
}

impl Db {
    pub async fn create_user(&self, tenant: &str, u: &NewUser) -> Result<User> {
        if tenant.is_empty() || u.username.trim().is_empty() {
            return Err(invalid("user", "tenant and username are required"));
        }
        if let Some(taken) = self.user_by_username(tenant, &u.username).await? {
            return Err(name_taken(&u.username, &taken.username));
        }
        let id = Uuid::new_v4();
        let now = now_micros();
        self.exec(
            "INSERT INTO users (tenant, id, username, display_name, email, password_hash, \
             must_change_password, time_zone, source, external_id, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)",
            &args![
                tenant,
                id,
                &u.username,
                &u.display_name,
                &u.email,
                u.password_hash.clone(),
                u.must_change_password,
                &u.time_zone,
                u.source.as_str(),
                u.external_id.clone(),
                now
            ],
        )
        .await
        .map_err(|e| conflict_on_unique(e, || name_taken(&u.username, &u.username).to_string()))?;
        self.user(tenant, id)
            .await?
            .ok_or_else(|| user_not_found(tenant, id))
    }

    pub async fn user(&self, tenant: &str, id: Uuid) -> Result<Option<User>> {
        self.row(
            &format!("SELECT {USER_COLUMNS} FROM users WHERE tenant = $1 AND id = $2"),
            &args![tenant, id],
            user_from_row,
        )
        .await
    }

    /// The user of a name, whatever its case (names are unique regardless of case).
    pub async fn user_by_username(&self, tenant: &str, username: &str) -> Result<Option<User>> {
        self.row(
            &format!(
                "SELECT {USER_COLUMNS} FROM users WHERE tenant = $1 AND LOWER(username) = LOWER($2)"
            ),
            &args![tenant, username],
            user_from_row,
        )
        .await
    }

    pub async fn list_users(&self, tenant: &str) -> Result<Vec<User>> {
        self.rows(
            &format!("SELECT {USER_COLUMNS} FROM users WHERE tenant = $1 ORDER BY username"),
            &args![tenant],
            user_from_row,
        )
        .await
    }

    /// Sets a user's legal hold; while it is on, none of their calls expire or can be deleted.
    pub async fn set_user_legal_hold(&self, tenant: &str, id: Uuid, hold: bool) -> Result<()> {
        self.update_user(tenant, id, "legal_hold = $3", &args![hold])
            .await
    }

    pub async fn set_user_disabled(&self, tenant: &str, id: Uuid, disabled: bool) -> Result<()> {
        self.update_user(tenant, id, "disabled = $3", &args![disabled])
            .await
    }

    pub async fn set_password_hash(
        &self,
        tenant: &str,
        id: Uuid,
        hash: &str,
        must_change: bool,
    ) -> Result<()> {
        self.update_user(
            tenant,
            id,
            "password_hash = $3, must_change_password = $4, failed_logins = 0, locked_until = NULL",
            &args![hash, must_change],
        )
        .await
    }

    /// Counts a failed login; locks the account until `lock_until` once `max_failures` is reached.
    /// Returns the new failure count.
    pub async fn record_login_failure(
        &self,
        tenant: &str,
        id: Uuid,
        max_failures: i64,
        lock_until: i64,
    ) -> Result<i64> {
        self.row(
            "UPDATE users SET failed_logins = failed_logins + 1, \
             locked_until = CASE WHEN failed_logins + 1 >= $3 THEN $4 ELSE locked_until END, \
             updated_at = $5 WHERE tenant = $1 AND id = $2 RETURNING failed_logins",
            &args![tenant, id, max_failures, lock_until, now_micros()],
            |r| r.i64("failed_logins"),
        )
        .await?
        .ok_or_else(|| user_not_found(tenant, id))
    }

    pub async fn record_login_success(&self, tenant: &str, id: Uuid) -> Result<()> {
        self.update_user(tenant, id, "failed_logins = 0, locked_until = NULL", &[])
            .await
    }

    async fn update_user(
        &self,
        tenant: &str,
        id: Uuid,
        set: &str,
        extra: &[super::Arg],
    ) -> Result<()> {
        let mut a = args![tenant, id].to_vec();
        a.extend_from_slice(extra);
        a.push(now_micros().into());
        let ts = a.len();
        let n = self
            .exec(
                &format!(
                    "UPDATE users SET {set}, updated_at = ${ts} WHERE tenant = $1 AND id = $2"
                ),
                &a,
            )
            .await?;
        if n == 0 {
            return Err(user_not_found(tenant, id));
        }
        Ok(())
    }

    /// Deletes a user's row; refused while the user is on legal hold.
    pub async fn delete_user(&self, tenant: &str, id: Uuid) -> Result<()> {
        let n = self
            .exec(
                "DELETE FROM users WHERE tenant = $1 AND id = $2 AND NOT legal_hold",
                &args![tenant, id],
            )
            .await?;
        if n == 0 {
            return match self.user(tenant, id).await? {
                Some(u) => Err(on_legal_hold(&u.username)),
                None => Err(user_not_found(tenant, id)),
            };
        }
        Ok(())
    }

    pub async fn create_group(&self, tenant: &str, name: &str, description: &str) -> Result<Group> {
        if name.trim().is_empty() {
            return Err(invalid("group name", "must not be empty"));
        }
        let id = Uuid::new_v4();
        self.exec(
            "INSERT INTO groups (tenant, id, name, description, created_at) VALUES ($1, $2, $3, $4, $5)",
            &args![tenant, id, name, description, now_micros()],
        )
        .await
        .map_err(|e| conflict_on_unique(e, || format!("group {name:?} already exists")))?;
        Ok(Group {
            tenant: tenant.to_owned(),
            id,
            name: name.to_owned(),
            description: description.to_owned(),
            external_id: None,
        })
    }

    pub async fn list_groups(&self, tenant: &str) -> Result<Vec<Group>> {
        self.rows(
            "SELECT tenant, id, name, description, external_id FROM groups WHERE tenant = $1 ORDER BY name",
            &args![tenant],
            group_from_row,
        )
        .await
    }

    pub async fn delete_group(&self, tenant: &str, id: Uuid) -> Result<()> {
        self.exec(
            "DELETE FROM groups WHERE tenant = $1 AND id = $2",
            &args![tenant, id],
        )
        .await?;
        Ok(())
    }

    /// Adds a user to a group; both must exist in the tenant.
    pub async fn add_member(&self, tenant: &str, group_id: Uuid, user_id: Uuid) -> Result<()> {
        self.exec(
            "INSERT INTO memberships (tenant, group_id, user_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            &args![tenant, group_id, user_id],
        )
        .await
        .map_err(|e| match e {
            DbError::Sql(sqlx::Error::Database(d)) if d.is_foreign_key_violation() => {
                DbError::NotFound {
                    kind: "user or group",
                    tenant: tenant.to_owned(),
                    id: format!("{user_id} / {group_id}"),
                }
            }
            other => other,
        })?;
        Ok(())
    }

    pub async fn remove_member(&self, tenant: &str, group_id: Uuid, user_id: Uuid) -> Result<()> {
        self.exec(
            "DELETE FROM memberships WHERE tenant = $1 AND group_id = $2 AND user_id = $3",
            &args![tenant, group_id, user_id],
        )
        .await?;
        Ok(())
    }

    pub async fn user_groups(&self, tenant: &str, user_id: Uuid) -> Result<Vec<Group>> {
        self.rows(
            "SELECT g.tenant, g.id, g.name, g.description, g.external_id FROM groups g \
             JOIN memberships m ON m.tenant = g.tenant AND m.group_id = g.id \
             WHERE g.tenant = $1 AND m.user_id = $2 ORDER BY g.name",
            &args![tenant, user_id],
            group_from_row,
        )
        .await
    }

    /// The groups of each of `users`, as `(user, group)` pairs by group name: one query per
    /// 500 users, for lists.
    pub async fn groups_of_users(
        &self,
        tenant: &str,
        users: &[Uuid],
    ) -> Result<Vec<(Uuid, Group)>> {
        self.rows_for_ids(
            "SELECT m.user_id, g.tenant, g.id, g.name, g.description, g.external_id \
             FROM groups g JOIN memberships m ON m.tenant = g.tenant AND m.group_id = g.id \
             WHERE g.tenant = $1 AND m.user_id IN ({ids}) ORDER BY g.name",
            tenant,
            users,
            |r| Ok((r.uuid("user_id")?, group_from_row(r)?)),
        )
        .await
    }

    pub async fn group_members(&self, tenant: &str, group_id: Uuid) -> Result<Vec<User>> {
        self.rows(
            &format!(
                "SELECT {} FROM users u JOIN memberships m ON m.tenant = u.tenant \
                 AND m.user_id = u.id WHERE u.tenant = $1 AND m.group_id = $2 ORDER BY u.username",
                USER_COLUMNS
                    .split(", ")
                    .map(|c| format!("u.{c}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            &args![tenant, group_id],
            user_from_row,
        )
        .await
    }

    /// Associates a number with a user. A number belongs to one user per tenant: if another user
    /// has it, the conflict names that user.
    pub async fn add_extension(&self, tenant: &str, number: &str, user_id: Uuid) -> Result<()> {
        let number = number.trim();
        if number.is_empty() {
            return Err(invalid("extension", "must not be empty"));
        }
        if self.number_free_for(tenant, number, user_id).await? {
            return Ok(());
        }
        self.exec(
            "INSERT INTO extensions (tenant, number, user_id) VALUES ($1, $2, $3)",
            &args![tenant, number, user_id],
        )
        .await
        .map_err(|e| conflict_on_unique(e, || format!("number {number} is already assigned")))?;
        Ok(())
    }

    /// Whether `number` already is `user_id`'s (`true`) or nobody's (`false`); a conflict
    /// naming the user it belongs to otherwise.
    pub async fn number_free_for(&self, tenant: &str, number: &str, user_id: Uuid) -> Result<bool> {
        let Some(owner) = self.extension_owner(tenant, number.trim()).await? else {
            return Ok(false);
        };
        if owner == user_id {
            return Ok(true);
        }
        let name = self
            .user(tenant, owner)
            .await?
            .map_or_else(|| owner.to_string(), |u| u.username);
        Err(DbError::Conflict(format!(
            "number {} already belongs to user {name}",
            number.trim()
        )))
    }

    pub async fn remove_extension(&self, tenant: &str, number: &str) -> Result<()> {
        self.exec(
            "DELETE FROM extensions WHERE tenant = $1 AND number = $2",
            &args![tenant, number],
        )
        .await?;
        Ok(())
    }

    /// The user a number belongs to, if any.
    pub async fn extension_owner(&self, tenant: &str, number: &str) -> Result<Option<Uuid>> {
        self.row(
            "SELECT user_id FROM extensions WHERE tenant = $1 AND number = $2",
            &args![tenant, number],
            |r| r.uuid("user_id"),
        )
        .await
    }

    /// The numbers of each of `users`, as `(user, number)` pairs in number order: one query
    /// per 500 users, for lists.
    pub async fn extensions_of_users(
        &self,
        tenant: &str,
        users: &[Uuid],
    ) -> Result<Vec<(Uuid, String)>> {
        self.rows_for_ids(
            "SELECT user_id, number FROM extensions WHERE tenant = $1 \
             AND user_id IN ({ids}) ORDER BY number",
            tenant,
            users,
            |r| Ok((r.uuid("user_id")?, r.text("number")?)),
        )
        .await
    }

    pub async fn user_extensions(&self, tenant: &str, user_id: Uuid) -> Result<Vec<String>> {
        self.rows(
            "SELECT number FROM extensions WHERE tenant = $1 AND user_id = $2 ORDER BY number",
            &args![tenant, user_id],
            |r| r.text("number"),
        )
        .await
    }

    /// Stores a new session; `id_hash` is a hash of the token the browser holds.
    pub async fn create_session(
        &self,
        tenant: &str,
        id_hash: &str,
        user_id: Uuid,
        expires_at: i64,
        ip: &str,
        user_agent: &str,
    ) -> Result<WebSession> {
        let now = now_micros();
        self.exec(
            "INSERT INTO web_sessions (tenant, id_hash, user_id, created_at, last_seen_at, \
             expires_at, ip, user_agent) VALUES ($1, $2, $3, $4, $4, $5, $6, $7)",
            &args![tenant, id_hash, user_id, now, expires_at, ip, user_agent],
        )
        .await?;
        Ok(WebSession {
            tenant: tenant.to_owned(),
            id_hash: id_hash.to_owned(),
            user_id,
            created_at: now,
            last_seen_at: now,
            expires_at,
            ip: ip.to_owned(),
            user_agent: user_agent.to_owned(),
            revoked_at: None,
        })
    }

    /// The session if it is live (not revoked, not expired at `now`), after recording `now` as
    /// its last use.
    pub async fn touch_session(
        &self,
        tenant: &str,
        id_hash: &str,
        now: i64,
    ) -> Result<Option<WebSession>> {
        self.row(
            "UPDATE web_sessions SET last_seen_at = $3 WHERE tenant = $1 AND id_hash = $2 \
             AND revoked_at IS NULL AND expires_at > $3 RETURNING tenant, id_hash, user_id, \
             created_at, last_seen_at, expires_at, ip, user_agent, revoked_at",
            &args![tenant, id_hash, now],
            session_from_row,
        )
        .await
    }

    pub async fn revoke_session(&self, tenant: &str, id_hash: &str) -> Result<()> {
        self.exec(
            "UPDATE web_sessions SET revoked_at = $3 WHERE tenant = $1 AND id_hash = $2 \
             AND revoked_at IS NULL",
            &args![tenant, id_hash, now_micros()],
        )
        .await?;
        Ok(())
    }

    /// Revokes every live session of a user (password change, disable). Returns how many.
    pub async fn revoke_user_sessions(&self, tenant: &str, user_id: Uuid) -> Result<u64> {
        self.exec(
            "UPDATE web_sessions SET revoked_at = $3 WHERE tenant = $1 AND user_id = $2 \
             AND revoked_at IS NULL",
            &args![tenant, user_id, now_micros()],
        )
        .await
    }

    pub async fn list_sessions(&self, tenant: &str, user_id: Uuid) -> Result<Vec<WebSession>> {
        self.rows(
            "SELECT tenant, id_hash, user_id, created_at, last_seen_at, expires_at, ip, \
             user_agent, revoked_at FROM web_sessions WHERE tenant = $1 AND user_id = $2 \
             ORDER BY created_at DESC",
            &args![tenant, user_id],
            session_from_row,
        )
        .await
    }
}
