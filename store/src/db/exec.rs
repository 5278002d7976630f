//! Backend dispatch: run one SQL text with bound arguments on whichever pool or transaction is
//! behind a [`Db`] / [`Tx`], and read rows through the backend-neutral [`DbRow`].

use sqlx::{Row, postgres::PgRow, sqlite::SqliteRow};
use uuid::Uuid;

use super::{Db, DbError, Result};

/// Ids bound in one `IN (...)` list: well under SQLite's limit on parameters.
const IN_LIST_MAX: usize = 500;

/// A bound argument. Queries are written once with `$N` placeholders; both drivers accept them.
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    I64(i64),
    OptI64(Option<i64>),
    Text(String),
    OptText(Option<String>),
    Bool(bool),
    OptBool(Option<bool>),
    Uuid(Uuid),
    OptUuid(Option<Uuid>),
}

impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Arg::I64(v)
    }
}
impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Self {
        Arg::OptI64(v)
    }
}
impl From<String> for Arg {
    fn from(v: String) -> Self {
        Arg::Text(v)
    }
}
impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Arg::Text(v.to_owned())
    }
}
impl From<&String> for Arg {
    fn from(v: &String) -> Self {
        Arg::Text(v.clone())
    }
}
impl From<Option<String>> for Arg {
    fn from(v: Option<String>) -> Self {
        Arg::OptText(v)
    }
}
impl From<Option<&str>> for Arg {
    fn from(v: Option<&str>) -> Self {
        Arg::OptText(v.map(str::to_owned))
    }
}
impl From<bool> for Arg {
    fn from(v: bool) -> Self {
        Arg::Bool(v)
    }
}
impl From<Uuid> for Arg {
    fn from(v: Uuid) -> Self {
        Arg::Uuid(v)
    }
}
impl From<Option<Uuid>> for Arg {
    fn from(v: Option<Uuid>) -> Self {
        Arg::OptUuid(v)
    }
}

/// Builds an array of [`Arg`] from heterogeneous values.
macro_rules! args {
    ($($v:expr),* $(,)?) => { [$($crate::db::Arg::from($v)),*] };
}
pub(crate) use args;

/// Column access that is the same on both backends.
pub(crate) trait DbRow {
    fn i64(&self, col: &str) -> Result<i64>;
    fn opt_i64(&self, col: &str) -> Result<Option<i64>>;
    fn text(&self, col: &str) -> Result<String>;
    fn opt_text(&self, col: &str) -> Result<Option<String>>;
    fn bool(&self, col: &str) -> Result<bool>;
    fn uuid(&self, col: &str) -> Result<Uuid>;
    fn opt_uuid(&self, col: &str) -> Result<Option<Uuid>>;
}

macro_rules! impl_db_row {
    ($row:ty) => {
        impl DbRow for $row {
            fn i64(&self, col: &str) -> Result<i64> {
                Ok(self.try_get(col)?)
            }
            fn opt_i64(&self, col: &str) -> Result<Option<i64>> {
                Ok(self.try_get(col)?)
            }
            fn text(&self, col: &str) -> Result<String> {
                Ok(self.try_get(col)?)
            }
            fn opt_text(&self, col: &str) -> Result<Option<String>> {
                Ok(self.try_get(col)?)
            }
            fn bool(&self, col: &str) -> Result<bool> {
                Ok(self.try_get(col)?)
            }
            fn uuid(&self, col: &str) -> Result<Uuid> {
                Ok(self.try_get(col)?)
            }
            fn opt_uuid(&self, col: &str) -> Result<Option<Uuid>> {
                Ok(self.try_get(col)?)
            }
        }
    };
}
impl_db_row!(PgRow);
impl_db_row!(SqliteRow);

macro_rules! bind_all {
    ($q:expr, $args:expr) => {{
        let mut q = $q;
        for a in $args {
            q = match a {
                Arg::I64(v) => q.bind(*v),
                Arg::OptI64(v) => q.bind(*v),
                Arg::Text(v) => q.bind(v.as_str()),
                Arg::OptText(v) => q.bind(v.as_deref()),
                Arg::Bool(v) => q.bind(*v),
                Arg::OptBool(v) => q.bind(*v),
                Arg::Uuid(v) => q.bind(*v),
                Arg::OptUuid(v) => q.bind(*v),
            };
        }
        q
    }};
}

/// Runs the same body against whichever executor is behind `$self` (pool or transaction).
macro_rules! dispatch {
    ($self:expr, $Pg:path, $Lite:path, |$ex:ident| $body:expr) => {
        match $self {
            $Pg($ex) => $body,
            $Lite($ex) => $body,
        }
    };
}

