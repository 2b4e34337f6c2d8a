//! Store fixtures: a fresh Postgres database per test (dropped after it), or an SQLite file in a
//! directory of its own, and one secrets key per test process.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use connect_axum::store::{Keyring, Store, TenantRecord};
use sqlx::{Connection, Executor, PgConnection};

/// The Postgres server tests create their databases on: `TEST_DATABASE_URL`, by default
/// `postgres://postgres@127.0.0.1:5432/postgres`.
pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A name no other test of any process uses (databases, roles).
pub fn unique_name() -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    format!(
        "connect_axum_test_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst),
        rand08::random::<u32>()
    )
}

/// The secrets key of this test process (base64), as an operator sets `SECRETS_KEY`.
pub fn secrets_key() -> &'static str {
    static KEY: OnceLock<String> = OnceLock::new();
    KEY.get_or_init(|| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(rand08::random::<[u8; 32]>())
    })
}

/// The keyring of [`secrets_key`].
pub fn keyring() -> Arc<Keyring> {
    Arc::new(Keyring::parse(secrets_key(), "").expect("a valid key"))
}

/// The tenant `store` holds under `client_key`, if any: the one lookup of a stored tenant the
/// kit and its users' tests make (through [`TestApp::stored_tenant`](crate::TestApp::stored_tenant)
/// and its kin), so that a change of the store's API changes only this.
///
/// # Panics
/// When the store does not answer.
pub async fn find_tenant_in(store: &Store, client_key: &str) -> Option<Arc<TenantRecord>> {
    store
        .tenants()
        .find(client_key)
        .await
        .expect("the store answers")
}

/// A database made for one test and dropped after it.
pub enum TestDb {
    /// A database of its own on a Postgres server, dropped (with force) when this is.
    Postgres {
        /// The server's URL as its admin, who creates and drops the database.
        admin_url: String,
        /// The database's unique name.
        name: String,
    },
    /// A SQLite file in a temporary directory, removed with it.
    Sqlite(tempfile::TempDir),
    /// The embedded store in memory: nothing to remove.
    Memory,
    /// Another app's database, dropped with that app.
    Shared,
}

impl TestDb {
    /// A fresh database on the Postgres server at `admin_url`; returns it and its URL.
    ///
    /// # Panics
    /// When the server does not answer.
    pub async fn postgres(admin_url: &str) -> (Self, String) {
        let name = unique_name();
        let mut admin = PgConnection::connect(admin_url).await.unwrap_or_else(|e| {
            panic!("a Postgres server at TEST_DATABASE_URL ({admin_url}): {e}")
        });
        admin
            .execute(format!(r#"create database "{name}""#).as_str())
            .await
            .expect("create database");
        let _ = admin.close().await;
        let mut url = url::Url::parse(admin_url).expect("a URL");
        url.set_path(&name);
        let db = TestDb::Postgres {
            admin_url: admin_url.to_owned(),
            name,
        };
        (db, url.to_string())
    }

    /// A fresh SQLite file; returns it and its URL.
    pub fn sqlite() -> (Self, String) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let url = format!("sqlite://{}", dir.path().join("test.db").display());
        (TestDb::Sqlite(dir), url)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let TestDb::Postgres { admin_url, name } = self {
            admin_cleanup(
                admin_url,
                vec![format!(r#"drop database if exists "{name}" with (force)"#)],
            );
        }
    }
}

/// Runs `statements` on the Postgres server at `admin_url`, ignoring failures: the cleanup of a
/// test's databases and roles. Drop runs inside the test's runtime (which may be shutting
/// down), so the cleanup gets a runtime of its own.
pub fn admin_cleanup(admin_url: &str, statements: Vec<String>) {
    let admin_url = admin_url.to_owned();
    let _ = std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        runtime.block_on(async {
            if let Ok(mut admin) = PgConnection::connect(&admin_url).await {
                for sql in statements {
                    let _ = admin.execute(sql.as_str()).await;
                }
            }
        })
    })
    .join();
}
