//! A site's cloud id is public, and a Connect install body's `cloudId` is not covered by the
//! signed install: only a cloud id that a verified invocation token gave may lead a Forge
//! installation or invocation to a tenant. A claimant's Connect tenant never receives another
//! site's Forge installation; that site's own install becomes a tenant of its own. On both stores,
//! with and without `FORGE_CONNECT_ON_FORGE`.

use axum::http::StatusCode;
use connect_axum_testing::FakeForge;
use connect_axum_testing::forge::{ForgeSite, redelivered};
use serde_json::{Value, json};

use crate::probe::{TestApp, TestTenant};

const APP_ARI: &str = "ari:cloud:ecosystem::app/00000000-0000-4000-8000-0000000000c1";
const EVENTS: &str = "/forge/events";

async fn start(postgres: bool, connect_on_forge: bool) -> (TestApp, FakeForge) {
    let forge = FakeForge::start(APP_ARI, &[0]).await;
    let under_test = connect_axum_testing::AppUnderTest::new(crate::probe::app);
    let settings = vec![("FORGE_CONNECT_ON_FORGE", connect_on_forge.to_string())];
    let app = crate::probe::start_trusting(under_test, postgres, &forge, settings).await;
    (app, forge)
}

fn installed_event() -> Value {
    json!({ "eventType": "avi:forge:installed:app" })
}