/// A transaction on either backend. Dropped without [`Tx::commit`] it rolls back.
#[derive(Debug)]
pub(crate) enum Tx {
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
}

impl Db {
    pub(crate) async fn begin(&self) -> Result<Tx> {
        Ok(match self {
            Db::Postgres(p) => Tx::Postgres(p.begin().await?),
            Db::Sqlite(p) => Tx::Sqlite(p.begin().await?),
        })
    }

    /// Executes a statement, returning the number of rows it affected.
    pub(crate) async fn exec(&self, sql: &str, args: &[Arg]) -> Result<u64> {
        dispatch!(self, Db::Postgres, Db::Sqlite, |p| Ok(bind_all!(
            sqlx::query(sql),
            args
        )
        .execute(p)
        .await?
        .rows_affected()))
    }

    /// Fetches every row, mapping each with `f`.
    pub(crate) async fn rows<T>(
        &self,
        sql: &str,
        args: &[Arg],
        f: impl Fn(&dyn DbRow) -> Result<T>,
    ) -> Result<Vec<T>> {
        dispatch!(self, Db::Postgres, Db::Sqlite, |p| {
            let rows = bind_all!(sqlx::query(sql), args).fetch_all(p).await?;
            rows.iter().map(|r| f(r)).collect()
        })
    }

    /// Runs `sql` (the tenant as `$1`, `{ids}` where the ids' placeholders go) for `ids`, as
    /// many times as it takes to bind at most [`IN_LIST_MAX`] of them at once, and returns all
    /// the rows: lists read their rows' annotations with a query per 500, not one per row.
    pub(crate) async fn rows_for_ids<T>(
        &self,
        sql: &str,
        tenant: &str,
        ids: &[Uuid],
        f: impl Fn(&dyn DbRow) -> Result<T>,
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        for chunk in ids.chunks(IN_LIST_MAX) {
            let placeholders = (2..2 + chunk.len())
                .map(|i| format!("${i}"))
                .collect::<Vec<_>>()
                .join(", ");
            let args: Vec<Arg> = std::iter::once(tenant.into())
                .chain(chunk.iter().map(|id| (*id).into()))
                .collect();
            out.extend(
                self.rows(&sql.replace("{ids}", &placeholders), &args, &f)
                    .await?,
            );
        }
        Ok(out)
    }

    /// Fetches at most one row.
    pub(crate) async fn row<T>(
        &self,
        sql: &str,
        args: &[Arg],
        f: impl Fn(&dyn DbRow) -> Result<T>,
    ) -> Result<Option<T>> {
        dispatch!(self, Db::Postgres, Db::Sqlite, |p| {
            let row = bind_all!(sqlx::query(sql), args).fetch_optional(p).await?;
            row.as_ref().map(|r| f(r)).transpose()
        })
    }
}

impl Tx {
    pub(crate) async fn commit(self) -> Result<()> {
        match self {
            Tx::Postgres(t) => t.commit().await?,
            Tx::Sqlite(t) => t.commit().await?,
        }
        Ok(())
    }

    pub(crate) async fn exec(&mut self, sql: &str, args: &[Arg]) -> Result<u64> {
        dispatch!(self, Tx::Postgres, Tx::Sqlite, |t| Ok(bind_all!(
            sqlx::query(sql),
            args
        )
        .execute(&mut **t)
        .await?
        .rows_affected()))
    }

    pub(crate) async fn row<T>(
        &mut self,
        sql: &str,
        args: &[Arg],
        f: impl Fn(&dyn DbRow) -> Result<T>,
    ) -> Result<Option<T>> {
        dispatch!(self, Tx::Postgres, Tx::Sqlite, |t| {
            let row = bind_all!(sqlx::query(sql), args)
                .fetch_optional(&mut **t)
                .await?;
            row.as_ref().map(|r| f(r)).transpose()
        })
    }

    pub(crate) fn is_postgres(&self) -> bool {
        matches!(self, Tx::Postgres(_))
    }
}

/// Maps a unique-constraint violation to [`DbError::Conflict`] with `what`, other errors unchanged.
pub(crate) fn conflict_on_unique(err: DbError, what: impl FnOnce() -> String) -> DbError {
    if let DbError::Sql(sqlx::Error::Database(e)) = &err
        && e.is_unique_violation()
    {
        return DbError::Conflict(what());
    }
    err
}
