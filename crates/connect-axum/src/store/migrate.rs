//! The store's migrations: the library's and an app's, run as one set on either backend.

use sqlx::migrate::{Migration, Migrator};

use super::Backend;

/// What an app adds to the store beside the library's: its migrations, one set for each backend
/// (its `sqlx::migrate!` folders) or one set both run, and the tables of its that hold tenant
/// data. The migrations run with the library's as one set, so that each side's applied versions
/// are known to the other and sqlx still refuses a version nobody knows.
#[derive(Debug, Clone, Default)]
pub struct AppMigrations {
    /// The app's Postgres migrations, `sqlx::migrate!("migrations/postgres")`.
    pub postgres: Vec<Migration>,
    /// The app's SQLite migrations, `sqlx::migrate!("migrations/sqlite")`.
    pub sqlite: Vec<Migration>,
    /// Tables with a `client_key` column: on Postgres each is put under row-level security after
    /// the migrations (`connect_axum_tenant_table`); on both, a start fails if one lacks the column.
    pub tenant_tables: Vec<String>,
}

impl AppMigrations {
    /// The app's migrations for Postgres and for the embedded store.
    pub fn new(postgres: &Migrator, sqlite: &Migrator) -> Self {
        Self {
            postgres: postgres.iter().cloned().collect(),
            sqlite: sqlite.iter().cloned().collect(),
            tenant_tables: Vec::new(),
        }
    }

    /// One set of migrations, written in the SQL both backends speak, for both.
    pub fn shared(migrations: &Migrator) -> Self {
        Self::new(migrations, migrations)
    }

    /// Declares `table` (with a `client_key` column referencing `tenant`) as tenant data: on
    /// Postgres only the rows of the tenant whose transaction it is are visible in it.
    pub fn tenant_table(mut self, table: impl Into<String>) -> Self {
        self.tenant_tables.push(table.into());
        self
    }
}

/// Why a declared tenant table cannot be one.
#[derive(Debug, thiserror::Error)]
#[error("the tenant table {0:?} does not exist or has no client_key column")]
pub struct NotATenantTable(pub String);

/// The library's migrations and the app's, as one migrator.
///
/// # Errors
/// [`MigrateError::Source`] when an app migration has a library migration's version.
pub(crate) async fn combined_migrator(
    library: &Migrator,
    app: &[Migration],
) -> Result<Migrator, sqlx::migrate::MigrateError> {
    #[derive(Debug)]
    struct Combined(Vec<Migration>);

    impl<'s> sqlx::migrate::MigrationSource<'s> for Combined {
        fn resolve(
            self,
        ) -> std::pin::Pin<
            Box<
                dyn std::future::Future<Output = Result<Vec<Migration>, sqlx::error::BoxDynError>>
                    + Send
                    + 's,
            >,
        > {
            Box::pin(async move { Ok(self.0) })
        }
    }

    let mut all: Vec<Migration> = library.iter().cloned().collect();
    for migration in app {
        if library.version_exists(migration.version) {
            return Err(sqlx::migrate::MigrateError::Source(
                format!(
                    "the app's migration {} ({}) has the version of one of the library's",
                    migration.version, migration.description
                )
                .into(),
            ));
        }
        all.push(migration.clone());
    }
    all.sort_by_key(|m| m.version);
    Migrator::new(Combined(all)).await
}

/// Library migrations whose text changed after databases applied them: the sample app's tables
/// (`note`, `data_location`) moved to the sample's own migrations, which make them only where they
/// are missing. Each entry is (backend, version, the SHA-384 sqlx recorded for the old text); a
/// database that recorded it is given the new text's checksum, so sqlx's check of every applied
/// migration still holds for everything else.
const REWRITTEN: &[(Backend, i64, &str)] = &[
    (
        Backend::Postgres,
        20261123000001,
        "59b1a83634795202ceede685606c2f38baec1c207a0fb8c62242d487a1e9bc8eb8955253655de05ffb6f3c73467af1b6",
    ),
    (
        Backend::Postgres,
        20261201000001,
        "49b86a6343816d81d10d2841efc555169412e9c13979ef5699c75257da7a38bacf7ad4f515c2348edd3da8e83c704125",
    ),
    (
        Backend::Postgres,
        20261201000003,
        "20ff0add7dd1e431c4f848a8d1e689699c9b40bdee9c4a918b7aeea8173358521450591e3675d80c82118e8f7b4777de",
    ),
    (
        Backend::Sqlite,
        20261123000001,
        "80b96dd6b1d97072b6583ffcabc78f3d3a5afd947d22342f79142df4304c6ac6951d9c407b4517b57bbb4cf2d229f4f2",
    ),
    (
        Backend::Sqlite,
        20261201000003,
        "e67512f4d8f53233919d473332cb7ca06bd4d2cdbaf073daa91c44310b96e42b6c22ef08a945e2597311e4afc48c97b2",
    ),
];

/// The (version, old checksum, new checksum) of each of `backend`'s rewritten migrations.
pub(crate) fn rewritten(backend: Backend, library: &Migrator) -> Vec<(i64, Vec<u8>, Vec<u8>)> {
    REWRITTEN
        .iter()
        .filter(|(b, _, _)| *b == backend)
        .filter_map(|(_, version, old)| {
            let new = library.iter().find(|m| m.version == *version)?;
            Some((*version, hex::decode(old).ok()?, new.checksum.to_vec()))
        })
        .collect()
}
