//! `callvault backup` and `callvault restore`: the catalogue (every database row a restored
//! system needs: recordings, users, groups, tags, notes, transcripts, archive copies, audit
//! trail, alarms) and the configuration (resource YAML; standalone's passphrase-protected keys,
//! audit checkpoint key and Secrets), encrypted, never the media. Restoring on a new system
//! that reaches the same storage brings every recording back to playable.
//!
//! Inside the encryption ([`callvault_store::backup`]) a backup is JSON lines: a header, the
//! files, the catalogue's tables and rows, and an end line with the counts. The key is a secret
//! of at least 16 characters from `--key-file` or `CALLVAULT_BACKUP_KEY`, never an argument.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use callvault_store::backup::{BackupReader, BackupSecret, BackupWriter};
use callvault_store::db::{CatalogueCounts, CatalogueItem, Column, Db, now_micros};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Environment variable holding the backup key (for automation; prefer a file).
pub const KEY_ENV: &str = "CALLVAULT_BACKUP_KEY";
const FORMAT: &str = "callvault-backup";
/// The parts of a standalone data directory that are configuration (the rest is the
/// database, recordings, spool and earlier backups).
const DATA_PARTS: &[&str] = &["keys", "audit", "resources", "secrets"];

/// Where the backup key comes from.
#[derive(Debug, Clone, clap::Args)]
pub struct KeyArgs {
    /// File whose content (one trailing newline removed) is the backup key, at least 16
    /// characters. Otherwise CALLVAULT_BACKUP_KEY.
    #[arg(long)]
    pub key_file: Option<PathBuf>,
}

impl KeyArgs {
    pub fn read(&self) -> anyhow::Result<BackupSecret> {
        let text = match &self.key_file {
            Some(path) => Zeroizing::new(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading the backup key file {}", path.display()))?,
            ),
            None => Zeroizing::new(
                std::env::var(KEY_ENV)
                    .map_err(|_| anyhow::anyhow!("no backup key: use --key-file or {KEY_ENV}"))?,
            ),
        };
        let key = text.strip_suffix('\n').unwrap_or(&text);
        let key = key.strip_suffix('\r').unwrap_or(key);
        Ok(BackupSecret::new(key.as_bytes())?)
    }
}

/// The system backed up or restored into.
#[derive(Debug, Clone, clap::Args)]
pub struct SystemArgs {
    /// A standalone data directory: its database (`callvault.db`) and configuration files.
    #[arg(
        long,
        conflicts_with = "database_url_file",
        required_unless_present = "database_url_file"
    )]
    pub data: Option<PathBuf>,
    /// File holding the database URL (a cluster's PostgreSQL, as mounted for the portal).
    #[arg(long)]
    pub database_url_file: Option<PathBuf>,
    /// Directory of resource YAML (standalone's `--resources`, or a cluster's exported
    /// resources): backed up, or restored into (it must not hold the backup's files yet).
    #[arg(long)]
    pub resources: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    #[command(flatten)]
    system: SystemArgs,
    /// The backup file to write (not overwritten).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    key: KeyArgs,
}

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    system: SystemArgs,
    /// The backup file to restore.
    #[arg(long = "in")]
    input: PathBuf,
    #[command(flatten)]
    key: KeyArgs,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Line {
    Header {
        format: String,
        created_at: i64,
        schema_version: i64,
    },
    /// A configuration file: `data/<part>/…` or `resources/<name>`, content in hex.
    File {
        path: String,
        hex: String,
    },
    Table {
        name: String,
        columns: Vec<Column>,
    },
    Row(Vec<serde_json::Value>),
    End {
        files: u64,
        tables: u64,
        rows: u64,
    },
}

/// What a backup held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub files: u64,
    pub catalogue: CatalogueCounts,
}

pub fn backup(args: BackupArgs) -> anyhow::Result<ExitCode> {
    let key = args.key.read()?;
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    let summary = runtime.block_on(async {
        let db = connect(&args.system).await?;
        let s = write_backup(&db, &args.system, &args.out, &key).await;
        db.close().await;
        s
    })?;
    println!(
        "backup {}: {} tables, {} rows, {} configuration files (no media)",
        args.out.display(),
        summary.catalogue.tables,
        summary.catalogue.rows,
        summary.files
    );
    Ok(ExitCode::SUCCESS)
}

