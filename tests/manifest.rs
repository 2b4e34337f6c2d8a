//! The sample's Forge manifests (`forge/manifest.yml`, its Connect-on-Forge variant and the Forge
//! Container one) checked against the server they describe: the library's default Forge paths and
//! the tokens it needs there, the sample's Forge routes and product event, the panel's paths and
//! the Connect descriptor; for the container, its service against the image and the health route.
//! A manifest that drifts from any of them fails here, not on a live site.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use connect_axum::config::Config;
use connect_axum::state::forge_events::{INSTALLED, UPGRADED};
use serde_json::Value;
use yaml_rust2::{Yaml, YamlLoader};

const FRONTEND: &str = include_str!("../forge/src/frontend/panel.jsx");
// The panel's entries: each gives it the call of its kind of app.
const REMOTE_ENTRY: &str = include_str!("../forge/src/frontend/index.jsx");
const CONTAINER_ENTRY: &str = include_str!("../forge/src/frontend/container.jsx");
const DOCKERFILE: &str = include_str!("../Dockerfile");
const SAMPLE_PAGE: &str = include_str!("../src/page.rs");
const SAMPLE_ROUTES: &str = include_str!("../src/lib.rs");
// The handler's module is private to the sample, so its constant is read from the source.
const SAMPLE_EVENTS: &str = include_str!("../src/forge.rs");

/// The prefix of the sample's notes API for Forge.
const FORGE_NOTES_PREFIX: &str = "/forge/api/issues/";

/// One manifest file, parsed.
struct Manifest {
    path: &'static str,
    doc: Yaml,
}

impl Manifest {
    fn load(path: &'static str, text: &str) -> Self {
        let mut docs = YamlLoader::load_from_str(text).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(docs.len(), 1, "{path}: one YAML document");
        Self {
            path,
            doc: docs.remove(0),
        }
    }

    fn modules(&self, kind: &str) -> &[Yaml] {
        self.doc["modules"][kind]
            .as_vec()
            .map_or(&[], Vec::as_slice)
    }

    fn endpoint(&self, key: &str) -> Option<&Yaml> {
        self.modules("endpoint")
            .iter()
            .find(|e| e["key"].as_str() == Some(key))
    }

    /// The endpoint a trigger-like module names, which must exist.
    fn endpoint_of(&self, kind: &str, module: &Yaml) -> &Yaml {
        let key = text(
            &module["endpoint"],
            &format!("{}: {kind} endpoint", self.path),
        );
        self.endpoint(key)
            .unwrap_or_else(|| panic!("{}: {kind} names no endpoint {key}", self.path))
    }

    /// The file a resource key points at, from the manifest's directory.
    fn resource_file(&self, key: &str) -> PathBuf {
        let resource = self.doc["resources"]
            .as_vec()
            .and_then(|r| r.iter().find(|r| r["key"].as_str() == Some(key)))
            .unwrap_or_else(|| panic!("{}: no resource {key}", self.path));
        let dir = Path::new(self.path).parent().unwrap();
        repo_file(&dir.join(text(&resource["path"], "resource path")))
    }

    fn scopes(&self) -> BTreeSet<&str> {
        self.doc["permissions"]["scopes"]
            .as_vec()
            .unwrap_or_else(|| panic!("{}: no permissions.scopes", self.path))
            .iter()
            .map(|s| text(s, "scope"))
            .collect()
    }
}

fn manifests() -> [Manifest; 2] {
    [
        Manifest::load("forge/manifest.yml", include_str!("../forge/manifest.yml")),
        Manifest::load(
            "forge/connect-on-forge/manifest.yml",
            include_str!("../forge/connect-on-forge/manifest.yml"),
        ),
    ]
}

fn text<'a>(value: &'a Yaml, what: &str) -> &'a str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{what}: expected a string, found {value:?}"))
}

fn enabled(auth: &Yaml, token: &str) -> bool {
    auth[token]["enabled"].as_bool() == Some(true)
}

