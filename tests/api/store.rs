//! The store contract, checked on both backends.

use connect_axum::store::{AppMigrations, ClientKey, LifecycleToken, Store};
use connect_axum_testing::on_both_stores;
use issue_notes::store::{self as notes, NewNote, Note, NoteCaps, NoteCreation, NoteDeletion};
use sqlx::{Connection as _, Executor as _};

use crate::helpers::{AppUnderTest, TestApp, TestTenant, sample};

async fn unknown_tenants_are_not_found(app: TestApp) {
    assert!(app.find_stored_tenant("nobody").await.is_none());
}

async fn tenant_state_changes_are_persisted(app: TestApp) {
    let tenant = app.install("acme").await;
    let store: &Store = app.store();
    let record = app.stored_tenant(&tenant.client_key).await;
    let key = record.installation.client_key.clone();
    let disable = LifecycleToken {
        issued_at: crate::helpers::now(),
        expires_at: crate::helpers::now() + 60,
        id: "disable".to_owned(),
    };
    assert!(
        store
            .tenants()
            .set_enabled(&key, false, &disable)
            .await
            .unwrap()
    );
    assert!(!app.stored_tenant(key.as_str()).await.enabled);
    assert!(
        !store
            .tenants()
            .set_enabled(&key, true, &disable)
            .await
            .unwrap(),
        "a replay is applied"
    );
    assert!(!app.stored_tenant(key.as_str()).await.enabled);
    let later = LifecycleToken {
        issued_at: crate::helpers::now() + 1,
        expires_at: crate::helpers::now() + 60,
        id: "later".to_owned(),
    };
    assert!(
        store
            .tenants()
            .mark_uninstalled(&key, &later)
            .await
            .unwrap()
    );
    let after = app.stored_tenant(key.as_str()).await;
    assert!(after.uninstalled_at.is_some());
    assert!(after.updated_at >= record.updated_at);
    assert_eq!(after.installed_at, record.installed_at);
    store.ping().await.unwrap();
}

/// Adds a note within the default caps.
async fn create(store: &Store, key: &connect_axum::store::ClientKey, note: NewNote) -> Note {
    match notes::create_note(store, key, note, NoteCaps::default())
        .await
        .unwrap()
    {
        NoteCreation::Created(note) => note,
        refused => panic!("not created: {refused:?}"),
    }
}

/// All of a tenant's notes on an issue.
async fn all(store: &Store, key: &connect_axum::store::ClientKey, issue: &str) -> Vec<Note> {
    notes::list_notes(store, key, issue, 0, 100_000)
        .await
        .unwrap()
        .notes
}

async fn a_note_is_deleted_by_its_author_only_when_an_author_is_given(app: TestApp) {
    let (a, b) = (app.install("a").await, app.install("b").await);
    let store: &Store = app.store();
    let a = app.stored_tenant(&a.client_key).await;
    let b = app.stored_tenant(&b.client_key).await;
    let (a, b) = (&a.installation.client_key, &b.installation.client_key);
    let note = |author: Option<&str>| NewNote {
        issue_key: "PROJ-1".to_owned(),
        body: "x".to_owned(),
        author: author.map(str::to_owned),
    };
    let mine = create(store, a, note(Some("me"))).await.id;
    let nobodys = create(store, a, note(None)).await.id;
    // Ids are numbered per tenant: b's third note has an id a has not.
    for _ in 0..2 {
        create(store, b, note(Some("me"))).await;
    }
    let other_tenants = create(store, b, note(Some("me"))).await.id;
    assert_eq!((mine, nobodys, other_tenants), (1, 2, 3));
    assert_eq!(
        notes::delete_note(store, a, "PROJ-1", mine, Some("you"))
            .await
            .unwrap(),
        NoteDeletion::OtherAuthor
    );
    assert_eq!(
        notes::delete_note(store, a, "PROJ-1", nobodys, Some("me"))
            .await
            .unwrap(),
        NoteDeletion::OtherAuthor
    );
    assert_eq!(
        notes::delete_note(store, a, "PROJ-2", mine, Some("me"))
            .await
            .unwrap(),
        NoteDeletion::Missing
    );
    assert_eq!(
        notes::delete_note(store, a, "PROJ-1", other_tenants, Some("me"))
            .await
            .unwrap(),
        NoteDeletion::Missing
    );
    assert_eq!(
        notes::delete_note(store, a, "PROJ-1", other_tenants, None)
            .await
            .unwrap(),
        NoteDeletion::Missing
    );
    assert_eq!(
        all(store, a, "PROJ-1").await.len(),
        2,
        "nothing was deleted"
    );
    assert_eq!(
        notes::delete_note(store, a, "PROJ-1", mine, Some("me"))
            .await
            .unwrap(),
        NoteDeletion::Deleted
    );
    assert_eq!(
        notes::delete_note(store, a, "PROJ-1", nobodys, None)
            .await
            .unwrap(),
        NoteDeletion::Deleted
    );
    assert_eq!(
        notes::delete_note(store, a, "PROJ-1", mine, None)
            .await
            .unwrap(),
        NoteDeletion::Missing
    );
    assert_eq!(all(store, b, "PROJ-1").await.len(), 3);
}

