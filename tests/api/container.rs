//! The sample as a Forge Container in process, on the in-memory store its container runs on:
//! its notes in each installation's Forge SQL, and a deleted issue's trigger handed to Forge's
//! async events and run when Forge delivers it back.

use axum::http::StatusCode;
use connect_axum_testing::{FakeSidecar, TestApp};
use serde_json::{Value, json};

use crate::helpers::sample;

const NOTES: &str = "/forge/api/issues/PROJ-1/notes";

async fn container() -> (TestApp, FakeSidecar) {
    let sidecar = FakeSidecar::start().await;
    let vars = sidecar.vars();
    let app = sample()
        .in_memory_with(move |name| match name {
            // As Forge starts it: no secrets key, none written.
            "SECRETS_KEY" => Some(String::new()),
            name => vars(name),
        })
        .await;
    (app, sidecar)
}

fn bodies(page: &Value) -> Vec<Value> {
    page["notes"]
        .as_array()
        .expect("a page of notes")
        .iter()
        .map(|n| n["body"].clone())
        .collect()
}

#[tokio::test]
async fn a_deleted_issue_takes_its_notes_through_forge_async_events() {
    let (app, sidecar) = container().await;
    let (acme, globex) = (sidecar.site("acme"), sidecar.site("globex"));
    let alice = sidecar.invocation(FakeSidecar::user_context(&acme, "557058:alice", "PROJ-1"));
    let bob = sidecar.invocation(FakeSidecar::user_context(&globex, "557058:bob", "PROJ-1"));
    for (id, body) in [(&alice, "acme"), (&bob, "globex")] {
        let created = sidecar
            .invoke(&app, id, "POST", NOTES, Some(&json!({ "body": body })))
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    }

    // Jira deletes acme's PROJ-1: the trigger is answered at once, its work pushed to Forge.
    let trigger = sidecar.invocation(FakeSidecar::app_context(&acme));
    let event = json!({ "eventType": "avi:jira:deleted:issue", "issue": { "key": "PROJ-1" } });
    let delivered = sidecar
        .invoke(&app, &trigger, "POST", "/forge/events", Some(&event))
        .await;
    assert_eq!(delivered.status, StatusCode::OK, "{:?}", delivered.body);
    assert_eq!(delivered.json()["queued"], true);
    let pushed = sidecar.pushed_events();
    assert_eq!(pushed.len(), 1);
    assert_eq!(pushed[0].queue, "connect-axum-events");
    assert_eq!(
        pushed[0].authorization,
        format!("Forge id={trigger},as=app")
    );
    assert_eq!(
        pushed[0].installation_id.as_deref(),
        Some(&*acme.installation_id)
    );
    // Nothing ran yet: the notes are there until Forge delivers the event back.
    let page = sidecar.invoke(&app, &alice, "GET", NOTES, None).await;
    assert_eq!(bodies(&page.json()), [json!("acme")]);

    let consumer = sidecar.invocation(FakeSidecar::app_context(&acme));
    let delivery =
        json!({ "queueName": pushed[0].queue, "jobId": pushed[0].job_id, "body": pushed[0].body });
    let ran = sidecar
        .invoke(
            &app,
            &consumer,
            "POST",
            "/forge/events/consume",
            Some(&delivery),
        )
        .await;
    assert_eq!(ran.status, StatusCode::OK, "{:?}", ran.body);
    assert_eq!(ran.json()["handlers"], 1);
    let page = sidecar.invoke(&app, &alice, "GET", NOTES, None).await;
    assert_eq!(bodies(&page.json()), Vec::<Value>::new());
    // Another site's PROJ-1 is another issue.
    let page = sidecar.invoke(&app, &bob, "GET", NOTES, None).await;
    assert_eq!(bodies(&page.json()), [json!("globex")]);
    // A redelivery finds nothing left to delete.
    let again = sidecar
        .invoke(
            &app,
            &consumer,
            "POST",
            "/forge/events/consume",
            Some(&delivery),
        )
        .await;
    assert_eq!(again.status, StatusCode::OK);
}

#[tokio::test]
async fn events_are_forges_to_send_and_malformed_ones_are_refused() {
    let (app, sidecar) = container().await;
    let site = sidecar.site("acme");
    let user = sidecar.invocation(FakeSidecar::user_context(&site, "557058:alice", "PROJ-1"));
    let event = json!({ "eventType": "avi:jira:deleted:issue", "issue": { "key": "PROJ-1" } });
    for path in ["/forge/events", "/forge/events/consume"] {
        sidecar
            .invoke(&app, &user, "POST", path, Some(&event))
            .await
            .assert_error(StatusCode::FORBIDDEN, "user_invocation");
    }
    let trigger = sidecar.invocation(FakeSidecar::app_context(&site));
    sidecar
        .invoke(
            &app,
            &trigger,
            "POST",
            "/forge/events",
            Some(&json!({ "issue": {} })),
        )
        .await
        .assert_error(StatusCode::BAD_REQUEST, "missing_event_type");
    sidecar
        .invoke(
            &app,
            &trigger,
            "POST",
            "/forge/events/consume",
            Some(&json!({ "body": {} })),
        )
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_event");
    for path in ["/forge/events", "/forge/events/consume"] {
        app.call("POST", path, None, Some(&event))
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "missing_invocation_id");
    }
    // An event no handler wants is answered and not pushed.
    let other = json!({ "eventType": "avi:jira:created:issue", "issue": { "key": "PROJ-2" } });
    let answered = sidecar
        .invoke(&app, &trigger, "POST", "/forge/events", Some(&other))
        .await;
    assert_eq!(answered.json()["queued"], false);
    assert!(sidecar.pushed_events().is_empty());
}