fn repo_file(relative: &Path) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    path.canonicalize()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The library's Forge paths when no setting moves them.
fn library_paths() -> (String, String, String) {
    let config = Config::from_vars(|_| None).unwrap();
    (
        config.forge.events_path,
        config.forge.scheduled_path,
        config.forge.pre_uninstall_path,
    )
}

fn descriptor() -> Value {
    serde_json::from_str(issue_notes::DESCRIPTOR).unwrap()
}

/// The value of `const NAME: &str = "…";` (of any visibility) in a Rust source.
fn rust_str_const<'a>(source: &'a str, name: &str) -> &'a str {
    let start = format!(" const {name}: &str = \"");
    let rest = &source[source.find(&start).unwrap_or_else(|| panic!("no {name}")) + start.len()..];
    &rest[..rest.find('"').unwrap()]
}

/// A route template with every placeholder (`{issue_key}`, `${…}`) as `{}`.
fn normalized(path: &str) -> String {
    let mut out = String::new();
    // A query (`?limit=…`) is not part of the route.
    let mut rest = path.split('?').next().unwrap_or(path);
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}').map(|c| open + c).unwrap();
        out.push_str(rest[..open].trim_end_matches('$'));
        out.push_str("{}");
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

/// The text of a call's arguments, from just after its `(` to its matching `)`.
fn call_arguments(after_open: &str) -> &str {
    let mut depth = 1;
    for (i, c) in after_open.char_indices() {
        match c {
            '(' => depth += 1,
            ')' if depth == 1 => return &after_open[..i],
            ')' => depth -= 1,
            _ => {}
        }
    }
    panic!("an unclosed call: {after_open}")
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// (method, path) of every route of the sample's `forge_router`, read from its source.
fn sample_forge_routes() -> BTreeSet<(String, String)> {
    let start = SAMPLE_ROUTES
        .find("pub fn forge_router()")
        .expect("src/lib.rs has forge_router");
    let body = &SAMPLE_ROUTES[start..];
    let body = &body[..body.find("\n}\n").unwrap()];
    let mut routes = BTreeSet::new();
    for route in body.split(".route(").skip(1) {
        let route = call_arguments(route);
        let path = route.split('"').nth(1).unwrap();
        for method in ["get", "post", "put", "patch", "delete"] {
            let call = format!("{method}(");
            if route
                .match_indices(&call)
                .any(|(i, _)| i == 0 || !is_ident_byte(route.as_bytes()[i - 1]))
            {
                routes.insert((method.to_uppercase(), normalized(path)));
            }
        }
    }
    routes
}

/// (method, path) of every call the panel makes: `callServer('METHOD', builder(…))`, where each
/// builder is a `const` arrow function whose template literal starts with the Forge notes prefix.
fn frontend_calls() -> BTreeSet<(String, String)> {
    let mut builders = Vec::new();
    for (i, _) in FRONTEND.match_indices("const ") {
        let rest = &FRONTEND[i + "const ".len()..];
        let name_len = rest
            .bytes()
            .position(|b| !is_ident_byte(b))
            .unwrap_or(rest.len());
        let (name, rest) = rest.split_at(name_len);
        let Some(rest) = rest.strip_prefix(" = (") else {
            continue;
        };
        let definition = &rest[..rest.find(';').unwrap_or(rest.len())];
        let Some(template) = definition.split('`').nth(1) else {
            continue;
        };
        if template.starts_with(FORGE_NOTES_PREFIX) {
            builders.push((name, normalized(template)));
        }
    }
    assert!(!builders.is_empty(), "the frontend builds no Forge path");
    let mut calls = BTreeSet::new();
    for call in FRONTEND.split("callServer('").skip(1) {
        let (method, rest) = call.split_once("', ").unwrap();
        let builder = &rest[..rest.find('(').unwrap()];
        let (_, path) = builders
            .iter()
            .find(|(name, _)| *name == builder)
            .unwrap_or_else(|| panic!("{method} goes to {builder}, not a Forge notes path"));
        calls.insert((method.to_owned(), path.clone()));
    }
    calls
}

/// Every path literal of the frontend that starts with the Forge notes prefix.
fn frontend_paths() -> BTreeSet<String> {
    FRONTEND
        .match_indices(FORGE_NOTES_PREFIX)
        .map(|(i, _)| {
            let rest = &FRONTEND[i..];
            normalized(&rest[..rest.find(['`', '\'', '"']).unwrap()])
        })
        .collect()
}

#[test]
fn every_endpoint_route_is_a_forge_path_the_library_serves_with_a_system_token() {
    let (events, scheduled, pre_uninstall) = library_paths();
    let served = [&events, &scheduled, &pre_uninstall];
    for m in manifests() {
        let mut routed = BTreeSet::new();
        for endpoint in m.modules("endpoint") {
            let key = text(&endpoint["key"], "endpoint key");
            let remote = text(&endpoint["remote"], "endpoint remote");
            assert!(
                m.doc["remotes"]
                    .as_vec()
                    .unwrap()
                    .iter()
                    .any(|r| r["key"].as_str() == Some(remote)),
                "{}: endpoint {key} names no remote {remote}",
                m.path
            );
            let Some(path) = endpoint["route"]["path"].as_str() else {
                continue;
            };
            assert!(
                served.iter().any(|s| s.as_str() == path),
                "{}: endpoint {key} routes to {path}, which the library does not serve",
                m.path
            );
            // The deliveries bring the token the library stores and refreshes;
            // /forge/scheduled refuses a delivery without one.
            assert!(
                enabled(&endpoint["auth"], "appSystemToken"),
                "{}: endpoint {key} lacks auth.appSystemToken.enabled: true",
                m.path
            );
            routed.insert(path);
        }
        for path in served {
            assert!(
                routed.contains(path.as_str()),
                "{}: no endpoint routes to {path}",
                m.path
            );
        }
    }
}

#[test]
fn every_trigger_names_an_endpoint_of_its_library_path() {
    let (events, scheduled, pre_uninstall) = library_paths();
    for m in manifests() {
        for (kind, path) in [
            ("trigger", &events),
            ("scheduledTrigger", &scheduled),
            ("preUninstall", &pre_uninstall),
        ] {
            assert!(!m.modules(kind).is_empty(), "{}: no {kind}", m.path);
            for module in m.modules(kind) {
                let endpoint = m.endpoint_of(kind, module);
                assert_eq!(
                    endpoint["route"]["path"].as_str(),
                    Some(path.as_str()),
                    "{}: {kind} {:?}",
                    m.path,
                    module["key"]
                );
            }
        }
    }
}

#[test]
fn the_triggers_carry_install_upgrade_and_the_samples_issue_event() {
    let issue_deleted = rust_str_const(SAMPLE_EVENTS, "ISSUE_DELETED");
    for m in manifests() {
        let events: BTreeSet<&str> = m
            .modules("trigger")
            .iter()
            .flat_map(|t| t["events"].as_vec().unwrap())
            .map(|e| text(e, "event"))
            .collect();
        for event in [INSTALLED, UPGRADED, issue_deleted] {
            assert!(events.contains(event), "{}: no trigger of {event}", m.path);
        }
    }
}

#[test]
fn the_system_token_is_refreshed_hourly() {
    for m in manifests() {
        for module in m.modules("scheduledTrigger") {
            assert_eq!(
                module["interval"].as_str(),
                Some("hour"),
                "{}: {:?}",
                m.path,
                module["key"]
            );
        }
    }
}

#[test]
fn remote_and_endpoint_keys_fit_forges_limits() {
    let fits = |key: &str| {
        (1..=23).contains(&key.len())
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    for m in manifests() {
        let remotes = m.doc["remotes"].as_vec().unwrap().iter();
        let mut keys: Vec<&str> = remotes
            .chain(m.modules("endpoint"))
            .map(|r| text(&r["key"], "key"))
            .collect();
        if let Some(remote) = m.doc["app"]["connect"]["remote"].as_str() {
            keys.push(remote);
        }
        for key in keys {
            assert!(fits(key), "{}: key {key:?}", m.path);
        }
        let unique: BTreeSet<&str> = m
            .modules("endpoint")
            .iter()
            .map(|e| text(&e["key"], "endpoint key"))
            .collect();
        assert_eq!(unique.len(), m.modules("endpoint").len(), "{}", m.path);
    }
}

#[test]
fn the_remote_is_the_servers_https_origin_and_serves_the_panel_icon() {
    for m in manifests() {
        for remote in m.doc["remotes"].as_vec().unwrap() {
            let base = url::Url::parse(text(&remote["baseUrl"], "baseUrl")).unwrap();
            assert_eq!(base.scheme(), "https", "{}", m.path);
            // Forge joins the caller's path by URL resolution: a path here could be dropped.
            assert_eq!(base.path(), "/", "{}: baseUrl without a path", m.path);
        }
        let panels = m.modules("jira:issuePanel");
        assert_eq!(panels.len(), 1, "{}", m.path);
        let panel = &panels[0];
        let endpoint = m.endpoint_of("jira:issuePanel resolver", &panel["resolver"]);
        let remote = text(&endpoint["remote"], "remote");
        let base = m.doc["remotes"]
            .as_vec()
            .unwrap()
            .iter()
            .find(|r| r["key"].as_str() == Some(remote))
            .map(|r| url::Url::parse(text(&r["baseUrl"], "baseUrl")).unwrap())
            .unwrap();
        // The sample's public_router serves it.
        assert_eq!(
            text(&panel["icon"], "icon"),
            base.join("/icon.svg").unwrap().as_str(),
            "{}",
            m.path
        );
        assert!(!text(&panel["title"], "title").is_empty());
    }
}

#[test]
fn the_panel_calls_the_remote_with_the_users_and_the_apps_tokens() {
    for m in manifests() {
        let panel = &m.modules("jira:issuePanel")[0];
        let endpoint = m.endpoint_of("jira:issuePanel resolver", &panel["resolver"]);
        assert!(
            enabled(&endpoint["auth"], "appUserToken"),
            "{}: the panel's endpoint lacks appUserToken",
            m.path
        );
        assert!(
            enabled(&endpoint["auth"], "appSystemToken"),
            "{}: the panel's endpoint lacks appSystemToken",
            m.path
        );
        // invokeRemote gives the path; a route here would not be used.
        assert!(endpoint["route"].is_badvalue(), "{}", m.path);
        let scopes = m.scopes();
        for scope in ["read:app-system-token", "read:app-user-token"] {
            assert!(scopes.contains(scope), "{}: no {scope}", m.path);
        }
    }
}

#[test]
fn the_panel_renders_the_frontend_that_calls_the_samples_forge_routes() {
    let frontend = repo_file(Path::new("forge/src/frontend/index.jsx"));
    for m in manifests() {
        let panel = &m.modules("jira:issuePanel")[0];
        assert_eq!(panel["render"].as_str(), Some("native"), "{}", m.path);
        let resource = text(&panel["resource"], "resource");
        assert_eq!(m.resource_file(resource), frontend, "{}", m.path);
    }

    let server = sample_forge_routes();
    assert!(!server.is_empty(), "forge_router has no routes");
    for (_, path) in &server {
        assert!(path.starts_with(FORGE_NOTES_PREFIX), "{path}");
    }
    assert!(REMOTE_ENTRY.contains("renderPanel(invokeRemote)"));
    let routes: BTreeSet<String> = server.iter().map(|(_, path)| path.clone()).collect();
    assert_eq!(
        frontend_paths(),
        routes,
        "the panel's paths and the sample's Forge routes differ"
    );
    assert_eq!(
        frontend_calls(),
        server,
        "the panel's calls and the sample's Forge routes differ"
    );
}

#[test]
fn the_issue_event_has_the_scope_forge_requires_for_it() {
    for m in manifests() {
        // Forge's manifest linter maps avi:jira:deleted:issue to read:jira-work.
        assert!(m.scopes().contains("read:jira-work"), "{}", m.path);
    }
}

#[test]
fn the_forge_manifest_has_no_connect_part() {
    let [forge, _] = manifests();
    assert!(forge.doc["app"]["connect"].is_badvalue());
    assert!(forge.doc["connectModules"].is_badvalue());
    assert!(
        text(&forge.doc["app"]["id"], "app.id").starts_with("ari:cloud:ecosystem::app/"),
        "app.id is an app ARI"
    );
}

#[test]
fn the_connect_on_forge_variant_carries_the_descriptors_key_hooks_and_webhook() {
    let [_, variant] = manifests();
    let descriptor = descriptor();
    let connect = &variant.doc["app"]["connect"];
    assert_eq!(connect["key"].as_str(), descriptor["key"].as_str());
    assert_eq!(connect["authentication"].as_str(), Some("jwt"));
    let remote = text(&connect["remote"], "app.connect.remote");
    assert!(
        variant.doc["remotes"]
            .as_vec()
            .unwrap()
            .iter()
            .any(|r| r["key"].as_str() == Some(remote)),
        "app.connect.remote names no remote"
    );

    let modules = &variant.doc["connectModules"];
    let lifecycle = modules["jira:lifecycle"].as_vec().unwrap();
    assert_eq!(lifecycle.len(), 1, "one jira:lifecycle entry");
    let hooks = lifecycle[0].as_hash().unwrap();
    for (name, url) in hooks {
        let name = text(name, "hook");
        if name != "key" {
            assert_eq!(
                url.as_str(),
                descriptor["lifecycle"][name].as_str(),
                "lifecycle {name}"
            );
        }
    }
    // The two hooks Forge still calls for a Connect-on-Forge app.
    for hook in ["installed", "uninstalled"] {
        assert!(
            lifecycle[0][hook].as_str().is_some(),
            "jira:lifecycle lacks {hook}"
        );
    }

    let webhooks: BTreeSet<(&str, &str)> = modules["jira:webhooks"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|w| (text(&w["event"], "event"), text(&w["url"], "url")))
        .collect();
    let described: BTreeSet<(&str, &str)> = descriptor["modules"]["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| (w["event"].as_str().unwrap(), w["url"].as_str().unwrap()))
        .collect();
    assert_eq!(webhooks, described);

    // Each Connect scope of the descriptor as its Forge name (READ is read:connect-jira).
    let scopes = variant.scopes();
    for scope in descriptor["scopes"].as_array().unwrap() {
        let forge = format!(
            "{}:connect-jira",
            scope.as_str().unwrap().to_lowercase().replace('_', "-")
        );
        assert!(scopes.contains(forge.as_str()), "no {forge}");
    }
}

#[test]
fn the_connect_on_forge_variant_has_the_same_forge_modules_on_its_connect_remote() {
    let [forge, variant] = manifests();
    let remote = text(
        &variant.doc["app"]["connect"]["remote"],
        "app.connect.remote",
    );
    let mut expected = forge.doc["modules"].clone();
    if let Some(endpoints) = expected["endpoint"].as_mut_vec() {
        for endpoint in endpoints {
            endpoint["remote"] = Yaml::String(remote.to_owned());
        }
    }
    assert_eq!(variant.doc["modules"], expected);
    assert_eq!(
        variant.doc["remotes"][0]["baseUrl"], forge.doc["remotes"][0]["baseUrl"],
        "one server behind both"
    );
}

#[test]
fn the_forge_remote_guide_shows_the_manifest_as_it_is() {
    let manifest = std::fs::read_to_string(repo_file(Path::new("forge/manifest.yml"))).unwrap();
    let guide = repo_file(Path::new("docs/guide/forge-remote.md"));
    let guide = std::fs::read_to_string(guide).unwrap();
    let block = format!("```yaml\n{}```", manifest);
    assert!(
        guide.contains(&block),
        "docs/guide/forge-remote.md's ```yaml block differs from forge/manifest.yml"
    );
}

fn container() -> Manifest {
    Manifest::load(
        "forge/container/manifest.yml",
        include_str!("../forge/container/manifest.yml"),
    )
}

/// The key rule of `@forge/manifest` 13.7.0's schema for services and containers:
/// `^[a-z]([a-z0-9-]{0,23}[a-z0-9])?$`.
fn is_service_key(key: &str) -> bool {
    let bytes = key.as_bytes();
    let inner = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    match bytes {
        [first] => first.is_ascii_lowercase(),
        [first, middle @ .., last] => {
            first.is_ascii_lowercase()
                && middle.len() <= 23
                && middle.iter().all(|b| inner(b) || *b == b'-')
                && inner(last)
        }
        [] => false,
    }
}

fn services(m: &Manifest) -> &[Yaml] {
    m.doc["services"]
        .as_vec()
        .unwrap_or_else(|| panic!("{}: no services", m.path))
}

/// The one container of the one service.
fn the_container(m: &Manifest) -> &Yaml {
    let services = services(m);
    assert_eq!(services.len(), 1, "{}: one service", m.path);
    let containers = services[0]["containers"].as_vec().unwrap();
    // Only the first container of a service receives traffic.
    assert_eq!(containers.len(), 1, "{}: one container", m.path);
    &containers[0]
}

#[test]
fn service_and_container_keys_match_forges_rule() {
    for (key, fits) in [
        ("notes", true),
        ("a", true),
        ("notes-server", true),
        ("a234567890123456789012345", true),
        ("a2345678901234567890123456", false),
        ("Notes", false),
        ("notes_server", false),
        ("notes-", false),
        ("1notes", false),
        ("", false),
    ] {
        assert_eq!(is_service_key(key), fits, "{key:?}");
    }
    let m = container();
    for service in services(&m) {
        let key = text(&service["key"], "service key");
        assert!(is_service_key(key), "{}: service key {key:?}", m.path);
        for c in service["containers"].as_vec().unwrap() {
            let key = text(&c["key"], "container key");
            assert!(is_service_key(key), "{}: container key {key:?}", m.path);
        }
    }
}

#[test]
fn the_container_has_a_documented_size_and_scales_by_min_and_max_only() {
    // The pairs Forge's manifest reference allows; the schema does not check them.
    const SIZES: [(&str, &str); 9] = [
        ("30m", "64Mi"),
        ("60m", "128Mi"),
        ("125m", "256Mi"),
        ("250m", "512Mi"),
        ("500m", "1Gi"),
        ("1000m", "2Gi"),
        ("2000m", "4Gi"),
        ("4000m", "8Gi"),
        ("4000m", "16Gi"),
    ];
    let m = container();
    let resources = &the_container(&m)["resources"];
    let size = (
        text(&resources["cpu"], "cpu"),
        text(&resources["memory"], "memory"),
    );
    assert!(SIZES.contains(&size), "{}: {size:?}", m.path);

    let scaling = services(&m)[0]["scaling"].as_hash().unwrap();
    let keys: BTreeSet<&str> = scaling.keys().map(|k| text(k, "scaling key")).collect();
    assert_eq!(keys, BTreeSet::from(["max", "min"]), "{}", m.path);
    let (min, max) = (
        scaling[&Yaml::from_str("min")].as_i64().unwrap(),
        scaling[&Yaml::from_str("max")].as_i64().unwrap(),
    );
    assert!(
        0 <= min && 1 <= max && min <= max,
        "{}: {min}..{max}",
        m.path
    );
}

#[test]
fn the_image_tag_is_the_samples_version() {
    // Forge's registry keeps a tag once pushed: each release is pushed under its own version.
    let m = container();
    assert_eq!(
        the_container(&m)["tag"].as_str(),
        Some(env!("CARGO_PKG_VERSION")),
        "{}",
        m.path
    );
}

#[test]
fn the_image_listens_where_forge_sends_traffic() {
    let target = DOCKERFILE
        .split("\nFROM ")
        .find(|stage| {
            stage
                .lines()
                .next()
                .unwrap()
                .ends_with(" AS forge-container")
        })
        .expect("the Dockerfile has a forge-container target");
    let port = connect_axum::config::DEFAULT_CONTAINER_PORT;
    assert!(
        target.contains(&format!("\nEXPOSE {port}\n")),
        "EXPOSE {port}"
    );
    assert!(
        target.contains("\nUSER 1000:1000\n"),
        "Forge runs UID/GID 1000"
    );
    // `forge tunnel` runs the image the guide builds from that target.
    let m = container();
    let image = text(
        &the_container(&m)["tunnel"]["docker"]["image"],
        "tunnel.docker.image",
    );
    let guide = std::fs::read_to_string(repo_file(Path::new("docs/guide/running-on-atlassian.md")))
        .unwrap();
    assert!(
        guide.contains(&format!("--target forge-container -t {image} ")),
        "the guide builds {image} from the forge-container target"
    );
}

#[tokio::test]
async fn the_health_route_is_the_servers_and_answers_200_in_container_mode() {
    let m = container();
    let path = text(&the_container(&m)["health"]["route"]["path"], "health path");
    assert_eq!(the_container(&m)["health"]["type"].as_str(), Some("http"));
    assert_eq!(path, "/healthz", "{}: the library's liveness route", m.path);

    // Forge's variable alone, as Forge starts it (the store in memory); nothing listens there:
    // the health route asks the sidecar nothing.
    let config = Config::from_vars(|name| {
        (name == "FORGE_EGRESS_PROXY_URL").then(|| "http://127.0.0.1:9".to_owned())
    })
    .unwrap();
    assert!(config.container.is_some(), "container mode");
    let app = issue_notes::app(config).build().await.unwrap();
    let request = axum::http::Request::get(path)
        .body(axum::body::Body::empty())
        .unwrap();
    let response = tower::ServiceExt::oneshot(app.router(), request)
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "GET {path}");
}

#[test]
fn every_container_endpoint_is_the_services_and_routes_to_a_path_the_server_serves() {
    let (events, _, _) = library_paths();
    let defaults = Config::from_vars(|name| {
        (name == "FORGE_EGRESS_PROXY_URL").then(|| "http://proxy-sidecar:7072".to_owned())
    })
    .unwrap()
    .container
    .expect("container mode");
    let served = [events.clone(), defaults.events_consumer_path.clone()];
    let m = container();
    assert!(m.doc["remotes"].is_badvalue(), "{}: no remote", m.path);
    let service = text(&services(&m)[0]["key"], "service key");
    for endpoint in m.modules("endpoint") {
        let key = text(&endpoint["key"], "endpoint key");
        assert!(endpoint["remote"].is_badvalue(), "{}: {key}", m.path);
        assert_eq!(
            endpoint["service"].as_str(),
            Some(service),
            "{}: endpoint {key}",
            m.path
        );
        if let Some(path) = endpoint["route"]["path"].as_str() {
            assert!(
                served.iter().any(|p| p == path),
                "{}: endpoint {key} routes to {path}, which the library does not serve",
                m.path
            );
        }
    }
    // The events the library hands to Forge's async events come back to its consumer route.
    let consumers = m.modules("consumer");
    assert_eq!(consumers.len(), 1, "{}: one consumer", m.path);
    assert_eq!(
        consumers[0]["queue"].as_str(),
        Some(&*defaults.events_queue)
    );
    let endpoint = m.endpoint_of("consumer", &consumers[0]);
    assert_eq!(
        endpoint["route"]["path"].as_str(),
        Some(&*defaults.events_consumer_path)
    );
    for module in m.modules("trigger") {
        let endpoint = m.endpoint_of("trigger", module);
        assert_eq!(endpoint["route"]["path"].as_str(), Some(events.as_str()));
    }
    // What the container has no use for: the installation is the tenant, the sidecar holds the
    // tokens, and whether it delivers these at all is unconfirmed.
    for kind in ["scheduledTrigger", "preUninstall"] {
        assert!(m.modules(kind).is_empty(), "{}: {kind}", m.path);
    }
}

#[test]
fn the_container_triggers_carry_only_the_event_the_sample_handles() {
    let issue_deleted = rust_str_const(SAMPLE_EVENTS, "ISSUE_DELETED");
    let m = container();
    let events: BTreeSet<&str> = m
        .modules("trigger")
        .iter()
        .flat_map(|t| t["events"].as_vec().unwrap())
        .map(|e| text(e, "event"))
        .collect();
    assert_eq!(events, BTreeSet::from([issue_deleted]), "{}", m.path);
    assert!(m.scopes().contains("read:jira-work"), "{}", m.path);
}

#[test]
fn the_container_keeps_its_data_in_forge_sql() {
    let m = container();
    let sql = m.modules("sql");
    assert_eq!(sql.len(), 1, "{}: one sql module", m.path);
    assert_eq!(sql[0]["key"].as_str(), Some("main"));
    assert_eq!(sql[0]["engine"].as_str(), Some("mysql"));
}

#[test]
fn the_container_panel_is_the_samples_panel_over_invoke_service() {
    let m = container();
    let [forge, _] = manifests();
    let panels = m.modules("jira:issuePanel");
    assert_eq!(panels.len(), 1, "{}", m.path);
    let (panel, remote_panel) = (&panels[0], &forge.modules("jira:issuePanel")[0]);
    for field in ["key", "title", "resource", "render"] {
        assert_eq!(panel[field], remote_panel[field], "{}: {field}", m.path);
    }
    assert_eq!(
        m.resource_file(text(&panel["resource"], "resource")),
        repo_file(Path::new("forge/src/frontend/container.jsx")),
        "{}",
        m.path
    );
    assert!(CONTAINER_ENTRY.contains("await invokeService(request)"));
    assert!(CONTAINER_ENTRY.contains("renderPanel("));

    let endpoint = m.endpoint_of("jira:issuePanel resolver", &panel["resolver"]);
    // invokeService gives the path; a route here would not be used.
    assert!(endpoint["route"].is_badvalue(), "{}", m.path);
    assert!(enabled(&endpoint["auth"], "appUserToken"), "{}", m.path);

    // No public host serves it: the icon is a resource file, the server's own.
    let icon = text(&panel["icon"], "icon");
    let (resource, file) = icon
        .strip_prefix("resource:")
        .and_then(|r| r.split_once(';'))
        .unwrap_or_else(|| panic!("{}: icon {icon:?} is not resource:<key>;<path>", m.path));
    let svg = std::fs::read_to_string(m.resource_file(resource).join(file)).unwrap();
    assert_eq!(svg.trim_end(), rust_raw_str_const(SAMPLE_PAGE, "ICON"));
}

/// The value of `const NAME: &str = r##"…"##;` in a Rust source.
fn rust_raw_str_const<'a>(source: &'a str, name: &str) -> &'a str {
    let start = format!("const {name}: &str = r##\"");
    let rest = &source[source.find(&start).unwrap_or_else(|| panic!("no {name}")) + start.len()..];
    &rest[..rest.find("\"##").unwrap()]
}
