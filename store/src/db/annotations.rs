//! What people add to recordings: tags, notes, custom field values, transcripts; and their
//! saved searches.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::exec::{DbRow, args, conflict_on_unique};
use super::model::{parse, text_enum};
use super::search::SearchQuery;
use super::{Db, DbError, Result, invalid, now_micros, word_norm};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tag {
    pub id: Uuid,
    pub name: String,
    pub color: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    pub id: Uuid,
    pub recording_id: Uuid,
    pub author_user_id: Option<Uuid>,
    pub author_name: String,
    pub created_at: i64,
    pub body: String,
}

text_enum!(
    CustomFieldType {
        Text => "text",
        Number => "number",
        Date => "date",
        Choice => "choice",
    }
);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomField {
    pub id: Uuid,
    pub name: String,
    pub field_type: CustomFieldType,
    pub choices: Vec<String>,
    pub searchable: bool,
    pub editable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedQuery {
    pub id: Uuid,
    pub user_id: Uuid,
    pub name: String,
    pub query: SearchQuery,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transcript {
    pub recording_id: Uuid,
    pub channel: i64,
    pub engine: String,
    pub language: String,
    pub body: String,
    /// Word timings as JSON text (engine-neutral `[{"w","start","end"}]`).
    pub words: String,
    pub created_at: i64,
}

fn note_from_row(r: &dyn DbRow) -> Result<Note> {
    Ok(Note {
        id: r.uuid("id")?,
        recording_id: r.uuid("recording_id")?,
        author_user_id: r.opt_uuid("author_user_id")?,
        author_name: r.text("author_name")?,
        created_at: r.i64("created_at")?,
        body: r.text("body")?,
    })
}

fn rec_not_found(tenant: &str, id: Uuid) -> DbError {
    DbError::NotFound {
        kind: "recording",
        tenant: tenant.to_owned(),
        id: id.to_string(),
    }
}

fn fk_to_not_found(tenant: &str, what: String) -> impl FnOnce(DbError) -> DbError + '_ {
    move |e| match e {
        DbError::Sql(sqlx::Error::Database(d)) if d.is_foreign_key_violation() => {
            DbError::NotFound {
                kind: "recording or tag",
                tenant: tenant.to_owned(),
                id: what,
            }
        }
        other => other,
    }
}

impl Db {
    pub async fn create_tag(&self, tenant: &str, name: &str, color: &str) -> Result<Tag> {
        let name = name.trim();
        if name.is_empty() {
            return Err(invalid("tag name", "must not be empty"));
        }
        let id = Uuid::new_v4();
        self.exec(
            "INSERT INTO tags (tenant, id, name, color, created_at) VALUES ($1, $2, $3, $4, $5)",
            &args![tenant, id, name, color, now_micros()],
        )
        .await
        .map_err(|e| conflict_on_unique(e, || format!("tag {name:?} already exists")))?;
        Ok(Tag {
            id,
            name: name.to_owned(),
            color: color.to_owned(),
        })
    }

    pub async fn list_tags(&self, tenant: &str) -> Result<Vec<Tag>> {
        self.rows(
            "SELECT id, name, color FROM tags WHERE tenant = $1 ORDER BY name",
            &args![tenant],
            |r| {
                Ok(Tag {
                    id: r.uuid("id")?,
                    name: r.text("name")?,
                    color: r.text("color")?,
                })
            },
        )
        .await
    }

    pub async fn delete_tag(&self, tenant: &str, id: Uuid) -> Result<()> {
        self.exec(
            "DELETE FROM tags WHERE tenant = $1 AND id = $2",
            &args![tenant, id],
        )
        .await?;
        Ok(())
    }

    /// Sets exactly `tags` on every recording in `recordings`, replacing what they had
    /// (compliance-recorder F-82: setting tags on several calls overwrites). All or nothing.
    pub async fn replace_tags(
        &self,
        tenant: &str,
        recordings: &[Uuid],
        tags: &[Uuid],
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        for rec in recordings {
            let exists = tx
                .row(
                    "SELECT CAST(1 AS BIGINT) AS one FROM recordings WHERE tenant = $1 AND id = $2",
                    &args![tenant, *rec],
                    |r| r.i64("one"),
                )
                .await?;
            if exists.is_none() {
                return Err(rec_not_found(tenant, *rec));
            }
            tx.exec(
                "DELETE FROM recording_tags WHERE tenant = $1 AND recording_id = $2",
                &args![tenant, *rec],
            )
            .await?;
            for tag in tags {
                tx.exec(
                    "INSERT INTO recording_tags (tenant, recording_id, tag_id, start_time) \
                     SELECT tenant, id, $3, start_time FROM recordings WHERE tenant = $1 AND id = $2 \
                     ON CONFLICT DO NOTHING",
                    &args![tenant, *rec, *tag],
                )
                .await
                .map_err(fk_to_not_found(tenant, tag.to_string()))?;
            }
        }
        tx.commit().await
    }

    pub async fn recording_tags(&self, tenant: &str, recording: Uuid) -> Result<Vec<Tag>> {
        self.rows(
            "SELECT t.id, t.name, t.color FROM tags t JOIN recording_tags rt ON rt.tenant = t.tenant \
             AND rt.tag_id = t.id WHERE t.tenant = $1 AND rt.recording_id = $2 ORDER BY t.name",
            &args![tenant, recording],
            |r| {
                Ok(Tag {
                    id: r.uuid("id")?,
                    name: r.text("name")?,
                    color: r.text("color")?,
                })
            },
        )
        .await
    }

    /// The tags of each of `recordings` as `(recording, tag)` pairs, ordered by tag name: a
    /// query per 500 recordings, not one per recording (the active-calls list shows them).
    pub async fn tags_of(&self, tenant: &str, recordings: &[Uuid]) -> Result<Vec<(Uuid, Tag)>> {
        self.rows_for_ids(
            "SELECT rt.recording_id, t.id, t.name, t.color FROM tags t \
             JOIN recording_tags rt ON rt.tenant = t.tenant AND rt.tag_id = t.id \
             WHERE t.tenant = $1 AND rt.recording_id IN ({ids}) ORDER BY t.name",
            tenant,
            recordings,
            |r| {
                Ok((
                    r.uuid("recording_id")?,
                    Tag {
                        id: r.uuid("id")?,
                        name: r.text("name")?,
                        color: r.text("color")?,
                    },
                ))
            },
        )
        .await
    }

    /// The notes of all of `recordings`, oldest first; a query per 500 recordings.
    pub async fn notes_of(&self, tenant: &str, recordings: &[Uuid]) -> Result<Vec<Note>> {
        self.rows_for_ids(
            "SELECT id, recording_id, author_user_id, author_name, created_at, body \
             FROM notes WHERE tenant = $1 AND recording_id IN ({ids}) ORDER BY created_at, id",
            tenant,
            recordings,
            note_from_row,
        )
        .await
    }

    pub async fn add_note(
        &self,
        tenant: &str,
        recording: Uuid,
        author_user_id: Option<Uuid>,
        author_name: &str,
        body: &str,
    ) -> Result<Note> {
        if body.trim().is_empty() {
            return Err(invalid("note", "must not be empty"));
        }
        let id = Uuid::new_v4();
        let now = now_micros();
        self.exec(
            "INSERT INTO notes (tenant, id, recording_id, author_user_id, author_name, created_at, \
             body, body_norm) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &args![
                tenant,
                id,
                recording,
                author_user_id,
                author_name,
                now,
                body,
                word_norm(body)
            ],
        )
        .await
        .map_err(fk_to_not_found(tenant, recording.to_string()))?;
        Ok(Note {
            id,
            recording_id: recording,
            author_user_id,
            author_name: author_name.to_owned(),
            created_at: now,
            body: body.to_owned(),
        })
    }

    pub async fn notes(&self, tenant: &str, recording: Uuid) -> Result<Vec<Note>> {
        self.rows(
            "SELECT id, recording_id, author_user_id, author_name, created_at, body FROM notes \
             WHERE tenant = $1 AND recording_id = $2 ORDER BY created_at, id",
            &args![tenant, recording],
            note_from_row,
        )
        .await
    }

    pub async fn note(&self, tenant: &str, id: Uuid) -> Result<Option<Note>> {
        self.row(
            "SELECT id, recording_id, author_user_id, author_name, created_at, body FROM notes \
             WHERE tenant = $1 AND id = $2",
            &args![tenant, id],
            note_from_row,
        )
        .await
    }

    /// Deletes a note (the portal checks own-note vs. "delete notes of other users").
    pub async fn delete_note(&self, tenant: &str, id: Uuid) -> Result<()> {
        let n = self
            .exec(
                "DELETE FROM notes WHERE tenant = $1 AND id = $2",
                &args![tenant, id],
            )
            .await?;
        if n == 0 {
            return Err(DbError::NotFound {
                kind: "note",
                tenant: tenant.to_owned(),
                id: id.to_string(),
            });
        }
        Ok(())
    }

    pub async fn create_custom_field(
        &self,
        tenant: &str,
        name: &str,
        field_type: CustomFieldType,
        choices: &[String],
        searchable: bool,
        editable: bool,
    ) -> Result<CustomField> {
        if name.trim().is_empty() {
            return Err(invalid("custom field name", "must not be empty"));
        }
        if field_type == CustomFieldType::Choice && choices.is_empty() {
            return Err(invalid(
                "custom field choices",
                "a choice field needs choices",
            ));
        }
        let id = Uuid::new_v4();
        self.exec(
            "INSERT INTO custom_fields (tenant, id, name, field_type, choices, searchable, editable) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &args![
                tenant,
                id,
                name,
                field_type.as_str(),
                serde_json::to_string(choices).unwrap_or_else(|_| "[]".to_owned()),
                searchable,
                editable
            ],
        )
        .await
        .map_err(|e| conflict_on_unique(e, || format!("custom field {name:?} already exists")))?;
        Ok(CustomField {
            id,
            name: name.to_owned(),
            field_type,
            choices: choices.to_vec(),
            searchable,
            editable,
        })
    }

    pub async fn custom_fields(&self, tenant: &str) -> Result<Vec<CustomField>> {
        self.rows(
            "SELECT id, name, field_type, choices, searchable, editable FROM custom_fields \
             WHERE tenant = $1 ORDER BY name",
            &args![tenant],
            |r| {
                let choices = r.text("choices")?;
                Ok(CustomField {
                    id: r.uuid("id")?,
                    name: r.text("name")?,
                    field_type: parse("field_type", r.text("field_type")?)?,
                    choices: serde_json::from_str(&choices).map_err(|_| DbError::Corrupt {
                        column: "choices",
                        value: choices.clone(),
                    })?,
                    searchable: r.bool("searchable")?,
                    editable: r.bool("editable")?,
                })
            },
        )
        .await
    }

    pub async fn set_custom_value(
        &self,
        tenant: &str,
        recording: Uuid,
        field: Uuid,
        value: &str,
    ) -> Result<()> {
        self.exec(
            "INSERT INTO custom_field_values (tenant, recording_id, field_id, value) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (tenant, recording_id, field_id) \
             DO UPDATE SET value = excluded.value",
            &args![tenant, recording, field, value],
        )
        .await
        .map_err(fk_to_not_found(tenant, format!("{recording} / {field}")))?;
        Ok(())
    }

    /// A recording's custom values as (field id, value).
    pub async fn custom_values(
        &self,
        tenant: &str,
        recording: Uuid,
    ) -> Result<Vec<(Uuid, String)>> {
        self.rows(
            "SELECT field_id, value FROM custom_field_values WHERE tenant = $1 AND recording_id = $2 \
             ORDER BY field_id",
            &args![tenant, recording],
            |r| Ok((r.uuid("field_id")?, r.text("value")?)),
        )
        .await
    }

    /// Saves (or overwrites, by name) one of the user's searches.
    pub async fn save_query(
        &self,
        tenant: &str,
        user_id: Uuid,
        name: &str,
        query: &SearchQuery,
    ) -> Result<SavedQuery> {
        if name.trim().is_empty() {
            return Err(invalid("saved query name", "must not be empty"));
        }
        let filter =
            serde_json::to_string(query).map_err(|e| invalid("saved query", e.to_string()))?;
        let now = now_micros();
        let id = self
            .row(
                "INSERT INTO saved_queries (tenant, id, user_id, name, filter, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant, user_id, name) \
                 DO UPDATE SET filter = excluded.filter RETURNING id",
                &args![tenant, Uuid::new_v4(), user_id, name, filter, now],
                |r| r.uuid("id"),
            )
            .await
            .map_err(|e| match e {
                DbError::Sql(sqlx::Error::Database(d)) if d.is_foreign_key_violation() => {
                    DbError::NotFound {
                        kind: "user",
                        tenant: tenant.to_owned(),
                        id: user_id.to_string(),
                    }
                }
                other => other,
            })?
            .ok_or_else(|| DbError::Conflict("saved query upsert returned nothing".to_owned()))?;
        Ok(SavedQuery {
            id,
            user_id,
            name: name.to_owned(),
            query: query.clone(),
            created_at: now,
        })
    }

    /// The user's saved searches by name.
    pub async fn saved_queries(&self, tenant: &str, user_id: Uuid) -> Result<Vec<SavedQuery>> {
        self.rows(
            "SELECT id, user_id, name, filter, created_at FROM saved_queries \
             WHERE tenant = $1 AND user_id = $2 ORDER BY name",
            &args![tenant, user_id],
            |r| {
                let filter = r.text("filter")?;
                Ok(SavedQuery {
                    id: r.uuid("id")?,
                    user_id: r.uuid("user_id")?,
                    name: r.text("name")?,
                    query: serde_json::from_str(&filter).map_err(|_| DbError::Corrupt {
                        column: "saved_queries.filter",
                        value: filter.clone(),
                    })?,
                    created_at: r.i64("created_at")?,
                })
            },
        )
        .await
    }

    /// Deletes one of the user's saved searches (only the owner's: the user id is part of the key).
    pub async fn delete_saved_query(&self, tenant: &str, user_id: Uuid, id: Uuid) -> Result<()> {
        self.exec(
            "DELETE FROM saved_queries WHERE tenant = $1 AND user_id = $2 AND id = $3",
            &args![tenant, user_id, id],
        )
        .await?;
        Ok(())
    }

    /// Stores (or replaces) the transcript of one channel of a recording.
    pub async fn put_transcript(&self, tenant: &str, t: &Transcript) -> Result<()> {
        if serde_json::from_str::<serde_json::Value>(&t.words).is_err() {
            return Err(invalid("transcript words", "must be JSON"));
        }
        self.exec(
            "INSERT INTO transcripts (tenant, recording_id, channel, engine, language, body, words, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (tenant, recording_id, channel) DO UPDATE SET engine = excluded.engine, \
             language = excluded.language, body = excluded.body, words = excluded.words, \
             created_at = excluded.created_at",
            &args![
                tenant,
                t.recording_id,
                t.channel,
                &t.engine,
                &t.language,
                &t.body,
                &t.words,
                t.created_at
            ],
        )
        .await
        .map_err(fk_to_not_found(tenant, t.recording_id.to_string()))?;
        Ok(())
    }

    /// A recording's transcripts, one per channel.
    pub async fn transcripts(&self, tenant: &str, recording: Uuid) -> Result<Vec<Transcript>> {
        self.rows(
            "SELECT recording_id, channel, engine, language, body, words, created_at FROM transcripts \
             WHERE tenant = $1 AND recording_id = $2 ORDER BY channel",
            &args![tenant, recording],
            |r| {
                Ok(Transcript {
                    recording_id: r.uuid("recording_id")?,
                    channel: r.i64("channel")?,
                    engine: r.text("engine")?,
                    language: r.text("language")?,
                    body: r.text("body")?,
                    words: r.text("words")?,
                    created_at: r.i64("created_at")?,
                })
            },
        )
        .await
    }
}