#[tokio::test]
async fn a_handler_that_fails_is_a_503_for_forge_to_deliver_again() {
    let (app, sidecar) = container().await;
    let site = sidecar.site("acme");
    let alice = sidecar.invocation(FakeSidecar::user_context(&site, "557058:alice", "PROJ-1"));
    let created = sidecar
        .invoke(
            &app,
            &alice,
            "POST",
            NOTES,
            Some(&json!({ "body": "kept?" })),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let consumer = sidecar.invocation(FakeSidecar::app_context(&site));
    let event =
        json!({ "eventType": "avi:jira:deleted:issue", "event": { "issue": { "key": "PROJ-1" } } });
    // The consumer's invocation is known (its context kept); then Forge SQL stops answering.
    let unknown = json!({ "eventType": "avi:jira:created:issue", "event": {} });
    let first = sidecar
        .invoke(
            &app,
            &consumer,
            "POST",
            "/forge/events/consume",
            Some(&unknown),
        )
        .await;
    assert_eq!(first.json()["handlers"], 0);
    sidecar.set_down(true);
    sidecar
        .invoke(
            &app,
            &consumer,
            "POST",
            "/forge/events/consume",
            Some(&event),
        )
        .await
        .assert_error(StatusCode::SERVICE_UNAVAILABLE, "handler_failed");
    sidecar.set_down(false);
    let redelivered = json!({ "body": event, "retryContext": { "retryCount": 1 } });
    let ran = sidecar
        .invoke(
            &app,
            &consumer,
            "POST",
            "/forge/events/consume",
            Some(&redelivered),
        )
        .await;
    assert_eq!(ran.status, StatusCode::OK, "{:?}", ran.body);
    let page = sidecar.invoke(&app, &alice, "GET", NOTES, None).await;
    assert_eq!(bodies(&page.json()), Vec::<Value>::new());
}

#[tokio::test]
async fn the_sweep_brings_every_installation_up_to_date_before_its_first_request() {
    let (app, sidecar) = container().await;
    let sites: Vec<_> = (0..3).map(|n| sidecar.site(&format!("site-{n}"))).collect();
    let failed = connect_axum::ops::sql_sweep::sweep(&app.state).await;
    assert_eq!(failed, 0);
    let names = issue_notes::forge_sql::migrations()
        .names()
        .map(|n| json!({ "name": n }))
        .collect::<Vec<_>>();
    for site in &sites {
        let applied = sidecar
            .sql()
            .rows(
                &site.installation_id,
                "SELECT name FROM connect_axum_migrations ORDER BY name",
            )
            .await;
        assert_eq!(applied, names, "{}", site.name);
    }
    // The first request finds its database ready: no schema statement is sent for it.
    let ddl = sidecar
        .sql()
        .calls_on(connect_axum_testing::sidecar::SqlRoute::Ddl)
        .len();
    let id = sidecar.invocation(FakeSidecar::user_context(
        &sites[0],
        "557058:alice",
        "PROJ-1",
    ));
    let page = sidecar.invoke(&app, &id, "GET", NOTES, None).await;
    assert_eq!(page.status, StatusCode::OK, "{:?}", page.body);
    assert_eq!(
        sidecar
            .sql()
            .calls_on(connect_axum_testing::sidecar::SqlRoute::Ddl)
            .len(),
        ddl
    );
}

#[tokio::test]
async fn a_user_writes_notes_as_itself_and_deletes_only_its_own() {
    let (app, sidecar) = container().await;
    let site = sidecar.site("acme");
    let alice = sidecar.invocation(FakeSidecar::user_context(&site, "557058:alice", "PROJ-1"));
    let mallory = sidecar.invocation(FakeSidecar::user_context(&site, "557058:mallory", "PROJ-1"));
    // The author is the invocation's user; a body naming another is not read for it.
    let body = json!({ "body": "mine", "author": "557058:mallory" });
    let created = sidecar
        .invoke(&app, &alice, "POST", NOTES, Some(&body))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(created.json()["author"], "557058:alice");
    let note = format!("{NOTES}/{}", created.json()["id"]);
    sidecar
        .invoke(&app, &mallory, "DELETE", &note, None)
        .await
        .assert_error(StatusCode::FORBIDDEN, "not_note_author");
    // A user's invocation reaches only the issue it was made on.
    sidecar
        .invoke(&app, &alice, "GET", "/forge/api/issues/PROJ-2/notes", None)
        .await
        .assert_error(StatusCode::FORBIDDEN, "issue_not_allowed");
    let page = sidecar.invoke(&app, &alice, "GET", NOTES, None).await;
    assert_eq!(bodies(&page.json()), [json!("mine")]);
    let deleted = sidecar.invoke(&app, &alice, "DELETE", &note, None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
}
