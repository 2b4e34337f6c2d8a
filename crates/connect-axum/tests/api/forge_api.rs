//! The Forge API clients (hosted storage, offline user impersonation) against the kit's fake of
//! Atlassian's platform API on loopback, which checks the system token of every call.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use connect_axum::auth::ForgeToken;
use connect_axum::forge::impersonation::{
    DEFAULT_CONTEXT_ID_TEMPLATE, ImpersonationError, ImpersonationTarget, OfflineUserTokens,
};
use connect_axum::forge::storage::{
    Condition, EntityQuery, Entry, Filter, Filters, ForgeStorage, Page, SetOptions, Sort,
    StorageError, Ttl,
};
use connect_axum_testing::FakeForgeApi;
use connect_axum_testing::forge_api::{Impersonation, StorageCall};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(5);

const SITE: ImpersonationTarget<'static> = ImpersonationTarget {
    installation_id: "installation-1",
    cloud_id: "cloud-1",
    product: "jira",
};

fn storage(api: &FakeForgeApi) -> ForgeStorage {
    ForgeStorage::new(&api.base_url().parse().unwrap(), TIMEOUT)
}

fn tokens(api: &FakeForgeApi, template: &str) -> OfflineUserTokens {
    OfflineUserTokens::new(&api.graphql_url().parse().unwrap(), template, TIMEOUT)
}

/// A fake and a system token of `installation-1`.
async fn start() -> (FakeForgeApi, ForgeToken) {
    let api = FakeForgeApi::start().await;
    let token = ForgeToken::new(api.system_token(SITE.installation_id));
    (api, token)
}

fn keys<T>(page: &Page<T>) -> Vec<&str> {
    page.entries.iter().map(|e| e.key.as_str()).collect()
}

