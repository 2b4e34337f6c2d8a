//! Forge's egress proxy as a container sees it: the headers of an invocation the sidecar forwards,
//! and the `forge-proxy-authorization` header every outbound call carries, saying whom the call
//! is made for: `Forge id=<invocation id>` within an invocation, `Forge installationId=<id>,as=app`
//! (or `as=user,accountId=<id>`) outside one.

use std::fmt;

/// The header naming the invocation the sidecar forwards.
pub const INVOCATION_ID_HEADER: &str = "x-forge-invocation-id";

/// The header of an invocation's log attributes (base64), which log lines carry as
/// `forge_invocation`.
pub const INVOCATION_LOG_ATTRIBUTES_HEADER: &str = "x-forge-invocation-log-attributes";

/// The longest log-attributes header a log line carries.
pub const MAX_LOG_ATTRIBUTES_CHARS: usize = 4096;

/// What a container's log lines carry as `forge_invocation`: the invocation's log-attributes
/// header as the sidecar sent it, when it is base64 of at most [`MAX_LOG_ATTRIBUTES_CHARS`].
/// Forge documents the field as that header; whether it wants it decoded is unconfirmed, and
/// this is the one place that changes if so.
pub fn log_attributes(value: Option<&str>) -> Option<&str> {
    value.filter(|v| {
        (1..=MAX_LOG_ATTRIBUTES_CHARS).contains(&v.len())
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_'))
    })
}

/// The header every call through the egress proxy carries.
pub const PROXY_AUTHORIZATION_HEADER: &str = "forge-proxy-authorization";

/// The longest id this side sends or accepts in the header.
pub const MAX_ID_CHARS: usize = 256;

/// Whom an egress call is made for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyAuthorization {
    /// The invocation or installation the call belongs to.
    pub scope: ProxyScope,
    /// Whom it acts as; `None` leaves it to the proxy (the invocation's own principal).
    pub actor: Option<ProxyActor>,
}

/// What an egress call belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyScope {
    /// The invocation being served (`id=`, the `x-forge-invocation-id` it came with).
    Invocation(String),
    /// An installation, outside any invocation (`installationId=`).
    Installation(String),
}

/// Whom an egress call acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyActor {
    /// The app (`as=app`).
    App,
    /// A user (`as=user`): the invocation's own, or the account named (`accountId=`, offline
    /// impersonation).
    User {
        /// The Atlassian account id to act for; `None` for the invocation's user.
        account_id: Option<String>,
    },
}

/// A header value this side refuses to send or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyAuthorizationError {
    /// Not `Forge ` followed by `name=value` pairs separated by commas.
    #[error("the header is not `Forge name=value,...`")]
    Malformed,
    /// An id that is empty, longer than [`MAX_ID_CHARS`], or holds a character outside letters,
    /// digits and `-_.:/`.
    #[error("an id in the header is empty, too long or holds a character it may not")]
    InvalidId,
    /// Neither `id` nor `installationId`, both, a repeated field, or `accountId` without
    /// `as=user`.
    #[error("the header's fields do not name one invocation or installation")]
    InvalidFields,
}

impl ProxyAuthorization {
    /// Calls within the invocation `id`, as its principal.
    pub fn invocation(id: &str) -> Result<Self, ProxyAuthorizationError> {
        check_id(id)?;
        Ok(Self {
            scope: ProxyScope::Invocation(id.to_owned()),
            actor: None,
        })
    }

    /// Calls for the installation `id` outside any invocation, as the app.
    pub fn installation_as_app(id: &str) -> Result<Self, ProxyAuthorizationError> {
        check_id(id)?;
        Ok(Self {
            scope: ProxyScope::Installation(id.to_owned()),
            actor: Some(ProxyActor::App),
        })
    }

    /// Calls for the installation `id` as the user `account_id` (offline impersonation).
    pub fn installation_as_user(
        id: &str,
        account_id: &str,
    ) -> Result<Self, ProxyAuthorizationError> {
        check_id(id)?;
        check_id(account_id)?;
        Ok(Self {
            scope: ProxyScope::Installation(id.to_owned()),
            actor: Some(ProxyActor::User {
                account_id: Some(account_id.to_owned()),
            }),
        })
    }

    /// The same scope, acting as `actor`.
    pub fn acting_as(self, actor: ProxyActor) -> Result<Self, ProxyAuthorizationError> {
        if let ProxyActor::User {
            account_id: Some(account),
        } = &actor
        {
            check_id(account)?;
        }
        Ok(Self {
            actor: Some(actor),
            ..self
        })
    }

    /// Reads a header value, as the proxy would.
    pub fn parse(value: &str) -> Result<Self, ProxyAuthorizationError> {
        let fields = value
            .strip_prefix("Forge ")
            .ok_or(ProxyAuthorizationError::Malformed)?;
        let (mut id, mut installation, mut as_, mut account) = (None, None, None, None);
        for field in fields.split(',') {
            let (name, value) = field
                .split_once('=')
                .ok_or(ProxyAuthorizationError::Malformed)?;
            let slot = match name {
                "id" => &mut id,
                "installationId" => &mut installation,
                "as" => &mut as_,
                "accountId" => &mut account,
                _ => return Err(ProxyAuthorizationError::InvalidFields),
            };
            if slot.replace(value).is_some() {
                return Err(ProxyAuthorizationError::InvalidFields);
            }
        }
        let scope = match (id, installation) {
            (Some(id), None) => ProxyScope::Invocation(checked(id)?),
            (None, Some(id)) => ProxyScope::Installation(checked(id)?),
            _ => return Err(ProxyAuthorizationError::InvalidFields),
        };
        let actor = match (as_, account) {
            (None, None) => None,
            (Some("app"), None) => Some(ProxyActor::App),
            (Some("user"), account) => Some(ProxyActor::User {
                account_id: account.map(checked).transpose()?,
            }),
            _ => return Err(ProxyAuthorizationError::InvalidFields),
        };
        Ok(Self { scope, actor })
    }
}