pub fn restore(args: RestoreArgs) -> anyhow::Result<ExitCode> {
    let key = args.key.read()?;
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    let summary = runtime.block_on(restore_backup(&args.system, &args.input, &key))?;
    println!(
        "restored {}: {} tables, {} rows, {} configuration files",
        args.input.display(),
        summary.catalogue.tables,
        summary.catalogue.rows,
        summary.files
    );
    Ok(ExitCode::SUCCESS)
}

async fn connect(system: &SystemArgs) -> anyhow::Result<Db> {
    let url = match (&system.data, &system.database_url_file) {
        (Some(data), _) => {
            std::fs::create_dir_all(data)
                .with_context(|| format!("creating {}", data.display()))?;
            format!("sqlite://{}", data.join("callvault.db").display())
        }
        (None, Some(file)) => {
            callvault_jobs::vault::read_secret_file(file, "the database URL")?.to_string()
        }
        (None, None) => bail!("give --data or --database-url-file"),
    };
    Db::connect(&url).await.context("opening the database")
}

/// The configuration files of `system`: (name in the backup, path on disk).
fn config_files(system: &SystemArgs) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut files = Vec::new();
    if let Some(data) = &system.data {
        for part in DATA_PARTS {
            walk(&data.join(part), &format!("data/{part}"), &mut files)?;
        }
    }
    if let Some(dir) = &system.resources {
        for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            let yaml = path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| e == "yaml" || e == "yml");
            if yaml && let Some(name) = path.file_name().and_then(|n| n.to_str()) {
                files.push((format!("resources/{name}"), path.clone()));
            }
        }
    }
    files.sort();
    Ok(files)
}

fn walk(dir: &Path, name: &str, out: &mut Vec<(String, PathBuf)>) -> anyhow::Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries {
        let entry = entry?;
        let file = entry.file_name();
        let file = file
            .to_str()
            .with_context(|| format!("{} has a name that is not UTF-8", entry.path().display()))?;
        let child = format!("{name}/{file}");
        if entry.file_type()?.is_dir() {
            walk(&entry.path(), &child, out)?;
        } else {
            out.push((child, entry.path()));
        }
    }
    Ok(())
}

/// Writes the backup of `db` and `system`'s configuration to `out` (a new file; a failed
/// backup leaves none).
pub async fn write_backup(
    db: &Db,
    system: &SystemArgs,
    out: &Path,
    key: &BackupSecret,
) -> anyhow::Result<Summary> {
    let partial = out.with_extension("partial");
    let result = write_to(db, system, &partial, key).await;
    match result {
        Ok(summary) => {
            if out.exists() {
                let _ = std::fs::remove_file(&partial);
                bail!("{} exists already: not overwritten", out.display());
            }
            std::fs::rename(&partial, out).with_context(|| format!("writing {}", out.display()))?;
            Ok(summary)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e)
        }
    }
}

async fn write_to(
    db: &Db,
    system: &SystemArgs,
    path: &Path,
    key: &BackupSecret,
) -> anyhow::Result<Summary> {
    let file = private_file(path)?;
    let mut w = BufWriter::new(BackupWriter::new(BufWriter::new(file), key)?);
    let line = |l: &Line, w: &mut dyn Write| -> std::io::Result<()> {
        serde_json::to_writer(&mut *w, l)?;
        w.write_all(b"\n")
    };
    line(
        &Line::Header {
            format: FORMAT.to_owned(),
            created_at: now_micros(),
            schema_version: db.schema_version().await?,
        },
        &mut w,
    )?;
    let mut summary = Summary::default();
    for (name, path) in config_files(system)? {
        let content = Zeroizing::new(
            std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
        );
        line(
            &Line::File {
                path: name,
                hex: hex::encode(&*content),
            },
            &mut w,
        )?;
        summary.files += 1;
    }
    summary.catalogue = db
        .export_catalogue(&mut |item| {
            let l = match item {
                CatalogueItem::Table { name, columns } => Line::Table {
                    name: name.clone(),
                    columns: columns.clone(),
                },
                CatalogueItem::Row(values) => Line::Row(values.clone()),
            };
            line(&l, &mut w)
        })
        .await?;
    line(
        &Line::End {
            files: summary.files,
            tables: summary.catalogue.tables,
            rows: summary.catalogue.rows,
        },
        &mut w,
    )?;
    let inner = w.into_inner().map_err(|e| e.into_error())?;
    let mut file = inner.finish()?;
    file.flush()?;
    file.get_ref().sync_all()?;
    Ok(summary)
}