/// Polls `done` every 20 ms until it holds, failing after 5 s.
async fn eventually<F: Future<Output = bool>>(what: &str, mut done: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Settings {
    theme: String,
    columns: u32,
}

#[tokio::test]
async fn a_value_round_trips_through_set_get_and_delete() {
    let (api, token) = start().await;
    let client = storage(&api);
    let kvs = client.for_installation(&token);
    let settings = Settings {
        theme: "dark".into(),
        columns: 3,
    };

    kvs.set("settings:board 1", &settings, SetOptions::default())
        .await
        .unwrap();
    assert_eq!(
        kvs.get::<Settings>("settings:board 1").await.unwrap(),
        Some(settings)
    );
    assert_eq!(
        api.stored("installation-1", "settings:board 1"),
        Some(json!({ "theme": "dark", "columns": 3 }))
    );
    kvs.delete("settings:board 1").await.unwrap();
    assert_eq!(kvs.get::<Settings>("settings:board 1").await.unwrap(), None);
    assert_eq!(api.stored("installation-1", "settings:board 1"), None);

    let calls = api.storage_requests();
    assert_eq!(
        calls[0],
        StorageCall {
            op: "set".into(),
            installation_id: Some("installation-1".into()),
            body: json!({ "key": "settings:board 1", "value": { "theme": "dark", "columns": 3 } }),
        }
    );
    let ops: Vec<&str> = calls.iter().map(|c| c.op.as_str()).collect();
    assert_eq!(ops, ["set", "get", "delete", "get"]);
    assert_eq!(calls[2].body, json!({ "key": "settings:board 1" }));
}

#[tokio::test]
async fn deleting_an_absent_key_succeeds() {
    let (api, token) = start().await;
    let client = storage(&api);
    client
        .for_installation(&token)
        .delete("never")
        .await
        .unwrap();
    assert_eq!(api.storage_calls(), 1);
}

#[tokio::test]
async fn an_absent_key_reads_as_none_whether_forge_answers_404_or_400_not_found() {
    let (api, token) = start().await;
    let client = storage(&api);
    let kvs = client.for_installation(&token);
    assert_eq!(kvs.get::<Value>("absent").await.unwrap(), None);
    for code in ["NOT_FOUND", "KEY_NOT_FOUND"] {
        api.answer_absent_keys(StatusCode::BAD_REQUEST, code);
        assert_eq!(kvs.get::<Value>("absent").await.unwrap(), None, "{code}");
        assert_eq!(kvs.get_secret::<Value>("absent").await.unwrap(), None);
        assert_eq!(
            kvs.entity("task").get::<Value>("absent").await.unwrap(),
            None
        );
    }

    api.answer_absent_keys(StatusCode::BAD_REQUEST, "INVALID_KEY");
    match kvs.get::<Value>("absent").await {
        Err(StorageError::Api {
            status,
            code,
            message,
        }) => {
            assert_eq!(status, StatusCode::BAD_REQUEST);
            assert_eq!(code.as_deref(), Some("INVALID_KEY"));
            assert_eq!(message, "no such key");
        }
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn set_options_reach_forge_and_if_absent_refuses_an_existing_key() {
    let (api, token) = start().await;
    let client = storage(&api);
    let kvs = client.for_installation(&token);
    let once = SetOptions::default().ttl(Ttl::Minutes(5)).if_absent();

    kvs.set("lock:job-1", "first", once).await.unwrap();
    assert_eq!(
        api.storage_requests()[0].body,
        json!({
            "key": "lock:job-1",
            "value": "first",
            "options": { "ttl": { "value": 5, "unit": "MINUTES" }, "keyPolicy": "FAIL_IF_EXISTS" },
        })
    );
    match kvs.set("lock:job-1", "second", once).await {
        Err(StorageError::Api { status, code, .. }) => {
            assert_eq!(status, StatusCode::CONFLICT);
            assert_eq!(code.as_deref(), Some("KEY_ALREADY_EXISTS"));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(
        api.stored("installation-1", "lock:job-1"),
        Some(json!("first"))
    );

    kvs.set("lock:job-1", "third", SetOptions::default())
        .await
        .unwrap();
    assert_eq!(
        api.stored("installation-1", "lock:job-1"),
        Some(json!("third"))
    );
}

#[tokio::test]
async fn a_value_with_a_ttl_is_gone_once_it_expires() {
    let (api, token) = start().await;
    let client = storage(&api);
    let kvs = client.for_installation(&token);
    kvs.set("flash", &1, SetOptions::default().ttl(Ttl::Seconds(1)))
        .await
        .unwrap();
    assert_eq!(kvs.get::<u32>("flash").await.unwrap(), Some(1));
    let kvs = &kvs;
    eventually("the value to expire", || async move {
        kvs.get::<u32>("flash").await.unwrap().is_none()
    })
    .await;
}

#[tokio::test]
async fn a_query_pages_through_the_keys_with_a_prefix() {
    let (api, token) = start().await;
    let client = storage(&api);
    let kvs = client.for_installation(&token);
    for (n, key) in ["job:1", "job:2", "job:3", "job:4", "job:5", "other:1"]
        .iter()
        .enumerate()
    {
        kvs.set(key, &n, SetOptions::default()).await.unwrap();
    }
    let calls = api.storage_calls();

    let first = kvs.query::<usize>("job:", None, 2).await.unwrap();
    assert_eq!(
        first.entries,
        [
            Entry {
                key: "job:1".into(),
                value: 0
            },
            Entry {
                key: "job:2".into(),
                value: 1
            }
        ]
    );
    assert_eq!(
        api.storage_requests()[calls].body,
        json!({
            "where": [{ "property": "key", "condition": "BEGINS_WITH", "values": ["job:"] }],
            "limit": 2,
        })
    );
    let second = kvs
        .query::<usize>("job:", first.cursor.as_deref(), 2)
        .await
        .unwrap();
    assert_eq!(keys(&second), ["job:3", "job:4"]);
    let third = kvs
        .query::<usize>("job:", second.cursor.as_deref(), 2)
        .await
        .unwrap();
    assert_eq!(keys(&third), ["job:5"]);
    assert_eq!(third.cursor, None);

    let all = kvs.query::<usize>("", None, 100).await.unwrap();
    assert_eq!(all.entries.len(), 6);
    assert_eq!(all.cursor, None);
    assert_eq!(
        api.storage_requests().last().unwrap().body,
        json!({ "limit": 100 })
    );
}

#[tokio::test]
async fn secrets_are_kept_apart_from_values_and_never_listed() {
    let (api, token) = start().await;
    let client = storage(&api);
    let kvs = client.for_installation(&token);
    kvs.set_secret("oauth:client", "s3cret", SetOptions::default())
        .await
        .unwrap();
    assert_eq!(
        kvs.get_secret::<String>("oauth:client").await.unwrap(),
        Some("s3cret".to_owned())
    );
    assert_eq!(kvs.get::<String>("oauth:client").await.unwrap(), None);
    assert_eq!(kvs.query::<Value>("", None, 100).await.unwrap().entries, []);
    assert_eq!(
        api.stored_secret("installation-1", "oauth:client"),
        Some(json!("s3cret"))
    );
    assert_eq!(api.stored("installation-1", "oauth:client"), None);

    kvs.delete_secret("oauth:client").await.unwrap();
    assert_eq!(
        kvs.get_secret::<String>("oauth:client").await.unwrap(),
        None
    );
    let ops: Vec<String> = api.storage_requests().into_iter().map(|c| c.op).collect();
    assert_eq!(
        ops,
        [
            "secret/set",
            "secret/get",
            "get",
            "query",
            "secret/delete",
            "secret/get"
        ]
    );
}

#[tokio::test]
async fn entities_round_trip_and_are_queried_by_index() {
    let (api, token) = start().await;
    api.define_index("task", "by-project", &["project"], "rank");
    let client = storage(&api);
    let kvs = client.for_installation(&token);
    let tasks = kvs.entity("task");
    for (key, project, rank, state) in [
        ("t1", "P1", 3, "open"),
        ("t2", "P1", 1, "done"),
        ("t3", "P1", 2, "open"),
        ("t4", "P2", 4, "open"),
    ] {
        let task = json!({ "project": project, "rank": rank, "state": state });
        tasks.set(key, &task, SetOptions::default()).await.unwrap();
    }
    assert_eq!(
        tasks.get::<Value>("t2").await.unwrap(),
        Some(json!({ "project": "P1", "rank": 1, "state": "done" }))
    );
    assert_eq!(
        api.stored_entity("installation-1", "task", "t4"),
        Some(json!({ "project": "P2", "rank": 4, "state": "open" }))
    );
    assert_eq!(
        api.storage_requests()[0].body,
        json!({ "entityName": "task", "key": "t1", "value": { "project": "P1", "rank": 3, "state": "open" } })
    );

    let by_rank = EntityQuery::index("by-project")
        .partition(vec![json!("P1")])
        .sort(Sort::Desc)
        .limit(2);
    let first = tasks.query::<Value>(&by_rank).await.unwrap();
    assert_eq!(keys(&first), ["t1", "t3"]);
    let rest = tasks
        .query::<Value>(&by_rank.clone().cursor(first.cursor.as_deref().unwrap()))
        .await
        .unwrap();
    assert_eq!(keys(&rest), ["t2"]);
    assert_eq!(rest.cursor, None);

    let open_above_one = EntityQuery::index("by-project")
        .partition(vec![json!("P1")])
        .range(Condition::GreaterThan, vec![json!(1)])
        .filters(Filters::And(vec![Filter::new(
            "state",
            Condition::EqualTo,
            vec![json!("open")],
        )]));
    let page = tasks.query::<Value>(&open_above_one).await.unwrap();
    assert_eq!(keys(&page), ["t3", "t1"]);
    assert_eq!(
        api.storage_requests().last().unwrap().body,
        json!({
            "entityName": "task",
            "indexName": "by-project",
            "partition": ["P1"],
            "range": { "condition": "GREATER_THAN", "values": [1] },
            "filters": { "and": [{ "property": "state", "condition": "EQUAL_TO", "values": ["open"] }] },
        })
    );

    tasks.delete("t1").await.unwrap();
    assert_eq!(tasks.get::<Value>("t1").await.unwrap(), None);
    assert_eq!(api.stored_entity("installation-1", "task", "t1"), None);
}

#[tokio::test]
async fn invalid_keys_and_limits_are_refused_before_any_call() {
    let (api, token) = start().await;
    let client = storage(&api);
    let kvs = client.for_installation(&token);
    let long = "k".repeat(501);
    for key in ["", "   ", "a/b", "café", long.as_str()] {
        let invalid = |r: Result<(), StorageError>| matches!(r, Err(StorageError::InvalidKey(_)));
        assert!(invalid(kvs.get::<Value>(key).await.map(drop)), "{key:?}");
        assert!(invalid(kvs.set(key, &1, SetOptions::default()).await));
        assert!(invalid(kvs.delete(key).await));
        assert!(invalid(kvs.get_secret::<Value>(key).await.map(drop)));
        assert!(invalid(
            kvs.set_secret(key, &1, SetOptions::default()).await
        ));
        assert!(invalid(kvs.delete_secret(key).await));
        assert!(invalid(
            kvs.entity("task").get::<Value>(key).await.map(drop)
        ));
        assert!(invalid(
            kvs.entity("task")
                .set(key, &json!({}), SetOptions::default())
                .await
        ));
        assert!(invalid(kvs.entity("task").delete(key).await));
    }
    assert!(matches!(
        kvs.query::<Value>("a/", None, 10).await,
        Err(StorageError::InvalidKey(_))
    ));
    for limit in [0, 101] {
        assert!(matches!(
            kvs.query::<Value>("job:", None, limit).await,
            Err(StorageError::InvalidLimit(l)) if l == limit
        ));
        assert!(matches!(
            kvs.entity("task")
                .query::<Value>(&EntityQuery::index("by-project").limit(limit))
                .await,
            Err(StorageError::InvalidLimit(l)) if l == limit
        ));
    }
    assert_eq!(api.storage_calls(), 0);
    kvs.set(&"k".repeat(500), &1, SetOptions::default())
        .await
        .unwrap();
    assert_eq!(api.storage_calls(), 1);
}

#[tokio::test]
async fn a_429_is_retried_with_backoff_then_succeeds() {
    let (api, token) = start().await;
    let client = storage(&api);
    api.rate_limit_next(2, None);
    let started = Instant::now();
    client
        .for_installation(&token)
        .set("k", &1, SetOptions::default())
        .await
        .unwrap();
    assert_eq!(api.storage_calls(), 3);
    assert_eq!(api.stored("installation-1", "k"), Some(json!(1)));
    // 200 ms, then 400 ms.
    assert!(started.elapsed() >= Duration::from_millis(600));
}

#[tokio::test]
async fn a_429_waits_as_long_as_retry_after_says() {
    let (api, token) = start().await;
    let client = storage(&api);
    api.rate_limit_next(1, Some(Duration::from_secs(1)));
    let started = Instant::now();
    assert_eq!(
        client
            .for_installation(&token)
            .get::<Value>("k")
            .await
            .unwrap(),
        None
    );
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(api.storage_calls(), 2);
}

#[tokio::test]
async fn a_429_beyond_the_retries_is_rate_limited() {
    let (api, token) = start().await;
    let client = storage(&api);
    api.rate_limit_next(10, None);
    let result = client
        .for_installation(&token)
        .set("k", &1, SetOptions::default())
        .await;
    assert!(
        matches!(result, Err(StorageError::RateLimited { retry_after: None })),
        "{result:?}"
    );
    assert_eq!(api.storage_calls(), 4);
    assert_eq!(api.stored("installation-1", "k"), None);
}

#[tokio::test]
async fn a_429_asking_for_a_long_wait_is_rate_limited_at_once() {
    let (api, token) = start().await;
    let client = storage(&api);
    api.rate_limit_next(1, Some(Duration::from_secs(3600)));
    let result = client.for_installation(&token).get::<Value>("k").await;
    assert!(
        matches!(
            result,
            Err(StorageError::RateLimited { retry_after: Some(after) }) if after == Duration::from_secs(3600)
        ),
        "{result:?}"
    );
    assert_eq!(api.storage_calls(), 1);
}

#[tokio::test]
async fn an_unknown_system_token_is_answered_401() {
    let (api, _) = start().await;
    let client = storage(&api);
    let stranger = ForgeToken::new("not-a-token-the-fake-issued");
    match client.for_installation(&stranger).get::<Value>("k").await {
        Err(StorageError::Api { status, code, .. }) => {
            assert_eq!(status, StatusCode::UNAUTHORIZED);
            assert_eq!(code.as_deref(), Some("UNAUTHENTICATED"));
        }
        other => panic!("expected a 401, got {other:?}"),
    }
    assert_eq!(api.storage_requests()[0].installation_id, None);
}

#[tokio::test]
async fn installations_do_not_see_each_others_values() {
    let (api, token) = start().await;
    let other = ForgeToken::new(api.system_token("installation-2"));
    let client = storage(&api);
    client
        .for_installation(&token)
        .set("k", "one", SetOptions::default())
        .await
        .unwrap();
    assert_eq!(
        client
            .for_installation(&other)
            .get::<String>("k")
            .await
            .unwrap(),
        None
    );
    assert_eq!(api.stored("installation-2", "k"), None);
    assert_eq!(api.stored("installation-1", "k"), Some(json!("one")));
}

#[tokio::test]
async fn a_user_token_is_kept_for_the_next_call() {
    let (api, system) = start().await;
    let client = tokens(&api, DEFAULT_CONTEXT_ID_TEMPLATE);

    let first = client.token(&system, &SITE, "user-1").await.unwrap();
    let again = client.token(&system, &SITE, "user-1").await.unwrap();
    assert_eq!(first.expose(), "fake-user-token-2");
    assert_eq!(again.expose(), first.expose());
    assert_eq!(api.impersonations(), 1);
    assert_eq!(client.cached().await, 1);

    let other = client.token(&system, &SITE, "user-2").await.unwrap();
    assert_eq!(other.expose(), "fake-user-token-3");
    let elsewhere = ImpersonationTarget {
        installation_id: "installation-2",
        ..SITE
    };
    let there = client.token(&system, &elsewhere, "user-1").await.unwrap();
    assert_eq!(there.expose(), "fake-user-token-4");
    assert_eq!(api.impersonations(), 3);

    client.forget("installation-1", "user-1").await;
    let fresh = client.token(&system, &SITE, "user-1").await.unwrap();
    assert_eq!(fresh.expose(), "fake-user-token-5");
    assert_eq!(api.impersonations(), 4);
}

#[tokio::test]
async fn concurrent_calls_for_one_user_share_one_request() {
    let (api, system) = start().await;
    let client = tokens(&api, DEFAULT_CONTEXT_ID_TEMPLATE);
    api.delay_impersonation(Duration::from_millis(300));

    let (a, b, c) = tokio::join!(
        client.token(&system, &SITE, "user-1"),
        client.token(&system, &SITE, "user-1"),
        client.token(&system, &SITE, "user-2"),
    );
    assert_eq!(a.unwrap().expose(), b.unwrap().expose());
    assert!(c.is_ok());
    assert_eq!(api.impersonations(), 2);
    let mut asked: Vec<_> = api
        .impersonation_requests()
        .into_iter()
        .map(|r| r.account_id.unwrap())
        .collect();
    asked.sort();
    assert_eq!(asked, ["user-1", "user-2"]);
}

#[tokio::test]
async fn a_refusal_is_typed_and_not_kept() {
    let (api, system) = start().await;
    let client = tokens(&api, DEFAULT_CONTEXT_ID_TEMPLATE);
    api.refuse_impersonation("user-1", "The app cannot impersonate this user");

    for asked in 1..=2 {
        match client.token(&system, &SITE, "user-1").await {
            Err(ImpersonationError::Refused { messages }) => {
                assert_eq!(messages, ["The app cannot impersonate this user"]);
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert_eq!(api.impersonations(), asked);
    }
    assert_eq!(client.cached().await, 0);

    api.allow_impersonation("user-1");
    let token = client.token(&system, &SITE, "user-1").await.unwrap();
    assert_eq!(token.expose(), "fake-user-token-2");
    assert_eq!(api.impersonations(), 3);
}

#[tokio::test]
async fn a_token_without_time_left_is_asked_again() {
    let (api, system) = start().await;
    let client = tokens(&api, DEFAULT_CONTEXT_ID_TEMPLATE);
    api.impersonation_ttl(0);
    let first = client.token(&system, &SITE, "user-1").await.unwrap();
    let second = client.token(&system, &SITE, "user-1").await.unwrap();
    assert_ne!(first.expose(), second.expose());
    assert_eq!(api.impersonations(), 2);
}

#[tokio::test]
async fn a_token_is_asked_again_once_it_nears_expiry() {
    let (api, system) = start().await;
    let client = tokens(&api, DEFAULT_CONTEXT_ID_TEMPLATE);
    // Reused for half of its one second.
    api.impersonation_ttl(1);
    let first = client.token(&system, &SITE, "user-1").await.unwrap();
    let again = client.token(&system, &SITE, "user-1").await.unwrap();
    assert_eq!(again.expose(), first.expose());
    assert_eq!(api.impersonations(), 1);

    let (client, system, first) = (&client, &system, &first);
    eventually("the token to be asked again", || async move {
        let token = client.token(system, &SITE, "user-1").await.unwrap();
        token.expose() != first.expose()
    })
    .await;
    assert_eq!(api.impersonations(), 2);
}

#[tokio::test]
async fn context_ids_are_sent_as_the_template_renders() {
    let (api, system) = start().await;
    for (template, rendered) in [
        (DEFAULT_CONTEXT_ID_TEMPLATE, "ari:cloud:jira::site/cloud-1"),
        (
            "ari:cloud:{product}:{cloudId}:workspace/{cloudId}",
            "ari:cloud:jira:cloud-1:workspace/cloud-1",
        ),
        (
            "ari:cloud:ecosystem::installation/{installationId}",
            "ari:cloud:ecosystem::installation/installation-1",
        ),
    ] {
        let client = tokens(&api, template);
        assert_eq!(client.context_id(&SITE), rendered);
        client.token(&system, &SITE, "user-1").await.unwrap();
        assert_eq!(
            api.impersonation_requests().last().unwrap(),
            &Impersonation {
                installation_id: Some("installation-1".into()),
                account_id: Some("user-1".into()),
                context_ids: vec![rendered.to_owned()],
            }
        );
    }
    assert_eq!(api.impersonations(), 3);
}

#[tokio::test]
async fn invalid_account_ids_are_refused_before_any_call() {
    let (api, system) = start().await;
    let client = tokens(&api, DEFAULT_CONTEXT_ID_TEMPLATE);
    let long = "a".repeat(129);
    for account_id in ["", "user\n1", "user\u{7f}", long.as_str()] {
        assert!(
            matches!(
                client.token(&system, &SITE, account_id).await,
                Err(ImpersonationError::InvalidAccountId)
            ),
            "{account_id:?}"
        );
    }
    assert_eq!(api.impersonations(), 0);
}

#[tokio::test]
async fn an_unknown_system_token_is_status_401_for_impersonation() {
    let (api, _) = start().await;
    let client = tokens(&api, DEFAULT_CONTEXT_ID_TEMPLATE);
    let stranger = ForgeToken::new("not-a-token-the-fake-issued");
    assert!(matches!(
        client.token(&stranger, &SITE, "user-1").await,
        Err(ImpersonationError::Status(401))
    ));
    assert_eq!(api.impersonation_requests()[0].installation_id, None);
    assert_eq!(client.cached().await, 0);
}

#[tokio::test]
async fn a_rate_limited_impersonation_is_typed_and_not_kept() {
    let (api, system) = start().await;
    let client = tokens(&api, DEFAULT_CONTEXT_ID_TEMPLATE);
    api.rate_limit_next(1, Some(Duration::from_secs(30)));
    assert!(matches!(
        client.token(&system, &SITE, "user-1").await,
        Err(ImpersonationError::RateLimited { retry_after: Some(after) }) if after == Duration::from_secs(30)
    ));
    assert_eq!(
        client
            .token(&system, &SITE, "user-1")
            .await
            .unwrap()
            .expose(),
        "fake-user-token-2"
    );
    assert_eq!(api.impersonations(), 2);
}

#[tokio::test]
async fn an_impersonation_without_an_answer_in_time_is_a_timeout_and_not_kept() {
    let (api, system) = start().await;
    let client = OfflineUserTokens::new(
        &api.graphql_url().parse().unwrap(),
        DEFAULT_CONTEXT_ID_TEMPLATE,
        Duration::from_millis(100),
    );
    api.delay_impersonation(Duration::from_secs(2));
    assert!(matches!(
        client.token(&system, &SITE, "user-1").await,
        Err(ImpersonationError::Timeout)
    ));
    assert_eq!(client.cached().await, 0);
}
