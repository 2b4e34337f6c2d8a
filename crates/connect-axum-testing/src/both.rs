//! Each test on both stores: the one macro that lists a suite's tests and the setup they share.

/// Runs each named test, an `async fn` beside the call, once on Postgres and once on SQLite, as
/// `name::postgres` and `name::sqlite`; the form before the names says what each test takes:
///
/// - `app = A, names`: `async fn name(app: TestApp)`, on the app `A` evaluates to (an
///   [`AppUnderTest`](crate::AppUnderTest)).
/// - `app = A, #[multi_thread(vars = f)] names`: the same on a multi-threaded runtime, on apps
///   configured by `f` (as in [`AppUnderTest::postgres_with`](crate::AppUnderTest::postgres_with)).
/// - `app = A, with = f, names`: `async fn name(app: TestApp, fixture: T)`, where
///   `async fn f() -> (vars, T)` starts what the test talks to (a fake Forge, a mock server) and
///   the settings that point the app at it; each run gets a fresh one.
/// - `postgres: bool, names`: `async fn name(postgres: bool)`, for a test that starts its own app
///   (or several): `true` on Postgres, `false` on SQLite.
///
/// `A` and `f` are written in the calling module and resolve there.
///
/// ```no_run
/// use connect_axum::server::{Builder, ConnectApp};
/// use connect_axum_testing::{AppUnderTest, FakeForge, TestApp, on_both_stores};
///
/// fn my_app() -> AppUnderTest {
///     AppUnderTest::new(|config| ConnectApp::builder(config).descriptor(r#"{"key": "my-app"}"#))
/// }
///
/// async fn installs_are_stored(app: TestApp) {
///     let site = app.install("acme").await;
///     assert!(app.stored(&site).await);
/// }
/// on_both_stores!(app = my_app(), installs_are_stored);
///
/// async fn trusting_forge() -> (impl Fn(&str) -> Option<String>, FakeForge) {
///     let forge = FakeForge::start("ari:cloud:ecosystem::app/my-app-id", &[0]).await;
///     (forge.vars(), forge)
/// }
///
/// async fn forge_sites_install(app: TestApp, forge: FakeForge) {
///     let _site = forge.site("acme");
/// }
/// on_both_stores!(app = my_app(), with = trusting_forge, forge_sites_install);
///
/// async fn two_replicas_share_a_tenant(postgres: bool) {
///     let app = if postgres { my_app().postgres().await } else { my_app().sqlite().await };
///     let _site = app.install("acme").await;
/// }
/// on_both_stores!(postgres: bool, two_replicas_share_a_tenant);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! on_both_stores {
    (app = $app:expr, #[multi_thread(vars = $vars:expr)] $($name:ident),+ $(,)?) => {$(
        mod $name {
            // `$app` and `$vars` are written in the calling file and resolve there.
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread")]
            async fn postgres() {
                super::$name(($app).postgres_with($vars).await).await
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn sqlite() {
                super::$name(($app).sqlite_with($vars).await).await
            }
        }
    )+};
    (app = $app:expr, with = $with:expr, $($name:ident),+ $(,)?) => {$(
        mod $name {
            // `$app` and `$with` are written in the calling file and resolve there.
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test]
            async fn postgres() {
                let (vars, fixture) = ($with)().await;
                super::$name(($app).postgres_with(vars).await, fixture).await
            }

            #[tokio::test]
            async fn sqlite() {
                let (vars, fixture) = ($with)().await;
                super::$name(($app).sqlite_with(vars).await, fixture).await
            }
        }
    )+};
    (app = $app:expr, $($name:ident),+ $(,)?) => {$(
        mod $name {
            // `$app` is written in the calling file and resolves there.
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test]
            async fn postgres() {
                super::$name(($app).postgres().await).await
            }

            #[tokio::test]
            async fn sqlite() {
                super::$name(($app).sqlite().await).await
            }
        }
    )+};
    (postgres: bool, $($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn postgres() {
                super::$name(true).await
            }

            #[tokio::test]
            async fn sqlite() {
                super::$name(false).await
            }
        }
    )+};
}
