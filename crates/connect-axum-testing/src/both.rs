//! Each test on both stores.

/// Runs each named test, an `async fn name(app: TestApp)` beside the call, once on Postgres and
/// once on SQLite, as `name::postgres` and `name::sqlite`, on the app `app = …` evaluates to (an
/// [`AppUnderTest`](crate::AppUnderTest), written with a full path). With
/// `#[multi_thread(vars = f)]` before the names, the tests run on a multi-threaded runtime, on apps
/// configured by `f` (as in [`AppUnderTest::postgres_with`](crate::AppUnderTest::postgres_with)).
///
/// ```ignore
/// async fn installs_are_stored(app: TestApp) {
///     app.install("acme").await;
/// }
/// connect_axum_testing::on_both_stores!(app = crate::my_app(), installs_are_stored);
/// ```
#[macro_export]
macro_rules! on_both_stores {
    (app = $app:expr, #[multi_thread(vars = $vars:expr)] $($name:ident),+ $(,)?) => {$(
        mod $name {
            // `$vars` is written in the calling file and resolves there.
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
    (app = $app:expr, $($name:ident),+ $(,)?) => {$(
        mod $name {
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
}
