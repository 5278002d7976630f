//! The catalogue as a stream of tables and rows, for backup and restore: every table of the
//! schema except the ones that only make sense on the running system (sign-in sessions,
//! password reset links, the audit purge's transient permit, the migration history).
//!
//! Tables are read with their column types from the database itself, and each value is
//! written as JSON by kind (UUID as text, integers, booleans, text), so a catalogue taken from
//! SQLite restores into PostgreSQL and back. Parents come before the tables that refer to
//! them. A restore goes into an empty database of the same or a newer schema, in one
//! transaction: on any error nothing is kept.

use futures::TryStreamExt as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::Row as _;
use uuid::Uuid;

use super::exec::Arg;
use super::{Db, DbError, Result, Tx, invalid};

/// Tables that are never backed up: sessions and reset links must not outlive the system
/// they were issued on, the purge permit is empty outside a purge, and the migration history
/// belongs to the database restored into.
const SKIPPED: &[&str] = &[
    "_sqlx_migrations",
    "web_sessions",
    "password_resets",
    "audit_purge_permit",
];
/// Tables other tables refer to, in the order they are written (the rest follow by name).
const PARENTS: &[&str] = &["users", "groups", "tags", "custom_fields", "recordings"];

/// How a column's values are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnKind {
    Uuid,
    Int,
    Bool,
    Text,
}

/// One column of a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    pub kind: ColumnKind,
}

/// One item of the stream: a table's header, then its rows (values in column order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatalogueItem {
    Table { name: String, columns: Vec<Column> },
    Row(Vec<Value>),
}

/// What an export or import covered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogueCounts {
    pub tables: u64,
    pub rows: u64,
}

struct TableInfo {
    name: String,
    columns: Vec<Column>,
    /// PostgreSQL identity columns, given explicit values on restore.
    identity: Vec<String>,
}

macro_rules! on_tx {
    ($tx:expr, |$t:ident| $body:expr) => {
        match $tx {
            Tx::Postgres($t) => $body,
            Tx::Sqlite($t) => $body,
        }
    };
}

impl Db {
    /// The newest migration applied to this database.
    pub async fn schema_version(&self) -> Result<i64> {
        Ok(self
            .row(
                "SELECT COALESCE(MAX(version), 0) AS v FROM _sqlx_migrations WHERE success",
                &[],
                |r| r.i64("v"),
            )
            .await?
            .unwrap_or(0))
    }

    async fn catalogue_tables(&self) -> Result<Vec<TableInfo>> {
        let names = match self {
            Db::Postgres(_) => {
                self.rows(
                    "SELECT table_name::TEXT AS name FROM information_schema.tables \
                     WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
                    &[],
                    |r| r.text("name"),
                )
                .await?
            }
            Db::Sqlite(_) => {
                self.rows(
                    "SELECT name FROM sqlite_master WHERE type = 'table' \
                     AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
                    &[],
                    |r| r.text("name"),
                )
                .await?
            }
        };
        let mut names: Vec<String> = names
            .into_iter()
            .filter(|n| !SKIPPED.contains(&n.as_str()))
            .collect();
        let rank = |n: &String| PARENTS.iter().position(|p| p == n).unwrap_or(PARENTS.len());
        names.sort_by(|a, b| rank(a).cmp(&rank(b)).then_with(|| a.cmp(b)));
        let mut tables = Vec::with_capacity(names.len());
        for name in names {
            tables.push(self.table_info(name).await?);
        }
        Ok(tables)
    }

    async fn table_info(&self, name: String) -> Result<TableInfo> {
        let cols: Vec<(String, String, bool)> = match self {
            Db::Postgres(_) => {
                self.rows(
                    "SELECT column_name::TEXT AS name, data_type::TEXT AS type, \
                     (is_identity = 'YES') AS identity FROM information_schema.columns \
                     WHERE table_schema = current_schema() AND table_name = $1 \
                     ORDER BY ordinal_position",
                    &[name.as_str().into()],
                    |r| Ok((r.text("name")?, r.text("type")?, r.bool("identity")?)),
                )
                .await?
            }
            Db::Sqlite(_) => {
                self.rows(
                    "SELECT name, type FROM pragma_table_info($1) ORDER BY cid",
                    &[name.as_str().into()],
                    |r| Ok((r.text("name")?, r.text("type")?, false)),
                )
                .await?
            }
        };
        let mut columns = Vec::with_capacity(cols.len());
        let mut identity = Vec::new();
        for (column, type_, is_identity) in cols {
            let kind = match type_.to_ascii_lowercase().as_str() {
                "uuid" | "blob" => ColumnKind::Uuid,
                "bigint" | "integer" | "smallint" => ColumnKind::Int,
                "boolean" => ColumnKind::Bool,
                "text" | "character varying" => ColumnKind::Text,
                other => {
                    return Err(invalid(
                        "schema",
                        format!(
                            "column {name}.{column} has type {other}, which backups do not cover"
                        ),
                    ));
                }
            };
            if is_identity {
                identity.push(column.clone());
            }
            columns.push(Column { name: column, kind });
        }
        Ok(TableInfo {
            name,
            columns,
            identity,
        })
    }

