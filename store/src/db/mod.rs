//! The vault's database: one schema for PostgreSQL (cluster) and SQLite (standalone).
//!
//! Every query is written once: both backends accept `$N` placeholders, times are `i64`
//! microseconds since the Unix epoch, ids are UUIDs (PostgreSQL `UUID`, SQLite 16-byte `BLOB`),
//! JSON is stored as text. [`Db`] dispatches each statement to the pool behind it.
//!
//! Tenancy: every function takes the tenant and every statement filters by it.

mod alarms;
mod annotations;
mod audit;
mod catalogue;
mod directory;
mod exec;
mod jobs;
mod model;
mod portal;
mod provisioning;
mod recorder;
mod recordings;
mod sealed;
mod search;
mod speech;
#[cfg(feature = "testing")]
pub mod testing;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

pub use alarms::{ActivityEntry, Alarm, AlarmSeverity};
pub use annotations::{CustomField, CustomFieldType, Note, SavedQuery, Tag, Transcript};
pub use audit::{
    AuditCheckpoint, AuditEntry, AuditFilter, AuditVerification, ChainBreak, GENESIS_HASH,
    NewAuditEntry, PURGE_ACTION, PurgeReport, audit_entry_hash,
};
pub use catalogue::{CatalogueCounts, CatalogueItem, Column, ColumnKind};
pub use directory::{Group, NewUser, User, UserSource, WebSession};
pub use jobs::{ArchiveCounts, RetentionOverview};
pub use model::{
    ArchiveCopy, Attendance, Audience, CallType, DeleteMode, Direction, FinishRecording,
    NewRecording, Party, Recording, RecordingStatus, ReleaseCause,
};
pub use portal::{LiveSession, SessionLookup};
pub use provisioning::{UserFilter, UserProfile};
pub use recorder::RecoveredRecording;
pub use sealed::{SealedFields, raw_metadata_digest};
pub use search::{
    AccessScope, DurationFilter, DurationOp, PartyPattern, SearchPage, SearchQuery, SortDirection,
    SortKey, TagMatch,
};
pub use speech::{SpeechCounts, SpeechJobState, SpeechPosition, SpeechSelection};

pub(crate) use exec::{Arg, Tx};

/// Errors of the database layer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("unsupported database URL {0:?}: expected postgres://, postgresql:// or sqlite:")]
    UnsupportedUrl(String),
    #[error("invalid database URL: {0}")]
    InvalidUrl(#[source] sqlx::Error),
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{kind} {id} not found in tenant {tenant}")]
    NotFound {
        kind: &'static str,
        tenant: String,
        id: String,
    },
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("stored value in column {column} is invalid: {value:?}")]
    Corrupt { column: &'static str, value: String },
    #[error("search cursor is invalid or belongs to another sort order")]
    BadCursor,
}

pub type Result<T, E = DbError> = std::result::Result<T, E>;

pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> DbError {
    DbError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// Which database a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// A handle on the vault database; cheap to clone (the pools are shared).
#[derive(Debug, Clone)]
pub enum Db {
    Postgres(sqlx::PgPool),
    Sqlite(sqlx::SqlitePool),
}

static PG_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");
static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

impl Db {
    /// Connects to `url` (`postgres://…`, `postgresql://…` or `sqlite:path`; a missing SQLite file
    /// is created) and brings the schema up to date.
    pub async fn connect(url: &str) -> Result<Self> {
        let db = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let opts = PgConnectOptions::from_str(url).map_err(DbError::InvalidUrl)?;
            let pool = PgPoolOptions::new()
                .max_connections(10)
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(opts)
                .await?;
            Db::Postgres(pool)
        } else if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)
                .map_err(DbError::InvalidUrl)?
                .create_if_missing(true)
                .foreign_keys(true)
                // WAL lets readers proceed during a write; FULL sync because a lost commit is a
                // lost recording row.
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(30));
            let pool = SqlitePoolOptions::new()
                .max_connections(4)
                .connect_with(opts)
                .await?;
            Db::Sqlite(pool)
        } else {
            return Err(DbError::UnsupportedUrl(url.to_owned()));
        };
        db.migrate().await?;
        Ok(db)
    }

    /// Applies pending migrations; running it again is a no-op.
    pub async fn migrate(&self) -> Result<()> {
        match self {
            Db::Postgres(pool) => PG_MIGRATOR.run(pool).await?,
            Db::Sqlite(pool) => SQLITE_MIGRATOR.run(pool).await?,
        }
        Ok(())
    }

    pub fn backend(&self) -> Backend {
        match self {
            Db::Postgres(_) => Backend::Postgres,
            Db::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// Closes every pooled connection.
    pub async fn close(&self) {
        match self {
            Db::Postgres(pool) => pool.close().await,
            Db::Sqlite(pool) => pool.close().await,
        }
    }
}

/// Microseconds since the Unix epoch, the one time representation of the schema.
pub fn now_micros() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// Lower-cased words separated by single spaces, padded with one space on each side, so that a
/// whole-word (or whole-phrase) match is `LIKE '% word %'` on any backend.
pub(crate) fn word_norm(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push(' ');
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        out.extend(word.chars().flat_map(char::to_lowercase));
        out.push(' ');
    }
    out
}

/// Escapes LIKE metacharacters (`%`, `_`, and the escape `\` itself); patterns use `ESCAPE '\'`.
pub(crate) fn like_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_norm_folds_case_and_punctuation() {
        assert_eq!(word_norm("Sales-feedback, CALL!"), " sales feedback call ");
        assert_eq!(word_norm(""), " ");
        assert_eq!(word_norm("Ärzte"), " ärzte ");
    }

    #[test]
    fn like_escape_escapes_metacharacters() {
        assert_eq!(like_escape(r"50%_a\b"), r"50\%\_a\\b");
    }
}
