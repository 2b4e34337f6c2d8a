//! The query string hash (QSH): the canonical form of a request that Connect JWTs bind themselves to.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::{Digest, Sha256};

/// The `qsh` claim of context tokens, which are bound to no request.
pub const CONTEXT_QSH: &str = "context-qsh";

/// RFC 3986 unreserved characters stay; everything else is percent-encoded.
const RFC3986: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Builds the canonical request `METHOD&PATH&QUERY`.
///
/// `path` is the raw (still percent-encoded) request path, `query` the raw query string without
/// `?`, and `base_path` the path of the base URL the request is relative to (`""` or `/` for none).
pub fn canonical_request(method: &str, path: &str, query: Option<&str>, base_path: &str) -> String {
    format!(
        "{}&{}&{}",
        method.to_ascii_uppercase(),
        canonical_path(path, base_path),
        canonical_query(query.unwrap_or(""))
    )
}

/// Hex SHA-256 of a canonical request.
pub fn hash(canonical: &str) -> String {
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

/// The QSH of a request: `hash(canonical_request(..))`.
pub fn qsh(method: &str, path: &str, query: Option<&str>, base_path: &str) -> String {
    hash(&canonical_request(method, path, query, base_path))
}

fn canonical_path(path: &str, base_path: &str) -> String {
    let base = base_path.trim_end_matches('/');
    let relative = match path.strip_prefix(base) {
        Some(rest) if !base.is_empty() && (rest.is_empty() || rest.starts_with('/')) => rest,
        _ => path,
    };
    let trimmed = match relative.strip_suffix('/') {
        Some(rest) if !rest.is_empty() => rest,
        _ => relative,
    };
    if trimmed.is_empty() || trimmed == "/" {
        return "/".to_owned();
    }
    // `&` separates the parts of the canonical request, so one inside the path must not.
    trimmed.replace('&', "%26")
}

fn canonical_query(query: &str) -> String {
    let mut params: Vec<(String, Vec<String>)> = Vec::new();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        if key == "jwt" {
            continue;
        }
        match params.iter_mut().find(|(k, _)| *k == key) {
            Some((_, values)) => values.push(value.into_owned()),
            None => params.push((key.into_owned(), vec![value.into_owned()])),
        }
    }
    params.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = String::with_capacity(query.len() + 16);
    for (i, (key, values)) in params.iter_mut().enumerate() {
        values.sort();
        if i > 0 {
            out.push('&');
        }
        out.extend(utf8_percent_encode(key, RFC3986));
        out.push('=');
        for (j, value) in values.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            out.extend(utf8_percent_encode(value, RFC3986));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(method: &str, target: &str, base_path: &str) -> String {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        canonical_request(method, path, query, base_path)
    }

    #[test]
    fn documented_examples_hash_as_atlassian_publishes() {
        assert_eq!(
            qsh("GET", "/path", None, ""),
            "799be84a7fa35570087163c0cd9af3abff7ac05c2c12ba0bb1d7eebc984b3ac2"
        );
        assert_eq!(canonical("get", "/", ""), "GET&/&");
        assert_eq!(
            hash("GET&/&"),
            "c88caad15a1c1a900b8ac08aa9686f4e8184539bea1deda36e2f649430df3239"
        );
        assert_eq!(
            canonical(
                "GET",
                "/path/to/service?zee_last=param&repeated=parameter 1&first=param&repeated=parameter 2&repeated=Parameter 2",
                ""
            ),
            "GET&/path/to/service&first=param&repeated=Parameter%202,parameter%201,parameter%202&zee_last=param"
        );
        assert_eq!(
            canonical("POST", "/jira/rest/api/2/project/jira&a=b&c=d?x=y", "/jira"),
            "POST&/rest/api/2/project/jira%26a=b%26c=d&x=y"
        );
    }

    #[test]
    fn empty_path_and_query_give_root_and_trailing_ampersand() {
        assert_eq!(canonical("GET", "", ""), "GET&/&");
        assert_eq!(canonical("GET", "/?", ""), "GET&/&");
        assert_eq!(canonical("GET", "/?jwt=abc", ""), "GET&/&");
    }

    #[test]
    fn one_trailing_slash_is_dropped() {
        assert_eq!(canonical("GET", "/a/b/", ""), "GET&/a/b&");
        assert_eq!(canonical("GET", "/a/b", ""), "GET&/a/b&");
    }

    #[test]
    fn base_path_is_removed_only_as_a_whole_segment() {
        assert_eq!(canonical("GET", "/wiki/rest/x", "/wiki"), "GET&/rest/x&");
        assert_eq!(canonical("GET", "/wiki/rest/x", "/wiki/"), "GET&/rest/x&");
        assert_eq!(canonical("GET", "/wiki", "/wiki"), "GET&/&");
        assert_eq!(canonical("GET", "/wiki/", "/wiki"), "GET&/&");
        assert_eq!(
            canonical("GET", "/wikipedia/x", "/wiki"),
            "GET&/wikipedia/x&"
        );
    }

    #[test]
    fn repeated_parameters_are_sorted_and_comma_joined() {
        assert_eq!(
            canonical("GET", "/t?b=2&a=z&a=y&b=1", ""),
            "GET&/t&a=y,z&b=1,2"
        );
    }

    #[test]
    fn parameters_without_value_are_kept_with_an_equals_sign() {
        assert_eq!(canonical("GET", "/t?flag&x=1", ""), "GET&/t&flag=&x=1");
    }

    #[test]
    fn unicode_and_reserved_characters_are_percent_encoded_in_upper_case() {
        assert_eq!(
            canonical("GET", "/t?q=%C3%A9t%C3%A9+*~", ""),
            "GET&/t&q=%C3%A9t%C3%A9%20%2A~"
        );
    }

    #[test]
    fn encoded_slashes_in_the_path_are_kept_as_sent() {
        assert_eq!(canonical("GET", "/a%2Fb/c", ""), "GET&/a%2Fb/c&");
    }

    #[test]
    fn jwt_parameter_is_ignored_wherever_it_stands() {
        assert_eq!(canonical("GET", "/t?jwt=x&a=1&jwt=y", ""), "GET&/t&a=1");
    }

    #[test]
    fn method_is_upper_cased() {
        assert_eq!(canonical("delete", "/t", ""), "DELETE&/t&");
    }

    mod properties {
        use super::*;
        use percent_encoding::percent_encode;
        use proptest::prelude::*;

        /// Text rich in the characters that encoding, splitting and sorting treat specially.
        const TEXT: &str = "[a-zA-Z0-9 &=+%,;/?#~._é€😀-]{0,6}";

        fn pair() -> impl Strategy<Value = (String, String)> {
            (TEXT, TEXT).prop_filter("jwt is dropped", |(k, _)| k != "jwt")
        }

        fn pairs() -> impl Strategy<Value = Vec<(String, String)>> {
            prop::collection::vec(pair(), 0..8)
        }

        /// The query as a browser form sends it: `+` for space.
        fn form(pairs: &[(String, String)]) -> String {
            form_urlencoded::Serializer::new(String::new())
                .extend_pairs(pairs)
                .finish()
        }

        /// The query with every byte percent-encoded, letters and digits too, in `case` hex.
        fn every_byte(pairs: &[(String, String)], lower_hex: bool) -> String {
            let enc = |s: &str| {
                s.bytes()
                    .map(|b| {
                        if lower_hex {
                            format!("%{b:02x}")
                        } else {
                            format!("%{b:02X}")
                        }
                    })
                    .collect::<String>()
            };
            pairs
                .iter()
                .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
                .collect::<Vec<_>>()
                .join("&")
        }

        /// The query with only non-alphanumerics encoded: `%20` for space.
        fn minimal(pairs: &[(String, String)]) -> String {
            let enc = |s: &str| percent_encode(s.as_bytes(), NON_ALPHANUMERIC).to_string();
            pairs
                .iter()
                .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
                .collect::<Vec<_>>()
                .join("&")
        }

        fn query_part(query: &str) -> String {
            canonical_request("GET", "/t", Some(query), "")
                .strip_prefix("GET&/t&")
                .unwrap()
                .to_owned()
        }

        proptest! {
            #[test]
            fn parameter_order_does_not_matter(
                (pairs, shuffled) in pairs().prop_flat_map(|p| (Just(p.clone()), Just(p).prop_shuffle()))
            ) {
                prop_assert_eq!(query_part(&form(&pairs)), query_part(&form(&shuffled)));
            }

            #[test]
            fn jwt_parameters_are_ignored(
                pairs in pairs(),
                tokens in prop::collection::vec((TEXT, any::<prop::sample::Index>()), 1..3),
            ) {
                let mut with_jwt = pairs.clone();
                for (token, at) in tokens {
                    with_jwt.insert(at.index(with_jwt.len() + 1), ("jwt".to_owned(), token));
                }
                prop_assert_eq!(query_part(&form(&with_jwt)), query_part(&form(&pairs)));
            }

            #[test]
            fn repeated_keys_are_joined_with_commas_in_sorted_order(
                key in TEXT.prop_filter("jwt is dropped", |k| k != "jwt"),
                values in prop::collection::vec(TEXT, 1..6).prop_shuffle(),
            ) {
                let query = form(&values.iter().map(|v| (key.clone(), v.clone())).collect::<Vec<_>>());
                let mut sorted = values.clone();
                sorted.sort();
                let enc = |s: &str| utf8_percent_encode(s, RFC3986).to_string();
                let joined = sorted.iter().map(|v| enc(v)).collect::<Vec<_>>().join(",");
                prop_assert_eq!(query_part(&query), format!("{}={joined}", enc(&key)));
            }

            #[test]
            fn equivalent_percent_encodings_give_the_same_query(pairs in pairs()) {
                let expected = query_part(&form(&pairs));
                prop_assert_eq!(query_part(&minimal(&pairs)), expected.clone());
                prop_assert_eq!(query_part(&every_byte(&pairs, false)), expected.clone());
                prop_assert_eq!(query_part(&every_byte(&pairs, true)), expected);
            }

            #[test]
            fn method_case_does_not_matter(
                method in "[a-zA-Z]{1,10}",
                path in "(/[a-z0-9]{1,4}){0,3}",
                query in pairs(),
            ) {
                let query = form(&query);
                let upper = canonical_request(&method.to_ascii_uppercase(), &path, Some(&query), "");
                prop_assert_eq!(canonical_request(&method, &path, Some(&query), ""), upper.clone());
                prop_assert_eq!(
                    canonical_request(&method.to_ascii_lowercase(), &path, Some(&query), ""),
                    upper.clone()
                );
                let prefix = format!("{}&", method.to_ascii_uppercase());
                prop_assert!(upper.starts_with(&prefix));
            }

            #[test]
            fn one_trailing_slash_on_the_path_does_not_matter(
                path in "(/[a-zA-Z0-9%&.~-]{0,4}){0,4}".prop_filter("no trailing slash", |p| !p.ends_with('/')),
                base in "|/|(/[a-z]{1,3}){1,2}",
            ) {
                prop_assert_eq!(
                    canonical_request("GET", &format!("{path}/"), None, &base),
                    canonical_request("GET", &path, None, &base)
                );
            }

            #[test]
            fn base_path_is_stripped(
                base in "(/[a-z]{1,5}){1,3}",
                slash in any::<bool>(),
                rest in "(/[a-zA-Z0-9&%.-]{1,5}){0,3}",
                query in pairs(),
            ) {
                let query = form(&query);
                let base_path = if slash { format!("{base}/") } else { base.clone() };
                prop_assert_eq!(
                    canonical_request("GET", &format!("{base}{rest}"), Some(&query), &base_path),
                    canonical_request("GET", &rest, Some(&query), "")
                );
            }

            #[test]
            fn the_canonical_path_never_contains_an_ampersand(
                method in "[A-Z]{1,7}",
                path in any::<String>(),
                base in any::<String>(),
                query in prop::option::of(any::<String>()),
            ) {
                let out = canonical_request(&method, &path, query.as_deref(), &base);
                let query_part = query_part(query.as_deref().unwrap_or(""));
                let path_part = out
                    .strip_prefix(&format!("{method}&"))
                    .and_then(|r| r.strip_suffix(&query_part))
                    .and_then(|r| r.strip_suffix('&'));
                prop_assert!(path_part.is_some_and(|p| !p.is_empty() && !p.contains('&')), "{out:?}");
            }

            #[test]
            fn canonicalisation_is_deterministic(
                method in any::<String>(),
                path in any::<String>(),
                query in prop::option::of(any::<String>()),
                base in any::<String>(),
            ) {
                let once = canonical_request(&method, &path, query.as_deref(), &base);
                let again = canonical_request(&method, &path, query.as_deref(), &base);
                prop_assert_eq!(once, again);
            }
        }
    }
}
