//! The app's descriptor (`atlassian-connect.json`), rendered for the configured base URL.

use url::Url;

/// The app's `atlassian-connect.json`, with `baseUrl` filled in.
#[derive(Debug, Clone)]
pub struct Descriptor {
    json: serde_json::Value,
    key: String,
}

/// Why an app's descriptor cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum DescriptorError {
    /// The descriptor text does not parse as JSON.
    #[error("the descriptor is not JSON: {0}")]
    NotJson(#[from] serde_json::Error),
    /// The descriptor is not an object with a string `key`, the app key.
    #[error("the descriptor has no string \"key\"")]
    NoKey,
    /// The app was built without [`Builder::descriptor`](crate::server::Builder::descriptor).
    #[error("the app gave no descriptor (Builder::descriptor)")]
    Missing,
}

impl Descriptor {
    /// Renders the descriptor `json` (an app's `atlassian-connect.json`) for an app served at
    /// `base_url`.
    ///
    /// # Errors
    /// When `json` is not a JSON object with a string `key`.
    pub fn parse(json: &str, base_url: &Url) -> Result<Self, DescriptorError> {
        let mut json: serde_json::Value = serde_json::from_str(json)?;
        let key = json
            .get("key")
            .and_then(|k| k.as_str())
            .ok_or(DescriptorError::NoKey)?
            .to_owned();
        json["baseUrl"] = base_url.as_str().trim_end_matches('/').into();
        Ok(Self { json, key })
    }

    /// The descriptor `json` as this configuration serves it: `baseUrl` = `BASE_URL`, and the realm
    /// migration hooks at `DATA_RESIDENCY_PATH`.
    ///
    /// # Errors
    /// When `json` is not a JSON object with a string `key`.
    pub fn from_json(json: &str, config: &crate::config::Config) -> Result<Self, DescriptorError> {
        Ok(Self::parse(json, &config.server.base_url)?
            .with_migration_path(&config.compliance.data_residency_path))
    }

    /// Declares the realm migration hooks at `path` (`lifecycle."dare-migration"`) and how long a
    /// migration may take.
    fn with_migration_path(mut self, path: &str) -> Self {
        if !self.json["lifecycle"].is_object() {
            self.json["lifecycle"] = serde_json::json!({});
        }
        self.json["lifecycle"]["dare-migration"] = path.into();
        self.json["dataResidency"] = serde_json::json!({ "maxMigrationDurationHours": 2 });
        self
    }

    /// The app key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The rendered JSON.
    pub fn json(&self) -> &serde_json::Value {
        &self.json
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_apps_descriptor_is_rendered_for_the_base_url_or_refused_with_a_reason() {
        let base = Url::parse("https://app.example.com").unwrap();
        let d = Descriptor::parse(r#"{"key": "bookmarks", "lifecycle": "odd"}"#, &base).unwrap();
        assert_eq!(
            (d.key(), &d.json()["baseUrl"]),
            ("bookmarks", &"https://app.example.com".into())
        );
        let d = d.with_migration_path("/migration");
        assert_eq!(d.json()["lifecycle"]["dare-migration"], "/migration");
        assert!(matches!(
            Descriptor::parse("{", &base),
            Err(DescriptorError::NotJson(_))
        ));
        for no_key in [r#"{"name": "x"}"#, r#"{"key": 1}"#, "[]"] {
            assert!(
                matches!(
                    Descriptor::parse(no_key, &base),
                    Err(DescriptorError::NoKey)
                ),
                "{no_key}"
            );
        }
    }
}