on_both_stores!(
    app = sample(),
    unknown_tenants_are_not_found,
    tenant_state_changes_are_persisted,
    a_note_is_deleted_by_its_author_only_when_an_author_is_given,
);

/// The app migrations of the test fixtures, for the backend of `database_url`.
fn app_migrations() -> connect_axum::store::AppMigrations {
    let fixtures = connect_axum::store::AppMigrations::new(
        &sqlx::migrate!("tests/fixtures/app_migrations/postgres"),
        &sqlx::migrate!("tests/fixtures/app_migrations/sqlite"),
    );
    let mut all = issue_notes::migrations();
    all.postgres.extend(fixtures.postgres);
    all.sqlite.extend(fixtures.sqlite);
    all
}

async fn an_apps_migrations_run_beside_the_librarys_and_a_restart_finds_both(app: TestApp) {
    let mut options = crate::helpers::store_options(&app.database_url);
    options.app_migrations = app_migrations();
    let first = connect_axum::store::connect(&options).await.unwrap();
    let tenant = app.install("acme").await;
    app.raw(&format!(
        "insert into bookmark (client_key, url) values ('{}', 'https://example.com') returning url",
        tenant.client_key
    ))
    .await;
    first.close().await;
    // A restart with the same sets starts; the library's own migrations still ran.
    let again = connect_axum::store::connect(&options).await.unwrap();
    assert!(
        connect_axum_testing::store::find_tenant_in(&again, &tenant.client_key)
            .await
            .is_some()
    );
    again.close().await;
    assert_eq!(
        app.raw("select url from bookmark").await,
        vec![Some("https://example.com".to_owned())]
    );

    // sqlx still checks every set: a start that no longer knows the app's migration is refused.
    let without = crate::helpers::store_options(&app.database_url);
    let refused = connect_axum::store::connect(&without)
        .await
        .err()
        .expect("unknown applied migration accepted");
    assert!(
        format!("{refused:#}").contains("20270101000000"),
        "{refused:#}"
    );
}

async fn an_app_migration_with_a_library_version_is_refused(app: TestApp) {
    let library = sqlx::migrate!("crates/connect-axum/migrations/sqlite");
    let clash = library.iter().next().unwrap().clone();
    let mut options = crate::helpers::store_options(&app.database_url);
    options.app_migrations = connect_axum::store::AppMigrations {
        postgres: vec![clash.clone()],
        sqlite: vec![clash],
        tenant_tables: Vec::new(),
    };
    let refused = connect_axum::store::connect(&options)
        .await
        .err()
        .expect("a clashing version accepted");
    assert!(
        format!("{refused:#}").contains("version of one of the library's"),
        "{refused:#}"
    );
}