impl fmt::Display for ProxyAuthorization {
    /// The header's value; every id in it was checked when it was made.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.scope {
            ProxyScope::Invocation(id) => write!(f, "Forge id={id}")?,
            ProxyScope::Installation(id) => write!(f, "Forge installationId={id}")?,
        }
        match &self.actor {
            None => Ok(()),
            Some(ProxyActor::App) => f.write_str(",as=app"),
            Some(ProxyActor::User { account_id: None }) => f.write_str(",as=user"),
            Some(ProxyActor::User {
                account_id: Some(account),
            }) => write!(f, ",as=user,accountId={account}"),
        }
    }
}

/// Whether `id` may stand in the header: it could otherwise add a field of its own.
pub fn is_valid_id(id: &str) -> bool {
    (1..=MAX_ID_CHARS).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/".contains(&b))
}

fn check_id(id: &str) -> Result<(), ProxyAuthorizationError> {
    is_valid_id(id)
        .then_some(())
        .ok_or(ProxyAuthorizationError::InvalidId)
}

fn checked(id: &str) -> Result<String, ProxyAuthorizationError> {
    check_id(id).map(|()| id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const INSTALLATION: &str =
        "ari:cloud:ecosystem::installation/5e2f0c1a-0000-4000-8000-000000000001";

    #[test]
    fn each_form_the_proxy_documents_is_written_and_read_back() {
        let cases = [
            (
                ProxyAuthorization::invocation("0f3c-77ab").unwrap(),
                "Forge id=0f3c-77ab",
            ),
            (
                ProxyAuthorization::installation_as_app(INSTALLATION).unwrap(),
                "Forge installationId=ari:cloud:ecosystem::installation/5e2f0c1a-0000-4000-8000-000000000001,as=app",
            ),
            (
                ProxyAuthorization::installation_as_user(INSTALLATION, "557058:f00d").unwrap(),
                "Forge installationId=ari:cloud:ecosystem::installation/5e2f0c1a-0000-4000-8000-000000000001,as=user,accountId=557058:f00d",
            ),
            (
                ProxyAuthorization::invocation("abc")
                    .unwrap()
                    .acting_as(ProxyActor::User { account_id: None })
                    .unwrap(),
                "Forge id=abc,as=user",
            ),
        ];
        for (auth, header) in cases {
            assert_eq!(auth.to_string(), header);
            assert_eq!(ProxyAuthorization::parse(header), Ok(auth));
        }
    }

    #[test]
    fn an_id_that_could_add_a_field_or_break_the_header_is_refused() {
        for id in [
            "",
            "a,as=app",
            "a=b",
            "a b",
            "a\r\nx: y",
            &"a".repeat(MAX_ID_CHARS + 1),
        ] {
            assert_eq!(
                ProxyAuthorization::invocation(id),
                Err(ProxyAuthorizationError::InvalidId),
                "{id:?}"
            );
            assert!(ProxyAuthorization::installation_as_user("i", id).is_err());
        }
    }

    #[test]
    fn headers_that_name_no_one_scope_are_refused() {
        for (header, error) in [
            ("Bearer x", ProxyAuthorizationError::Malformed),
            ("Forge ", ProxyAuthorizationError::Malformed),
            ("Forge id", ProxyAuthorizationError::Malformed),
            ("Forge as=app", ProxyAuthorizationError::InvalidFields),
            (
                "Forge id=a,installationId=b",
                ProxyAuthorizationError::InvalidFields,
            ),
            ("Forge id=a,id=b", ProxyAuthorizationError::InvalidFields),
            (
                "Forge id=a,accountId=b",
                ProxyAuthorizationError::InvalidFields,
            ),
            (
                "Forge id=a,as=app,accountId=b",
                ProxyAuthorizationError::InvalidFields,
            ),
            ("Forge id=a,as=root", ProxyAuthorizationError::InvalidFields),
            (
                "Forge id=a,scope=all",
                ProxyAuthorizationError::InvalidFields,
            ),
            ("Forge id=a b", ProxyAuthorizationError::InvalidId),
        ] {
            assert_eq!(ProxyAuthorization::parse(header), Err(error), "{header:?}");
        }
    }

    #[test]
    fn log_attributes_are_carried_only_as_bounded_base64() {
        assert_eq!(log_attributes(Some("eyJhIjoxfQ==")), Some("eyJhIjoxfQ=="));
        assert_eq!(log_attributes(Some("a\"b")), None);
        assert_eq!(log_attributes(Some("")), None);
        assert_eq!(
            log_attributes(Some(&"A".repeat(MAX_LOG_ATTRIBUTES_CHARS + 1))),
            None
        );
        assert_eq!(log_attributes(None), None);
    }
}