/// A Connect install of `tenant` whose body claims `cloud_id` and carries no installationId (or
/// `installation_id`, when given).
async fn connect_install(
    app: &TestApp,
    tenant: &TestTenant,
    cloud_id: &str,
    installation_id: Option<&str>,
) {
    let mut payload = tenant.payload("installed");
    payload["cloudId"] = cloud_id.into();
    payload["installationId"] = installation_id.map_or(Value::Null, Into::into);
    let token = tenant.install_token("/installed", json!({}));
    let response = app
        .call("POST", "/installed", Some(&token), Some(&payload))
        .await;
    assert_eq!(
        response.status,
        StatusCode::NO_CONTENT,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
}

/// The tenant a user's FIT from `site` reaches, or the refusal's reason.
async fn reached_by(app: &TestApp, forge: &FakeForge, site: &ForgeSite) -> String {
    let response = app
        .invoke("GET", "/forge/probe", &forge.fit_on(site).sign(), None)
        .await;
    let body = response.json();
    match response.status {
        StatusCode::OK => body["clientKey"].as_str().unwrap().to_owned(),
        _ => body["error"].as_str().unwrap_or("?").to_owned(),
    }
}

async fn a_claimed_cloud_id_captures_no_forge_installation(postgres: bool) {
    let (app, forge) = start(postgres, false).await;
    let victim = forge.site("victim");
    let claimant = app.tenant("claimant");
    connect_install(&app, &claimant, &victim.cloud_id, None).await;

    // Before the victim's install event: the claim resolves none of its invocations.
    assert_eq!(
        reached_by(&app, &forge, &victim).await,
        "unmapped_installation"
    );
    let made = app
        .deliver(
            EVENTS,
            &forge.trigger(&victim).sign(),
            None,
            &installed_event(),
        )
        .await;
    assert_eq!(made.status, StatusCode::OK);
    assert_eq!(made.json()["tenant"], victim.installation_id.as_str());
    assert_eq!(
        reached_by(&app, &forge, &victim).await,
        victim.installation_id
    );
    let holders = app
        .raw(&format!(
            "select client_key from tenant where installation_id = '{}'",
            victim.installation_id
        ))
        .await;
    assert_eq!(holders, [Some(victim.installation_id.clone())]);

    // The claimant is still its own Connect tenant and sees nothing of the victim's.
    let own = app
        .signed(&claimant, "GET", "/api/probe/product", None)
        .await;
    assert_eq!(own.json()["clientKey"], claimant.client_key.as_str());

    // A reinstall of the victim's site (a new installationId) finds the victim's tenant by the
    // cloud id its verified token gave, never the claimant.
    let reinstalled = victim.reinstalled();
    let again = app
        .deliver(
            EVENTS,
            &forge.trigger(&reinstalled).sign(),
            None,
            &installed_event(),
        )
        .await;
    assert_eq!(again.json()["tenant"], victim.installation_id.as_str());
    assert_eq!(
        app.raw("select cast(count(*) as text) from tenant").await,
        [Some("2".to_owned())]
    );
}

async fn with_connect_on_forge_a_claimed_cloud_id_waits_like_no_tenant(postgres: bool) {
    let (app, forge) = start(postgres, true).await;
    let victim = forge.site("victim");
    let claimant = app.tenant("claimant");
    connect_install(&app, &claimant, &victim.cloud_id, None).await;

    // The victim's install event waits for its own Connect install, as for a site no tenant
    // claims; its users' invocations meanwhile reach no one.
    app.deliver(
        EVENTS,
        &forge.trigger(&victim).sign(),
        None,
        &installed_event(),
    )
    .await
    .assert_error(StatusCode::CONFLICT, "connect_install_pending");
    assert_eq!(
        reached_by(&app, &forge, &victim).await,
        "unmapped_installation"
    );
    let claimed = app
        .raw("select coalesce(installation_id, '-') from tenant")
        .await;
    assert_eq!(claimed, [Some("-".to_owned())]);

    // The last retry makes the victim's tenant of its own.
    let last = redelivered(&installed_event(), 4, "INVALID_REMOTE_INVOCATION_ERROR");
    let made = app
        .deliver(EVENTS, &forge.trigger(&victim).sign(), None, &last)
        .await;
    assert_eq!(made.json()["tenant"], victim.installation_id.as_str());
    assert_eq!(
        reached_by(&app, &forge, &victim).await,
        victim.installation_id
    );
}

async fn a_connect_tenant_joins_by_its_own_installation_id_and_keeps_the_verified_cloud_id(
    postgres: bool,
) {
    let (app, forge) = start(postgres, true).await;
    let connect = app.tenant("both");
    let site = ForgeSite {
        name: "both".to_owned(),
        installation_id: connect.installation_id(),
        cloud_id: "the-real-cloud-id".to_owned(),
        product: "jira".to_owned(),
    };
    // The install body's cloud id is wrong; the installationId is its own.
    connect_install(&app, &connect, "claimed", Some(&site.installation_id)).await;
    let joined = app
        .deliver(
            EVENTS,
            &forge.trigger(&site).sign(),
            None,
            &installed_event(),
        )
        .await;
    assert_eq!(joined.json()["tenant"], connect.client_key.as_str());
    let cloud_id = || app.raw("select cloud_id from tenant");
    assert_eq!(cloud_id().await, [Some("the-real-cloud-id".to_owned())]);

    // A later Connect install's claim does not replace what the token gave.
    connect_install(&app, &connect, "claimed-again", Some(&site.installation_id)).await;
    assert_eq!(cloud_id().await, [Some("the-real-cloud-id".to_owned())]);

    // So a reinstall on Forge (a new installationId) still finds it by the verified cloud id.
    let reinstalled = site.reinstalled();
    assert_eq!(
        reached_by(&app, &forge, &reinstalled).await,
        connect.client_key
    );
}

async fn a_cloud_id_resolves_among_the_verified_tenants_of_the_invoked_product(postgres: bool) {
    let (app, forge) = start(postgres, false).await;
    let jira = forge.site("site");
    let confluence = ForgeSite {
        product: "confluence".to_owned(),
        ..jira.reinstalled()
    };
    let on = |site: &ForgeSite, fit: connect_axum_testing::forge::Fit| {
        fit.api_base_url(&format!(
            "https://api.atlassian.com/ex/{}/{}",
            site.product, site.cloud_id
        ))
        .sign()
    };
    for site in [&jira, &confluence] {
        let made = app
            .deliver(
                EVENTS,
                &on(site, forge.trigger(site)),
                None,
                &installed_event(),
            )
            .await;
        assert_eq!(made.json()["tenant"], site.installation_id.as_str());
    }
    // A Connect claim of the site for one product makes nothing ambiguous: it is not counted.
    connect_install(&app, &app.tenant("claimant"), &jira.cloud_id, None).await;
    // A call from an installation no tenant holds yet (a reinstall whose event is on its way).
    for site in [&jira, &confluence] {
        let newer = site.reinstalled();
        let response = app
            .invoke(
                "GET",
                "/forge/probe",
                &on(&newer, forge.fit_on(&newer)),
                None,
            )
            .await;
        assert_eq!(response.json()["clientKey"], site.installation_id.as_str());
    }
    // Naming two sites at once names none.
    let two = forge
        .fit_on(&jira.reinstalled())
        .cloud_id("another-site")
        .sign();
    app.invoke("GET", "/forge/probe", &two, None)
        .await
        .assert_error(StatusCode::FORBIDDEN, "unmapped_installation");
}

crate::probe::on_both_stores!(
    postgres: bool,
    a_claimed_cloud_id_captures_no_forge_installation,
    with_connect_on_forge_a_claimed_cloud_id_waits_like_no_tenant,
    a_connect_tenant_joins_by_its_own_installation_id_and_keeps_the_verified_cloud_id,
    a_cloud_id_resolves_among_the_verified_tenants_of_the_invoked_product,
);