    /// Streams every backed-up table into `out`, a header then its rows, parents first, all
    /// read in one transaction: a snapshot, so a row is never exported without the rows it
    /// refers to while recording goes on.
    pub async fn export_catalogue(
        &self,
        out: &mut (dyn FnMut(&CatalogueItem) -> std::io::Result<()> + Send),
    ) -> Result<CatalogueCounts> {
        let io = |e: std::io::Error| invalid("backup output", e.to_string());
        let mut counts = CatalogueCounts::default();
        let tables = self.catalogue_tables().await?;
        let mut tx = self.begin().await?;
        if tx.is_postgres() {
            tx.exec(
                "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY",
                &[],
            )
            .await?;
        }
        for table in tables {
            out(&CatalogueItem::Table {
                name: table.name.clone(),
                columns: table.columns.clone(),
            })
            .map_err(io)?;
            counts.tables += 1;
            let list = quoted_list(&table.columns);
            let sql = format!("SELECT {list} FROM \"{}\"", table.name);
            on_tx!(&mut tx, |t| {
                let mut rows = sqlx::query(&sql).fetch(&mut **t);
                while let Some(row) = rows.try_next().await? {
                    let mut values = Vec::with_capacity(table.columns.len());
                    for (i, c) in table.columns.iter().enumerate() {
                        values.push(match c.kind {
                            ColumnKind::Uuid => row
                                .try_get::<Option<Uuid>, _>(i)?
                                .map_or(Value::Null, |u| Value::String(u.to_string())),
                            ColumnKind::Int => row
                                .try_get::<Option<i64>, _>(i)?
                                .map_or(Value::Null, Value::from),
                            ColumnKind::Bool => row
                                .try_get::<Option<bool>, _>(i)?
                                .map_or(Value::Null, Value::Bool),
                            ColumnKind::Text => row
                                .try_get::<Option<String>, _>(i)?
                                .map_or(Value::Null, Value::String),
                        });
                    }
                    out(&CatalogueItem::Row(values)).map_err(io)?;
                    counts.rows += 1;
                }
            });
        }
        tx.commit().await?;
        Ok(counts)
    }

