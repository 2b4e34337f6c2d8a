//! Forge's egress proxy as the one way out of a Forge Container: calls to the proxy itself pass,
//! calls to a host the app declares (its manifest's `permissions.external.fetch.backend`) are
//! sent through the proxy's external route, and every other call is refused before it is sent:
//! Forge blocks any other way out, and an undeclared host would fail there anyway.

use url::Url;

use super::Failure;

/// The proxy and the external hosts a container's calls may reach.
#[derive(Debug)]
pub(crate) struct Egress {
    proxy: Url,
    hosts: Box<[HostPattern]>,
}

/// A declared host: `api.example.com` exactly, or `*.example.com` for its subdomains.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    Subdomains(String),
}

impl HostPattern {
    /// Reads a manifest entry: a host, a `*.` wildcard, or a URL whose host is taken.
    fn parse(entry: &str) -> Option<Self> {
        let entry = entry.trim().to_ascii_lowercase();
        let host = match entry.split_once("://") {
            Some((_, rest)) => rest.split(['/', ':']).next().unwrap_or_default().to_owned(),
            None => entry,
        };
        if let Some(domain) = host.strip_prefix("*.") {
            return (!domain.is_empty()).then(|| Self::Subdomains(domain.to_owned()));
        }
        (!host.is_empty() && !host.contains('*')).then_some(Self::Exact(host))
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            Self::Exact(exact) => host == exact,
            Self::Subdomains(domain) => host
                .strip_suffix(domain.as_str())
                .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
        }
    }
}

impl Egress {
    /// Calls through `proxy` (`FORGE_EGRESS_PROXY_URL`), to the proxy itself and to `hosts`.
    /// An entry that is neither a host, a `*.` wildcard nor a URL is ignored.
    pub(crate) fn new(proxy: &Url, hosts: &[String]) -> Self {
        Self {
            proxy: proxy.clone(),
            hosts: hosts.iter().filter_map(|h| HostPattern::parse(h)).collect(),
        }
    }

    /// The proxy's URL.
    pub(crate) fn proxy(&self) -> &Url {
        &self.proxy
    }

    /// Points `request` at the way out it may take.
    ///
    /// # Errors
    /// [`Failure::EgressRefused`] for a host neither the proxy nor declared.
    pub(crate) fn route(&self, request: &mut reqwest::Request) -> Result<(), Failure> {
        let url = request.url();
        if url.origin() == self.proxy.origin() {
            return Ok(());
        }
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        if !self.hosts.iter().any(|pattern| pattern.matches(&host)) {
            return Err(Failure::EgressRefused { host });
        }
        *request.url_mut() = self.external_url(url)?;
        Ok(())
    }

    /// Where the proxy takes a call to a declared host: `{proxy}/proxy/{host}{path}`. Atlassian
    /// documents the route (`proxy/{target}`) but not how a target is written; this function is
    /// the one place to change when a live install shows it.
    fn external_url(&self, url: &Url) -> Result<Url, Failure> {
        let host = url.host_str().unwrap_or_default();
        let mut target = format!(
            "{}/proxy/{host}{}",
            self.proxy.as_str().trim_end_matches('/'),
            url.path()
        );
        if let Some(query) = url.query() {
            target.push('?');
            target.push_str(query);
        }
        Url::parse(&target).map_err(|e| Failure::Unreachable(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn egress(hosts: &[&str]) -> Egress {
        let hosts: Vec<String> = hosts.iter().map(|h| (*h).to_owned()).collect();
        Egress::new(&Url::parse("http://localhost:7072").unwrap(), &hosts)
    }

    fn route(egress: &Egress, url: &str) -> Result<String, Failure> {
        let mut request = reqwest::Request::new(reqwest::Method::GET, Url::parse(url).unwrap());
        egress.route(&mut request)?;
        Ok(request.url().to_string())
    }

    #[test]
    fn calls_to_the_proxy_pass_unchanged() {
        let e = egress(&[]);
        let url = "http://localhost:7072/jira/rest/api/3/myself?expand=groups";
        assert_eq!(route(&e, url).unwrap(), url);
    }

    #[test]
    fn an_undeclared_host_is_refused_by_name() {
        let e = egress(&["api.example.com"]);
        for url in [
            "https://evil.example.com/x",
            "https://api.example.com.evil.io/x",
            "http://localhost:7073/",
            "https://example.com/",
        ] {
            match route(&e, url) {
                Err(Failure::EgressRefused { host }) => assert!(url.contains(&host), "{url}"),
                other => panic!("{url}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_declared_host_goes_through_the_proxy() {
        let e = egress(&["https://API.example.com", "*.hooks.example.org"]);
        assert_eq!(
            route(&e, "https://api.example.com/v1/items?page=2").unwrap(),
            "http://localhost:7072/proxy/api.example.com/v1/items?page=2"
        );
        assert_eq!(
            route(&e, "https://eu.hooks.example.org/in").unwrap(),
            "http://localhost:7072/proxy/eu.hooks.example.org/in"
        );
        assert!(route(&e, "https://hooks.example.org/in").is_err());
    }

    #[test]
    fn entries_that_are_not_hosts_are_ignored() {
        assert_eq!(HostPattern::parse("*."), None);
        assert_eq!(HostPattern::parse(""), None);
        assert_eq!(HostPattern::parse("a*.example.com"), None);
        assert_eq!(
            HostPattern::parse("https://x.example.com:8443/path"),
            Some(HostPattern::Exact("x.example.com".into()))
        );
    }
}
