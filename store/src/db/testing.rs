//! Fresh, throwaway vault databases for tests of every crate (feature `testing`).
//!
//! Each test gets its own SQLite file or its own PostgreSQL database, so tests run in parallel.
//! PostgreSQL comes from `CALLVAULT_TEST_DATABASE_URL` (a superuser URL; `source
//! scripts/services.sh && start_postgres` provides one); a missing URL fails the test rather than
//! skipping it, so a suite can never pass without having run on PostgreSQL.

use uuid::Uuid;

use super::Db;

/// A migrated vault database that lives as long as the value.
#[derive(Debug)]
pub struct TestDb {
    pub db: Db,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// A fresh SQLite file in a temporary directory.
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite:{}", dir.path().join("vault.db").display());
        let db = Db::connect(&url).await.expect("connect sqlite");
        TestDb {
            db,
            _dir: Some(dir),
        }
    }

    /// A fresh database on the test PostgreSQL server.
    pub async fn postgres() -> Self {
        let url = std::env::var("CALLVAULT_TEST_DATABASE_URL").expect(
            "CALLVAULT_TEST_DATABASE_URL is not set: run `source scripts/services.sh && \
             start_postgres` first (PostgreSQL tests never skip)",
        );
        let name = format!("cv_test_{}", Uuid::new_v4().simple());
        let admin = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .expect("connect to CALLVAULT_TEST_DATABASE_URL");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .expect("create test database");
        admin.close().await;
        let (base, query) = match url.split_once('?') {
            Some((b, q)) => (b, format!("?{q}")),
            None => (url.as_str(), String::new()),
        };
        let (server, _) = base.rsplit_once('/').expect("database URL has a path");
        let db = Db::connect(&format!("{server}/{name}{query}"))
            .await
            .expect("connect postgres");
        TestDb { db, _dir: None }
    }
}

/// Instantiates each named `async fn(TestDb)` as two tokio tests, `<name>::sqlite` and
/// `<name>::postgres`, so one suite runs on both backends.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::db::testing::TestDb::sqlite().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::db::testing::TestDb::postgres().await).await
            }
        }
    )*};
}