fn private_file(path: &Path) -> anyhow::Result<std::fs::File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path)
        .with_context(|| format!("creating {}", path.display()))
}

/// The lines of a backup, decrypted as they are read.
fn lines(
    input: &Path,
    key: &BackupSecret,
) -> anyhow::Result<impl Iterator<Item = std::io::Result<Line>>> {
    let file =
        std::fs::File::open(input).with_context(|| format!("opening {}", input.display()))?;
    let reader = BackupReader::new(BufReader::new(file), key)
        .with_context(|| format!("{}", input.display()))?;
    Ok(BufReader::new(reader)
        .lines()
        .map(|l| l.and_then(|l| serde_json::from_str(&l).map_err(std::io::Error::other))))
}

/// Restores `input` into `system`: the whole file is decrypted and checked first, so a wrong
/// key or a damaged file changes nothing; then the catalogue goes into the (empty) database in
/// one transaction, and only once it is committed are the configuration files written.
pub async fn restore_backup(
    system: &SystemArgs,
    input: &Path,
    key: &BackupSecret,
) -> anyhow::Result<Summary> {
    // Pass 1: authenticate every chunk, read the header, files and counts.
    let mut schema_version = None;
    let mut files = Vec::new();
    let mut seen = Summary::default();
    let mut end = None;
    for l in lines(input, key)? {
        match l.with_context(|| format!("reading {}", input.display()))? {
            Line::Header {
                format,
                schema_version: v,
                ..
            } => {
                if format != FORMAT {
                    bail!("{} is not a CallVault backup ({format})", input.display());
                }
                schema_version = Some(v);
            }
            Line::File { path, hex } => {
                let content = hex::decode(&hex)
                    .with_context(|| format!("file {path} in the backup is damaged"))?;
                files.push((path, Zeroizing::new(content)));
                seen.files += 1;
            }
            Line::Table { .. } => seen.catalogue.tables += 1,
            Line::Row(_) => seen.catalogue.rows += 1,
            Line::End {
                files,
                tables,
                rows,
            } => end = Some((files, tables, rows)),
        }
    }
    let schema_version = schema_version.context("the backup has no header")?;
    let counts = (seen.files, seen.catalogue.tables, seen.catalogue.rows);
    if end != Some(counts) {
        bail!(
            "the backup is incomplete: it ends with {end:?} but holds {counts:?} (files, \
             tables, rows)"
        );
    }
    let targets = file_targets(system, &files)?;

    // Pass 2: the catalogue, in one transaction.
    let db = connect(system).await?;
    let mut items = lines(input, key)?.filter_map(|l| match l {
        Ok(Line::Table { name, columns }) => Some(Ok(CatalogueItem::Table { name, columns })),
        Ok(Line::Row(values)) => Some(Ok(CatalogueItem::Row(values))),
        Ok(_) => None,
        Err(e) => Some(Err(e)),
    });
    let imported = db.import_catalogue(schema_version, &mut items).await;
    db.close().await;
    let imported = imported.context("restoring the catalogue (nothing was restored)")?;

    for (path, (_, content)) in targets.iter().zip(&files) {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut file = private_file(path)?;
        file.write_all(content)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(Summary {
        files: seen.files,
        catalogue: imported,
    })
}

/// Where each file of the backup goes; refused when one exists already or has no place.
fn file_targets(
    system: &SystemArgs,
    files: &[(String, Zeroizing<Vec<u8>>)],
) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::with_capacity(files.len());
    for (name, _) in files {
        if name.split('/').any(|part| part == ".." || part.is_empty()) {
            bail!("the backup names a file outside its directories: {name:?}");
        }
        let path = if let Some(rest) = name.strip_prefix("data/") {
            let Some(data) = &system.data else {
                bail!("the backup holds standalone files ({name}): restore it with --data");
            };
            data.join(rest)
        } else if let Some(rest) = name.strip_prefix("resources/") {
            let Some(dir) = &system.resources else {
                bail!("the backup holds resource files ({name}): say where with --resources");
            };
            dir.join(rest)
        } else {
            bail!("the backup names an unknown file {name:?}");
        };
        if path.exists() {
            bail!(
                "{} exists already: restore into a new data directory and resources directory",
                path.display()
            );
        }
        out.push(path);
    }
    Ok(out)
}
