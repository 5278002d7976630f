//! One RecordingProfile per user: which profile records each user when several select them.
//! The oldest profile keeps the user; each newer one that selects them too has a conflict
//! naming the user and the profile that keeps them, and does not record them. Pure, so the
//! recorder (which enforces it), the operator and standalone (status) and the portal (the
//! profiles screen) all decide alike.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

/// A RecordingProfile's user selection and age, as far as ownership needs them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Selection {
    /// The profile's name.
    pub name: String,
    /// It records every user of the directory.
    #[serde(default)]
    pub all_users: bool,
    /// The directory groups whose members it records.
    #[serde(default)]
    pub groups: Vec<String>,
    /// When the profile was created (RFC 3339, `metadata.creationTimestamp`); a profile
    /// without one counts as newer than every profile with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
}

/// The tenant's directory as far as user selection needs it: every user name, and each
/// group's members.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    pub users: Vec<String>,
    pub groups: HashMap<String, BTreeSet<String>>,
}

impl Directory {
    /// The tenant's directory from the database.
    pub async fn load(
        db: &callvault_store::db::Db,
        tenant: &str,
    ) -> Result<Directory, callvault_store::db::DbError> {
        let users = db
            .list_users(tenant)
            .await?
            .into_iter()
            .map(|u| u.username)
            .collect();
        let mut groups = HashMap::new();
        for g in db.list_groups(tenant).await? {
            let members = db
                .group_members(tenant, g.id)
                .await?
                .into_iter()
                .map(|u| u.username)
                .collect();
            groups.insert(g.name, members);
        }
        Ok(Directory { users, groups })
    }

    /// The users a profile selecting `groups` (or every user) matches.
    pub fn selected<'a>(
        &self,
        all_users: bool,
        groups: impl IntoIterator<Item = &'a String>,
    ) -> BTreeSet<String> {
        if all_users {
            return self.users.iter().cloned().collect();
        }
        groups
            .into_iter()
            .filter_map(|g| self.groups.get(g))
            .flatten()
            .cloned()
            .collect()
    }
}

/// A user a profile selects but an older profile keeps.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Conflict {
    pub user: String,
    /// The older profile that records the user.
    pub profile: String,
}

/// What one profile records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ownership {
    /// The users it records.
    pub users: BTreeSet<String>,
    /// The users it selects that an older profile records, sorted by user.
    pub conflicts: Vec<Conflict>,
}

/// The ownership of every profile, by name. Profiles are taken oldest first (creation time,
/// then name); each user belongs to the first that selects them. Several groups of one
/// profile selecting the same user is no conflict.
pub fn ownership(profiles: &[Selection], directory: &Directory) -> BTreeMap<String, Ownership> {
    let mut order: Vec<&Selection> = profiles.iter().collect();
    order.sort_by(|a, b| {
        (a.created.is_none(), &a.created, &a.name).cmp(&(b.created.is_none(), &b.created, &b.name))
    });
    let mut keeper: BTreeMap<String, &str> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for p in order {
        let mut own = Ownership::default();
        for user in directory.selected(p.all_users, &p.groups) {
            match keeper.get(&user) {
                Some(older) => own.conflicts.push(Conflict {
                    user,
                    profile: (*older).to_owned(),
                }),
                None => {
                    keeper.insert(user.clone(), &p.name);
                    own.users.insert(user);
                }
            }
        }
        out.insert(p.name.clone(), own);
    }
    out
}

/// The one-line summary of a profile's conflicts, `(user, older profile)` pairs, for its
/// Conflict condition.
pub fn conflict_message<'a>(conflicts: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut by_keeper: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (user, keeper) in conflicts {
        by_keeper.entry(keeper).or_default().push(user);
    }
    let parts: Vec<String> = by_keeper
        .into_iter()
        .map(|(keeper, users)| {
            format!(
                "{} recorded by the older profile {keeper}",
                users.join(", ")
            )
        })
        .collect();
    format!(
        "one profile per user: {}; this profile does not record them",
        parts.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> Directory {
        Directory {
            users: vec!["ann".into(), "bob".into(), "cy".into()],
            groups: HashMap::from([
                ("sales".into(), BTreeSet::from(["ann".into(), "bob".into()])),
                ("desk".into(), BTreeSet::from(["bob".into()])),
                ("audit".into(), BTreeSet::from(["cy".into()])),
            ]),
        }
    }

    fn sel(name: &str, created: Option<&str>, all_users: bool, groups: &[&str]) -> Selection {
        Selection {
            name: name.into(),
            all_users,
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            created: created.map(str::to_owned),
        }
    }

    #[test]
    fn the_older_profile_keeps_a_user_and_the_newer_reports_the_conflict() {
        let profiles = [
            // Listed newer first: age decides, not order.
            sel(
                "desk",
                Some("2026-02-01T00:00:00Z"),
                false,
                &["desk", "audit"],
            ),
            sel(
                "sales",
                Some("2026-01-01T00:00:00Z"),
                false,
                &["sales", "desk"],
            ),
        ];
        let o = ownership(&profiles, &dir());
        assert_eq!(
            o["sales"].users,
            BTreeSet::from(["ann".into(), "bob".into()])
        );
        assert!(o["sales"].conflicts.is_empty(), "two groups of one profile");
        assert_eq!(o["desk"].users, BTreeSet::from(["cy".into()]));
        assert_eq!(
            o["desk"].conflicts,
            [Conflict {
                user: "bob".into(),
                profile: "sales".into()
            }]
        );
        assert_eq!(
            conflict_message(
                o["desk"]
                    .conflicts
                    .iter()
                    .map(|c| (c.user.as_str(), c.profile.as_str()))
            ),
            "one profile per user: bob recorded by the older profile sales; this profile does not record them"
        );
    }

    #[test]
    fn a_newer_all_users_profile_gets_only_the_users_nobody_else_records() {
        let profiles = [
            sel("everyone", Some("2026-03-01T00:00:00Z"), true, &[]),
            sel("audit", Some("2026-01-01T00:00:00Z"), false, &["audit"]),
        ];
        let o = ownership(&profiles, &dir());
        assert_eq!(
            o["everyone"].users,
            BTreeSet::from(["ann".into(), "bob".into()])
        );
        assert_eq!(o["everyone"].conflicts.len(), 1);
        // Without creation times (resource files), the name decides, and a dated profile is
        // older than an undated one.
        let o = ownership(
            &[sel("b", None, true, &[]), sel("a", None, true, &[])],
            &dir(),
        );
        assert_eq!(o["a"].users.len(), 3);
        assert_eq!(o["b"].conflicts.len(), 3);
        let o = ownership(
            &[
                sel("a", None, true, &[]),
                sel("z", Some("2026-01-01T00:00:00Z"), true, &[]),
            ],
            &dir(),
        );
        assert_eq!(o["z"].users.len(), 3);
    }
}
