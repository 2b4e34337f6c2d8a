//! The store contract, checked on both backends.

use connect_axum::store::{LifecycleToken, TenantStore};

use crate::on_both_stores;

on_both_stores! {
    async fn unknown_tenants_are_not_found(app: TestApp) {
        assert!(app.store.find_tenant("nobody").await.unwrap().is_none());
    }

    async fn tenant_state_changes_are_persisted(app: TestApp) {
        let tenant = app.install("acme").await;
        let store: &dyn TenantStore = app.store.as_ref();
        let record = store.find_tenant(&tenant.client_key).await.unwrap().unwrap();
        let key = record.installation.client_key.clone();
        let disable = LifecycleToken { issued_at: crate::helpers::now(), expires_at: crate::helpers::now() + 60, id: "disable".to_owned() };
        assert!(store.set_enabled(&key, false, &disable).await.unwrap());
        assert!(!store.find_tenant(key.as_str()).await.unwrap().unwrap().enabled);
        assert!(!store.set_enabled(&key, true, &disable).await.unwrap(), "a replay is applied");
        assert!(!store.find_tenant(key.as_str()).await.unwrap().unwrap().enabled);
        let later = LifecycleToken { issued_at: crate::helpers::now() + 1, expires_at: crate::helpers::now() + 60, id: "later".to_owned() };
        assert!(store.mark_uninstalled(&key, &later).await.unwrap());
        let after = store.find_tenant(key.as_str()).await.unwrap().unwrap();
        assert!(after.uninstalled_at.is_some());
        assert!(after.updated_at >= record.updated_at);
        assert_eq!(after.installed_at, record.installed_at);
        store.ping().await.unwrap();
    }
}