on_both_stores!(
    app = sample(),
    an_apps_migrations_run_beside_the_librarys_and_a_restart_finds_both,
    an_app_migration_with_a_library_version_is_refused,
);

/// Adds a bookmark for `key` and lists what `key`'s transaction sees with `select`, through the
/// store's backend as an app's handler would.
async fn bookmark_and_list(
    store: &Store,
    key: &connect_axum::store::ClientKey,
    url: &str,
    select: &str,
) -> Vec<String> {
    use connect_axum::store::Database;
    let insert = "insert into bookmark (client_key, url) values ($1, $2)";
    match store.database() {
        Database::Postgres(pg) => {
            let mut tx = pg.begin_tenant(key).await.unwrap();
            sqlx::query(insert)
                .bind(key.as_str())
                .bind(url)
                .execute(&mut *tx)
                .await
                .unwrap();
            // Forgets the tenant on purpose: row-level security is the wall.
            let seen = sqlx::query_scalar(select)
                .fetch_all(&mut *tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            seen
        }
        Database::Sqlite(db) => {
            let mut tx = db.begin_tenant(key).await.unwrap();
            sqlx::query(insert)
                .bind(key.as_str())
                .bind(url)
                .execute(&mut *tx)
                .await
                .unwrap();
            // No row-level security: the app's own filter is the wall.
            let scoped = format!("{select} where client_key = $1");
            let seen = sqlx::query_scalar(&scoped)
                .bind(key.as_str())
                .fetch_all(&mut *tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            seen
        }
    }
}

async fn an_apps_own_table_is_reached_in_the_tenant_transaction_of_the_stores_backend(
    app: TestApp,
) {
    let (a, b) = (app.install("a").await, app.install("b").await);
    let mut options = crate::helpers::store_options(&app.database_url);
    options.app_migrations = app_migrations();
    let store = connect_axum::store::connect(&options).await.unwrap();
    let key = |client_key: String| {
        let store = store.clone();
        async move {
            connect_axum_testing::store::find_tenant_in(&store, &client_key)
                .await
                .expect("the tenant is stored")
                .installation
                .client_key
                .clone()
        }
    };
    let (a_key, b_key) = (key(a.client_key).await, key(b.client_key).await);
    let select = "select url from bookmark";
    assert_eq!(
        bookmark_and_list(&store, &a_key, "https://a.example", select).await,
        ["https://a.example"]
    );
    assert_eq!(
        bookmark_and_list(&store, &b_key, "https://b.example", select).await,
        ["https://b.example"]
    );
    store.close().await;
}

on_both_stores!(
    app = sample(),
    an_apps_own_table_is_reached_in_the_tenant_transaction_of_the_stores_backend
);

/// A database that the library's migrations made while the sample's tables were still among them
/// (with a tenant and a note in it) starts under today's migrations, twice, and keeps its note.
async fn upgrade_from_the_library_that_held_the_samples_tables(url: &str) {
    let insert_tenant = "insert into tenant (client_key, app_key, shared_secret, base_url, \
        installed_at, updated_at) values ('t', 'app', 's', 'https://t.example', \
        '2026-11-30 00:00:00+00', '2026-11-30 00:00:00+00')";
    let insert_note = "insert into note (client_key, issue_key, body, created_at) \
        values ('t', 'PROJ-1', 'kept', '2026-11-30 00:00:00+00')";
    if url.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::migrate!("tests/fixtures/migrations_before_0_2/postgres")
            .run(&mut c)
            .await
            .unwrap();
        c.execute(insert_tenant).await.unwrap();
        c.execute(insert_note).await.unwrap();
        c.close().await.unwrap();
    } else {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::migrate!("tests/fixtures/migrations_before_0_2/sqlite")
            .run(&mut c)
            .await
            .unwrap();
        c.execute(insert_tenant).await.unwrap();
        c.execute(insert_note).await.unwrap();
        c.close().await.unwrap();
    }
    for _ in 0..2 {
        let store = connect_axum::store::connect(&crate::helpers::store_options(url))
            .await
            .expect("an upgraded database is refused");
        store.close().await;
    }
    if url.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        let body: String = sqlx::query_scalar("select body from note")
            .fetch_one(&mut c)
            .await
            .unwrap();
        assert_eq!(body, "kept");
        let policies: i64 = sqlx::query_scalar(
            "select count(*) from pg_policies where tablename in ('note', 'data_location')",
        )
        .fetch_one(&mut c)
        .await
        .unwrap();
        assert_eq!(policies, 2, "one policy on each of the sample's tables");
    } else {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        let body: String = sqlx::query_scalar("select body from note")
            .fetch_one(&mut c)
            .await
            .unwrap();
        assert_eq!(body, "kept");
    }
}

