//! How a value is set (its time to live, whether it may replace one) and what reads return.

use serde::{Deserialize, Serialize};

/// How long a stored value lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "unit", content = "value", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Ttl {
    /// This many seconds after the write (`{"unit": "SECONDS", "value": n}`).
    Seconds(u32),
    /// This many minutes after the write.
    Minutes(u32),
    /// This many hours after the write.
    Hours(u32),
    /// This many days after the write.
    Days(u32),
}

/// What a `set` does when the key exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum KeyPolicy {
    /// Replaces the value (Forge's default).
    Override,
    /// Refuses the write; Forge answers an error ([`StorageError::Api`](super::StorageError::Api)).
    FailIfExists,
}

/// The options of a `set`; the default keeps the value until deleted and overrides.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SetOptions {
    /// How long the value lives; `None` keeps it until deleted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Ttl>,
    /// What happens when the key exists; `None` is Forge's default, [`KeyPolicy::Override`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_policy: Option<KeyPolicy>,
}

impl SetOptions {
    /// The value expires after `ttl`.
    pub fn ttl(mut self, ttl: Ttl) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// The write is refused when the key exists.
    pub fn if_absent(mut self) -> Self {
        self.key_policy = Some(KeyPolicy::FailIfExists);
        self
    }

    pub(super) fn is_empty(&self) -> bool {
        self.ttl.is_none() && self.key_policy.is_none()
    }
}

/// A stored key and its value.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Entry<T> {
    /// The key the value is stored under.
    pub key: String,
    /// The stored value, decoded from its JSON.
    pub value: T,
}

/// One page of a query: its entries, and the cursor of the next page when there is one.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Page<T> {
    /// The page's entries, in Forge's order.
    #[serde(rename = "data")]
    pub entries: Vec<Entry<T>>,
    /// Where the next page starts; `None` on the last page. Forge says cursors are not stable:
    /// use one right away, never store it.
    #[serde(default)]
    pub cursor: Option<String>,
}
