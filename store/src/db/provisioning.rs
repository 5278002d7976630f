//! Users and groups kept in step with an identity provider (OIDC sign-in, SCIM provisioning):
//! lookups by external id, profile updates, memberships set as a whole, and paged listings.

use uuid::Uuid;

use super::directory::{Group, User, UserSource};
use super::exec::{args, conflict_on_unique};
use super::{Db, DbError, Result, invalid, now_micros};

/// The fields an identity provider owns on a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserProfile {
    pub username: String,
    pub display_name: String,
    pub email: String,
    pub external_id: Option<String>,
}

/// Which users [`Db::users_page`] lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserFilter<'a> {
    All,
    /// The one user with this name, compared without case.
    Username(&'a str),
    /// The users an identity provider knows by this external id, compared exactly, whatever
    /// their source.
    ExternalId(&'a str),
}

const USER_COLUMNS: &str = "tenant, id, username, display_name, email, password_hash, \
    must_change_password, disabled, failed_logins, locked_until, legal_hold, time_zone, source, \
    external_id, created_at, updated_at";

impl Db {
    /// The user an identity provider knows by `external_id` (its subject or SCIM id).
    pub async fn user_by_external_id(
        &self,
        tenant: &str,
        source: UserSource,
        external_id: &str,
    ) -> Result<Option<User>> {
        let id = self
            .row(
                "SELECT id FROM users WHERE tenant = $1 AND source = $2 AND external_id = $3",
                &args![tenant, source.as_str(), external_id],
                |r| r.uuid("id"),
            )
            .await?;
        match id {
            Some(id) => self.user(tenant, id).await,
            None => Ok(None),
        }
    }

    /// Replaces the provider-owned fields of a user.
    pub async fn update_user_profile(&self, tenant: &str, id: Uuid, p: &UserProfile) -> Result<()> {
        if p.username.trim().is_empty() {
            return Err(invalid("user", "username is required"));
        }
        if let Some(other) = self.user_by_username(tenant, &p.username).await?
            && other.id != id
        {
            return Err(super::directory::name_taken(&p.username, &other.username));
        }
        let n = self
            .exec(
                "UPDATE users SET username = $3, display_name = $4, email = $5, external_id = $6, \
                 updated_at = $7 WHERE tenant = $1 AND id = $2",
                &args![
                    tenant,
                    id,
                    &p.username,
                    &p.display_name,
                    &p.email,
                    p.external_id.clone(),
                    now_micros()
                ],
            )
            .await
            .map_err(|e| {
                conflict_on_unique(e, || format!("user {:?} already exists", p.username))
            })?;
        if n == 0 {
            return Err(DbError::NotFound {
                kind: "user",
                tenant: tenant.to_owned(),
                id: id.to_string(),
            });
        }
        Ok(())
    }

    /// Deletes a user as an identity provider sees it, in one transaction: the account is
    /// disabled, its sessions end, its numbers and memberships go (new calls are no longer
    /// theirs), and [`Db::users_page`] no longer lists it. The row stays, so that the user's calls,
    /// notes and audit entries remain attributable.
    pub async fn deprovision_user(&self, tenant: &str, id: Uuid) -> Result<()> {
        let now = now_micros();
        let mut tx = self.begin().await?;
        let n = tx
            .exec(
                "UPDATE users SET disabled = $3, updated_at = $4 WHERE tenant = $1 AND id = $2 \
                 AND NOT legal_hold",
                &args![tenant, id, true, now],
            )
            .await?;
        if n == 0 {
            drop(tx);
            return match self.user(tenant, id).await? {
                Some(u) => Err(super::directory::on_legal_hold(&u.username)),
                None => Err(DbError::NotFound {
                    kind: "user",
                    tenant: tenant.to_owned(),
                    id: id.to_string(),
                }),
            };
        }
        for sql in [
            "DELETE FROM memberships WHERE tenant = $1 AND user_id = $2",
            "DELETE FROM extensions WHERE tenant = $1 AND user_id = $2",
        ] {
            tx.exec(sql, &args![tenant, id]).await?;
        }
        tx.exec(
            "UPDATE web_sessions SET revoked_at = $3 WHERE tenant = $1 AND user_id = $2 \
             AND revoked_at IS NULL",
            &args![tenant, id, now],
        )
        .await?;
        tx.exec(
            "INSERT INTO deprovisioned_users (tenant, user_id, at) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
            &args![tenant, id, now],
        )
        .await?;
        tx.commit().await
    }

    /// Whether an identity provider deleted the user ([`Db::deprovision_user`]).
    pub async fn is_deprovisioned(&self, tenant: &str, id: Uuid) -> Result<bool> {
        Ok(self
            .row(
                "SELECT at FROM deprovisioned_users WHERE tenant = $1 AND user_id = $2",
                &args![tenant, id],
                |r| r.i64("at"),
            )
            .await?
            .is_some())
    }

    /// Brings back a deprovisioned user (provisioned again under the same name): enabled and
    /// listed again.
    pub async fn reprovision_user(&self, tenant: &str, id: Uuid) -> Result<()> {
        let mut tx = self.begin().await?;
        tx.exec(
            "DELETE FROM deprovisioned_users WHERE tenant = $1 AND user_id = $2",
            &args![tenant, id],
        )
        .await?;
        tx.exec(
            "UPDATE users SET disabled = $3, updated_at = $4 WHERE tenant = $1 AND id = $2",
            &args![tenant, id, false, now_micros()],
        )
        .await?;
        tx.commit().await
    }

    /// Users ordered by username, only those `filter` picks, skipping `offset` and returning at
    /// most `limit`; with the total that matched. Deprovisioned users are left out, in the same
    /// query, so a filter costs two queries however many users it matches.
    pub async fn users_page(
        &self,
        tenant: &str,
        filter: UserFilter<'_>,
        offset: i64,
        limit: i64,
    ) -> Result<(i64, Vec<User>)> {
        let (filter, a): (String, Vec<super::Arg>) = match filter {
            UserFilter::All => (String::new(), vec![tenant.into()]),
            UserFilter::Username(u) => (
                " AND LOWER(username) = LOWER($2)".to_owned(),
                vec![tenant.into(), u.into()],
            ),
            // SCIM compares externalId exactly (caseExact). Naming every source (all the column
            // allows) lets the (tenant, source, external_id) index answer instead of a scan of
            // the tenant's users.
            UserFilter::ExternalId(x) => (
                format!(
                    " AND source IN ({}) AND external_id = $2",
                    UserSource::ALL
                        .iter()
                        .map(|s| format!("'{}'", s.as_str()))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                vec![tenant.into(), x.into()],
            ),
        };
        let filter = format!(
            "{filter} AND NOT EXISTS (SELECT 1 FROM deprovisioned_users d \
             WHERE d.tenant = users.tenant AND d.user_id = users.id)"
        );
        let total = self
            .row(
                &format!("SELECT COUNT(*) AS n FROM users WHERE tenant = $1{filter}"),
                &a,
                |r| r.i64("n"),
            )
            .await?
            .unwrap_or(0);
        let mut page_args = a.clone();
        let next = page_args.len() + 1;
        page_args.push(limit.max(0).into());
        page_args.push(offset.max(0).into());
        let users = self
            .rows(
                &format!(
                    "SELECT {USER_COLUMNS} FROM users WHERE tenant = $1{filter} \
                     ORDER BY username LIMIT ${next} OFFSET ${}",
                    next + 1
                ),
                &page_args,
                super::directory::user_from_row,
            )
            .await?;
        Ok((total, users))
    }

    pub async fn group(&self, tenant: &str, id: Uuid) -> Result<Option<Group>> {
        Ok(self
            .list_groups(tenant)
            .await?
            .into_iter()
            .find(|g| g.id == id))
    }

    pub async fn group_by_name(&self, tenant: &str, name: &str) -> Result<Option<Group>> {
        Ok(self
            .list_groups(tenant)
            .await?
            .into_iter()
            .find(|g| g.name == name))
    }

    /// Renames a group and sets its external id.
    pub async fn update_group(
        &self,
        tenant: &str,
        id: Uuid,
        name: &str,
        external_id: Option<&str>,
    ) -> Result<()> {
        if name.trim().is_empty() {
            return Err(invalid("group name", "must not be empty"));
        }
        let n = self
            .exec(
                "UPDATE groups SET name = $3, external_id = $4 WHERE tenant = $1 AND id = $2",
                &args![tenant, id, name, external_id],
            )
            .await
            .map_err(|e| conflict_on_unique(e, || format!("group {name:?} already exists")))?;
        if n == 0 {
            return Err(DbError::NotFound {
                kind: "group",
                tenant: tenant.to_owned(),
                id: id.to_string(),
            });
        }
        Ok(())
    }

    /// Makes the user a member of exactly the groups named, creating the missing ones (so that
    /// AccessProfiles naming them apply). Returns the names added and removed.
    pub async fn set_user_groups_by_name(
        &self,
        tenant: &str,
        user_id: Uuid,
        names: &[String],
    ) -> Result<(Vec<String>, Vec<String>)> {
        let current = self.user_groups(tenant, user_id).await?;
        let mut added = Vec::new();
        for name in names {
            let name = name.trim();
            if name.is_empty() || current.iter().any(|g| g.name == name) {
                continue;
            }
            let group = match self.group_by_name(tenant, name).await? {
                Some(g) => g,
                None => match self.create_group(tenant, name, "").await {
                    Ok(g) => g,
                    // Created meanwhile by a concurrent sign-in.
                    Err(DbError::Conflict(_)) => self
                        .group_by_name(tenant, name)
                        .await?
                        .ok_or_else(|| DbError::Conflict(format!("group {name:?}")))?,
                    Err(e) => return Err(e),
                },
            };
            self.add_member(tenant, group.id, user_id).await?;
            added.push(name.to_owned());
        }
        let mut removed = Vec::new();
        for g in current {
            if !names.iter().any(|n| n.trim() == g.name) {
                self.remove_member(tenant, g.id, user_id).await?;
                removed.push(g.name);
            }
        }
        Ok((added, removed))
    }

    /// Makes exactly `members` the members of a group.
    pub async fn set_group_members(
        &self,
        tenant: &str,
        group_id: Uuid,
        members: &[Uuid],
    ) -> Result<()> {
        let current = self.group_members(tenant, group_id).await?;
        for u in &current {
            if !members.contains(&u.id) {
                self.remove_member(tenant, group_id, u.id).await?;
            }
        }
        for id in members {
            if !current.iter().any(|u| u.id == *id) {
                self.add_member(tenant, group_id, *id).await?;
            }
        }
        Ok(())
    }
}