#[tokio::test]
async fn a_database_from_before_the_sample_left_the_library_upgrades_postgres() {
    let admin = crate::helpers::admin_url();
    let name = crate::helpers::unique_name();
    let mut c = sqlx::PgConnection::connect(&admin).await.unwrap();
    c.execute(format!(r#"create database "{name}""#).as_str())
        .await
        .unwrap();
    c.close().await.unwrap();
    let mut url = url::Url::parse(&admin).unwrap();
    url.set_path(&name);
    upgrade_from_the_library_that_held_the_samples_tables(url.as_str()).await;
    crate::helpers::admin_cleanup(
        &admin,
        vec![format!(r#"drop database if exists "{name}" with (force)"#)],
    );
}

#[tokio::test]
async fn a_database_from_before_the_sample_left_the_library_upgrades_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("old.db").display());
    upgrade_from_the_library_that_held_the_samples_tables(&url).await;
}

/// The sample's migrations up to the last one before note ids were numbered per tenant.
fn migrations_before_per_tenant_ids() -> AppMigrations {
    const PER_TENANT_IDS: i64 = 20261210000100;
    let mut migrations = issue_notes::migrations();
    migrations.postgres.retain(|m| m.version < PER_TENANT_IDS);
    migrations.sqlite.retain(|m| m.version < PER_TENANT_IDS);
    migrations
}

/// The sample on the schema whose note ids came from one sequence for all tenants.
fn before_per_tenant_ids() -> AppUnderTest {
    AppUnderTest::new(|config| {
        issue_notes::app(config).migrations(migrations_before_per_tenant_ids())
    })
}

/// Notes written under one sequence for all tenants keep their ids under per-tenant ids, and
/// each tenant's next id follows its largest, also when that note has since been deleted.
async fn existing_notes_keep_their_ids_when_ids_become_per_tenant(old: TestApp) {
    let (a, b) = (old.install("a").await, old.install("b").await);
    let key = |store: Store, tenant: &TestTenant| {
        let client_key = tenant.client_key.clone();
        async move {
            let record = connect_axum_testing::store::find_tenant_in(&store, &client_key)
                .await
                .expect("the tenant is stored");
            record.installation.client_key.clone()
        }
    };
    let (a_key, b_key) = (
        key(old.store().clone(), &a).await,
        key(old.store().clone(), &b).await,
    );
    let mut written = Vec::new();
    for (tenant, issue) in [(&a_key, "PROJ-1"), (&b_key, "PROJ-1"), (&a_key, "PROJ-2")] {
        let mut tx = old.store().tenant_transaction(tenant).await.unwrap();
        let (id,): (i64,) = tx
            .query(
                "insert into note (client_key, issue_key, body, created_at) \
                 values ($1, $2, 'kept', $3) returning id",
            )
            .bind(tenant.as_str())
            .bind(issue)
            .bind(connect_axum::store::now())
            .fetch_one()
            .await
            .unwrap();
        tx.commit().await.unwrap();
        written.push(id);
    }
    assert_eq!(written, [1, 2, 3], "one sequence for all tenants");

    let store = connect_axum::store::connect(&crate::helpers::store_options(&old.database_url))
        .await
        .expect("the per-tenant ids migrate");
    let ids = |tenant: &ClientKey, issue: &'static str| {
        let (store, tenant) = (store.clone(), tenant.clone());
        async move {
            notes::list_notes(&store, &tenant, issue, 0, 100)
                .await
                .unwrap()
                .notes
                .iter()
                .map(|n| n.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(ids(&a_key, "PROJ-1").await, [1]);
    assert_eq!(ids(&a_key, "PROJ-2").await, [3]);
    assert_eq!(ids(&b_key, "PROJ-1").await, [2]);

    assert_eq!(
        notes::delete_note(&store, &a_key, "PROJ-2", 3, None)
            .await
            .unwrap(),
        NoteDeletion::Deleted
    );
    let note = || NewNote {
        issue_key: "PROJ-1".to_owned(),
        body: "after".to_owned(),
        author: None,
    };
    assert_eq!(
        create(&store, &a_key, note()).await.id,
        4,
        "a's deleted note 3 keeps its id to itself"
    );
    assert_eq!(create(&store, &b_key, note()).await.id, 3);
    store.close().await;
}

/// A login of its own that owns its test databases without being a superuser, as the owner
/// login of a production database is: row-level security is forced on it.
struct OwnerLogin {
    admin_url: String,
    name: String,
    /// The server's `postgres` database as this login, to make test databases from.
    url: String,
}

impl OwnerLogin {
    async fn create() -> Self {
        let admin_url = crate::helpers::admin_url();
        let name = crate::helpers::unique_name();
        let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
        // The role is the cluster's; the migrations make it only for a login that may.
        admin
            .execute(
                "do $$ begin create role connect_axum_app nologin; \
                 exception when duplicate_object or unique_violation then null; end $$",
            )
            .await
            .unwrap();
        for sql in [
            format!(r#"create role "{name}" login createdb"#),
            format!(r#"grant connect_axum_app to "{name}""#),
        ] {
            admin.execute(sql.as_str()).await.unwrap();
        }
        admin.close().await.unwrap();
        let mut url = url::Url::parse(&admin_url).unwrap();
        url.set_username(&name).unwrap();
        Self {
            admin_url,
            url: url.to_string(),
            name,
        }
    }
}

impl Drop for OwnerLogin {
    fn drop(&mut self) {
        crate::helpers::admin_cleanup(
            &self.admin_url,
            vec![format!(r#"drop role if exists "{}""#, self.name)],
        );
    }
}

#[tokio::test]
async fn existing_notes_keep_their_ids_when_ids_become_per_tenant_postgres() {
    let owner = OwnerLogin::create().await;
    let old = before_per_tenant_ids()
        .postgres_tuned(&owner.url, |_| {}, |_| None)
        .await;
    existing_notes_keep_their_ids_when_ids_become_per_tenant(old).await;
}

#[tokio::test]
async fn existing_notes_keep_their_ids_when_ids_become_per_tenant_sqlite() {
    existing_notes_keep_their_ids_when_ids_become_per_tenant(
        before_per_tenant_ids().sqlite().await,
    )
    .await;
}

async fn a_declared_tenant_table_without_a_client_key_stops_the_start(app: TestApp) {
    for table in ["_sqlx_migrations", "no_such_table"] {
        let mut options = crate::helpers::store_options(&app.database_url);
        options.app_migrations = issue_notes::migrations().tenant_table(table);
        let refused = connect_axum::store::connect(&options)
            .await
            .err()
            .unwrap_or_else(|| panic!("{table} accepted as a tenant table"));
        assert!(
            format!("{refused:#}").contains(&format!("the tenant table {table:?}")),
            "{refused:#}"
        );
    }
    let mut options = crate::helpers::store_options(&app.database_url);
    options.app_migrations = issue_notes::migrations().tenant_table("note");
    connect_axum::store::connect(&options)
        .await
        .expect("a table with a client_key is a tenant table")
        .close()
        .await;
}

on_both_stores!(
    app = sample(),
    a_declared_tenant_table_without_a_client_key_stops_the_start
);
