//! The store contract, checked on both backends.

use connect_axum::store::{LifecycleToken, NewNote, NoteDeletion, TenantStore};

use crate::helpers::TestApp;
use crate::on_both_stores;

async fn unknown_tenants_are_not_found(app: TestApp) {
    assert!(app.store.find_tenant("nobody").await.unwrap().is_none());
}

async fn tenant_state_changes_are_persisted(app: TestApp) {
    let tenant = app.install("acme").await;
    let store: &dyn TenantStore = app.store.as_ref();
    let record = store
        .find_tenant(&tenant.client_key)
        .await
        .unwrap()
        .unwrap();
    let key = record.installation.client_key.clone();
    let disable = LifecycleToken {
        issued_at: crate::helpers::now(),
        expires_at: crate::helpers::now() + 60,
        id: "disable".to_owned(),
    };
    assert!(store.set_enabled(&key, false, &disable).await.unwrap());
    assert!(
        !store
            .find_tenant(key.as_str())
            .await
            .unwrap()
            .unwrap()
            .enabled
    );
    assert!(
        !store.set_enabled(&key, true, &disable).await.unwrap(),
        "a replay is applied"
    );
    assert!(
        !store
            .find_tenant(key.as_str())
            .await
            .unwrap()
            .unwrap()
            .enabled
    );
    let later = LifecycleToken {
        issued_at: crate::helpers::now() + 1,
        expires_at: crate::helpers::now() + 60,
        id: "later".to_owned(),
    };
    assert!(store.mark_uninstalled(&key, &later).await.unwrap());
    let after = store.find_tenant(key.as_str()).await.unwrap().unwrap();
    assert!(after.uninstalled_at.is_some());
    assert!(after.updated_at >= record.updated_at);
    assert_eq!(after.installed_at, record.installed_at);
    store.ping().await.unwrap();
}

async fn a_note_is_deleted_by_its_author_only_when_an_author_is_given(app: TestApp) {
    let (a, b) = (app.install("a").await, app.install("b").await);
    let store: &dyn TenantStore = app.store.as_ref();
    let a = store.find_tenant(&a.client_key).await.unwrap().unwrap();
    let b = store.find_tenant(&b.client_key).await.unwrap().unwrap();
    let (a, b) = (&a.installation.client_key, &b.installation.client_key);
    let note = |author: Option<&str>| NewNote {
        issue_key: "PROJ-1".to_owned(),
        body: "x".to_owned(),
        author: author.map(str::to_owned),
    };
    let mine = store.create_note(a, &note(Some("me"))).await.unwrap().id;
    let nobodys = store.create_note(a, &note(None)).await.unwrap().id;
    let other_tenants = store.create_note(b, &note(Some("me"))).await.unwrap().id;
    assert_eq!(
        store
            .delete_note(a, "PROJ-1", mine, Some("you"))
            .await
            .unwrap(),
        NoteDeletion::OtherAuthor
    );
    assert_eq!(
        store
            .delete_note(a, "PROJ-1", nobodys, Some("me"))
            .await
            .unwrap(),
        NoteDeletion::OtherAuthor
    );
    assert_eq!(
        store
            .delete_note(a, "PROJ-2", mine, Some("me"))
            .await
            .unwrap(),
        NoteDeletion::Missing
    );
    assert_eq!(
        store
            .delete_note(a, "PROJ-1", other_tenants, Some("me"))
            .await
            .unwrap(),
        NoteDeletion::Missing
    );
    assert_eq!(
        store
            .delete_note(a, "PROJ-1", other_tenants, None)
            .await
            .unwrap(),
        NoteDeletion::Missing
    );
    assert_eq!(
        store.list_notes(a, "PROJ-1").await.unwrap().len(),
        2,
        "nothing was deleted"
    );
    assert_eq!(
        store
            .delete_note(a, "PROJ-1", mine, Some("me"))
            .await
            .unwrap(),
        NoteDeletion::Deleted
    );
    assert_eq!(
        store.delete_note(a, "PROJ-1", nobodys, None).await.unwrap(),
        NoteDeletion::Deleted
    );
    assert_eq!(
        store.delete_note(a, "PROJ-1", mine, None).await.unwrap(),
        NoteDeletion::Missing
    );
    assert_eq!(store.list_notes(b, "PROJ-1").await.unwrap().len(), 1);
}

on_both_stores!(
    unknown_tenants_are_not_found,
    tenant_state_changes_are_persisted,
    a_note_is_deleted_by_its_author_only_when_an_author_is_given,
);

/// The app migrations of the test fixtures, for the backend of `database_url`.
fn app_migrations() -> connect_axum::store::AppMigrations {
    connect_axum::store::AppMigrations::new(
        &sqlx::migrate!("tests/fixtures/app_migrations/postgres"),
        &sqlx::migrate!("tests/fixtures/app_migrations/sqlite"),
    )
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
        again
            .find_tenant(&tenant.client_key)
            .await
            .unwrap()
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
    let library = sqlx::migrate!("migrations/sqlite");
    let clash = library.iter().next().unwrap().clone();
    let mut options = crate::helpers::store_options(&app.database_url);
    options.app_migrations = connect_axum::store::AppMigrations {
        postgres: vec![clash.clone()],
        sqlite: vec![clash],
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
    an_apps_migrations_run_beside_the_librarys_and_a_restart_finds_both,
    an_app_migration_with_a_library_version_is_refused,
);

/// Adds a bookmark for `key` and lists what `key`'s transaction sees with `select`, through the
/// store's backend as an app's handler would.
async fn bookmark_and_list(
    store: &dyn TenantStore,
    key: &connect_axum::store::ClientKey,
    url: &str,
    select: &str,
) -> Vec<String> {
    use connect_axum::store::Database;
    let insert = "insert into bookmark (client_key, url) values ($1, $2)";
    match store.database() {
        Database::Postgres(pg) => {
            let mut tx = pg.tenant_transaction(key).await.unwrap();
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
            let mut tx = db.tenant_transaction(key).await.unwrap();
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
            store
                .find_tenant(&client_key)
                .await
                .unwrap()
                .unwrap()
                .installation
                .client_key
                .clone()
        }
    };
    let (a_key, b_key) = (key(a.client_key).await, key(b.client_key).await);
    let select = "select url from bookmark";
    assert_eq!(
        bookmark_and_list(store.as_ref(), &a_key, "https://a.example", select).await,
        ["https://a.example"]
    );
    assert_eq!(
        bookmark_and_list(store.as_ref(), &b_key, "https://b.example", select).await,
        ["https://b.example"]
    );
    store.close().await;
}

on_both_stores!(an_apps_own_table_is_reached_in_the_tenant_transaction_of_the_stores_backend);
