//! Fuzzes `qsh::canonical_request`: it never panics, is deterministic, has the shape
//! `METHOD&PATH&QUERY` with no raw `&` in the path, and its query part ignores parameter order
//! and `jwt` parameters.

#![no_main]

use connect_axum::protocol::qsh::canonical_request;
use libfuzzer_sys::fuzz_target;

/// Lines of the input: method, path, query (none when the line is missing), base path, and a
/// last line whose length rotates the query's parameters and which is added as a `jwt` parameter.
struct Input<'a> {
    method: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    base_path: &'a str,
    extra: Option<&'a str>,
}

impl<'a> Input<'a> {
    fn split(text: &'a str) -> Self {
        let mut lines = text.splitn(5, '\n');
        Self {
            method: lines.next().unwrap_or(""),
            path: lines.next().unwrap_or(""),
            query: lines.next(),
            base_path: lines.next().unwrap_or(""),
            extra: lines.next(),
        }
    }
}

fn is_canonical_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~%=,&".contains(&b)
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .expect("canonical parts decode to UTF-8")
        .into_owned()
}

fn check(input: &Input) {
    let &Input {
        method,
        path,
        query,
        base_path,
        extra,
    } = input;
    let out = canonical_request(method, path, query, base_path);
    assert_eq!(
        out,
        canonical_request(method, path, query, base_path),
        "deterministic"
    );

    let upper = method.to_ascii_uppercase();
    let rest = out
        .strip_prefix(&upper)
        .and_then(|r| r.strip_prefix('&'))
        .expect("starts with the upper-cased method and `&`");
    // The query part, computed on its own, ends the output after a `&`.
    let alone = canonical_request("", "/", query, "");
    let canonical_query = alone
        .strip_prefix("&/&")
        .expect("shape with an empty method");
    let path_part = rest
        .strip_suffix(canonical_query)
        .and_then(|r| r.strip_suffix('&'))
        .expect("ends with `&` and the query part");
    assert!(!path_part.contains('&'), "no raw `&` in the path part");
    assert!(!path_part.is_empty(), "the path part is never empty");

    assert!(
        canonical_query.bytes().all(is_canonical_byte),
        "query part is percent-encoded: {canonical_query:?}"
    );
    let mut previous: Option<String> = None;
    for param in canonical_query.split('&').filter(|p| !p.is_empty()) {
        let (key, values) = param.split_once('=').expect("every parameter has `=`");
        let key = percent_decode(key);
        assert_ne!(key, "jwt", "jwt is dropped");
        if let Some(p) = &previous {
            assert!(*p < key, "keys are unique and sorted: {p:?} then {key:?}");
        }
        previous = Some(key);
        let values: Vec<String> = values.split(',').map(percent_decode).collect();
        assert!(values.is_sorted(), "values are sorted");
    }

    assert_eq!(
        out,
        canonical_request(&method.to_ascii_lowercase(), path, query, base_path),
        "method case does not matter"
    );
    if !path.ends_with('/') {
        assert_eq!(
            out,
            canonical_request(method, &format!("{path}/"), query, base_path),
            "one trailing slash does not matter"
        );
    }

    let Some(q) = query else { return };
    let mut params: Vec<String> = q.split('&').map(str::to_owned).collect();
    let n = params.len();
    params.rotate_left(extra.map_or(0, str::len) % n);
    let rotated = params.join("&");
    params.reverse();
    let reversed = params.join("&");
    for other in [rotated, reversed] {
        assert_eq!(
            out,
            canonical_request(method, path, Some(&other), base_path),
            "parameter order does not matter: {q:?} vs {other:?}"
        );
    }
    if let Some(token) = extra {
        let token: String = form_urlencoded::byte_serialize(token.as_bytes()).collect();
        params.insert(token.len() % (n + 1), format!("jwt={token}"));
        let with_jwt = params.join("&");
        assert_eq!(
            out,
            canonical_request(method, path, Some(&with_jwt), base_path),
            "a jwt parameter does not matter: {with_jwt:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| check(&Input::split(&String::from_utf8_lossy(data))));