    /// Loads a stream written by [`Db::export_catalogue`] into this database, which must be
    /// empty, in one transaction: the first problem (an item that does not fit, a read error
    /// of the stream) rolls everything back. `schema_version` is the backup's: one newer than
    /// this database is refused.
    pub async fn import_catalogue(
        &self,
        schema_version: i64,
        items: &mut (dyn Iterator<Item = std::io::Result<CatalogueItem>> + Send),
    ) -> Result<CatalogueCounts> {
        let ours = self.schema_version().await?;
        if schema_version > ours {
            return Err(DbError::Conflict(format!(
                "the backup's schema (migration {schema_version}) is newer than this database's \
                 ({ours}): restore it with the CallVault version that made it, or a newer one"
            )));
        }
        let tables = self.catalogue_tables().await?;
        for t in &tables {
            let any = self
                .row(
                    &format!("SELECT CAST(1 AS BIGINT) AS x FROM \"{}\" LIMIT 1", t.name),
                    &[],
                    |r| r.i64("x"),
                )
                .await?;
            if any.is_some() {
                return Err(DbError::Conflict(format!(
                    "the database is not empty (table {} has rows): restore into a new database",
                    t.name
                )));
            }
        }
        let mut tx = self.begin().await?;
        let mut counts = CatalogueCounts::default();
        let mut current: Option<(TableInfo, Vec<ColumnKind>, String)> = None;
        for item in items {
            let item = item.map_err(|e| invalid("backup", e.to_string()))?;
            match item {
                CatalogueItem::Table { name, columns } => {
                    if let Some((done, _, _)) = current.take() {
                        reset_identity(&mut tx, &done).await?;
                    }
                    let target = tables.iter().find(|t| t.name == name).ok_or_else(|| {
                        invalid(
                            "backup",
                            format!("table {name} does not exist in this database's schema"),
                        )
                    })?;
                    for c in &columns {
                        if !target.columns.iter().any(|t| t.name == c.name) {
                            return Err(invalid(
                                "backup",
                                format!("column {name}.{} does not exist in this database", c.name),
                            ));
                        }
                    }
                    let marks: Vec<String> = (1..=columns.len()).map(|i| format!("${i}")).collect();
                    let overriding = if tx.is_postgres()
                        && columns.iter().any(|c| target.identity.contains(&c.name))
                    {
                        " OVERRIDING SYSTEM VALUE"
                    } else {
                        ""
                    };
                    let sql = format!(
                        "INSERT INTO \"{name}\" ({}){overriding} VALUES ({})",
                        quoted_list(&columns),
                        marks.join(", ")
                    );
                    let kinds = columns.iter().map(|c| c.kind).collect();
                    current = Some((
                        TableInfo {
                            name,
                            columns,
                            identity: target.identity.clone(),
                        },
                        kinds,
                        sql,
                    ));
                    counts.tables += 1;
                }
                CatalogueItem::Row(values) => {
                    let Some((table, kinds, sql)) = &current else {
                        return Err(invalid("backup", "a row before any table"));
                    };
                    if values.len() != kinds.len() {
                        return Err(invalid(
                            "backup",
                            format!(
                                "a row of {} has {} values for {} columns",
                                table.name,
                                values.len(),
                                kinds.len()
                            ),
                        ));
                    }
                    let args = values
                        .into_iter()
                        .zip(kinds)
                        .map(|(v, k)| arg(&table.name, *k, v))
                        .collect::<Result<Vec<Arg>>>()?;
                    tx.exec(sql, &args).await?;
                    counts.rows += 1;
                }
            }
        }
        if let Some((done, _, _)) = current.take() {
            reset_identity(&mut tx, &done).await?;
        }
        tx.commit().await?;
        Ok(counts)
    }
}

/// New rows of a restored PostgreSQL table with an identity column continue after the
/// restored ones (SQLite's AUTOINCREMENT follows explicit ids by itself).
async fn reset_identity(tx: &mut Tx, table: &TableInfo) -> Result<()> {
    if !tx.is_postgres() {
        return Ok(());
    }
    for column in &table.identity {
        let (t, c) = (&table.name, column);
        tx.row(
            &format!(
                "SELECT setval(pg_get_serial_sequence('\"{t}\"', '{c}'), \
                 COALESCE(MAX(\"{c}\"), 0) + 1, false) AS v FROM \"{t}\""
            ),
            &[],
            |r| r.i64("v"),
        )
        .await?;
    }
    Ok(())
}

fn quoted_list(columns: &[Column]) -> String {
    columns
        .iter()
        .map(|c| format!("\"{}\"", c.name))
        .collect::<Vec<_>>()
        .join(", ")
}

fn arg(table: &str, kind: ColumnKind, value: Value) -> Result<Arg> {
    let bad = |v: &Value| {
        invalid(
            "backup",
            format!("a value of {table} is not a {kind:?}: {v}"),
        )
    };
    Ok(match (kind, &value) {
        (ColumnKind::Uuid, Value::Null) => Arg::OptUuid(None),
        (ColumnKind::Int, Value::Null) => Arg::OptI64(None),
        (ColumnKind::Bool, Value::Null) => Arg::OptBool(None),
        (ColumnKind::Text, Value::Null) => Arg::OptText(None),
        (ColumnKind::Uuid, Value::String(s)) => Arg::Uuid(s.parse().map_err(|_| bad(&value))?),
        (ColumnKind::Int, Value::Number(n)) => Arg::I64(n.as_i64().ok_or_else(|| bad(&value))?),
        (ColumnKind::Bool, Value::Bool(b)) => Arg::Bool(*b),
        (ColumnKind::Text, Value::String(s)) => Arg::Text(s.clone()),
        _ => return Err(bad(&value)),
    })
}
