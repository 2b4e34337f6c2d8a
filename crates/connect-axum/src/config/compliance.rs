//! The compliance section: how long an uninstalled tenant's data is kept, personal data reporting,
//! and the realms tenants' data may move to.

use std::num::NonZeroU64;
use std::time::Duration;

use url::Url;

use super::values::{ConfigError, days, parse, path_var, url_var};

/// Retention, personal data reporting and data residency.
#[derive(Debug, Clone)]
pub struct ComplianceConfig {
    /// UNINSTALL_RETENTION_DAYS: how long an uninstalled tenant's data is kept before it is
    /// purged (default 30; fractions allowed).
    pub uninstall_retention: Duration,
    /// PURGE_INTERVAL_SECS: how often uninstalled tenants past retention are looked for (default 3600).
    pub purge_interval: Duration,
    /// PERSONAL_DATA_REPORT_URL: Atlassian's personal data reporting API (default
    /// `https://api.atlassian.com/app/report-accounts/`).
    pub personal_data_report_url: Url,
    /// PERSONAL_DATA_INTERVAL_DAYS: how often each tenant's account ids are reported (default 7;
    /// fractions allowed).
    pub personal_data_interval: Duration,
    /// DATA_RESIDENCY_PATH: where the realm migration hooks are served and declared
    /// (`lifecycle."dare-migration"`, default `/migration`).
    pub data_residency_path: String,
    /// DATA_RESIDENCY_REALMS: the realms tenants' data may move to (default
    /// `US,EU,DE,AU,CA,IN,JP,KR,SG,UK,CH`).
    pub data_residency_realms: Vec<String>,
}

impl ComplianceConfig {
    /// Reads the section from `var`.
    pub(super) fn from_vars(
        var: &impl Fn(&'static str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let uninstall_retention = days(var, "UNINSTALL_RETENTION_DAYS", "30", 36_500.0)?;
        let personal_data_report_url = url_var(
            var,
            "PERSONAL_DATA_REPORT_URL",
            "https://api.atlassian.com/app/report-accounts/",
        )?;
        let personal_data_interval = days(var, "PERSONAL_DATA_INTERVAL_DAYS", "7", 365.0)?;
        let data_residency_path = path_var(var, "DATA_RESIDENCY_PATH", "/migration")?;
        let data_residency_realms: Vec<String> = var("DATA_RESIDENCY_REALMS")
            .unwrap_or_else(|| "US,EU,DE,AU,CA,IN,JP,KR,SG,UK,CH".to_owned())
            .split(',')
            .map(|r| r.trim().to_ascii_uppercase())
            .filter(|r| !r.is_empty())
            .collect();
        let purge_interval = parse::<NonZeroU64>(var, "PURGE_INTERVAL_SECS", "3600")?;
        Ok(Self {
            uninstall_retention,
            purge_interval: Duration::from_secs(purge_interval.get()),
            personal_data_report_url,
            personal_data_interval,
            data_residency_path,
            data_residency_realms,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::tests::{config, each_is_refused_by_name};

    #[test]
    fn retention_is_in_days_and_may_be_a_fraction() {
        let retention =
            |vars: &[(&str, &str)]| config(vars).unwrap().compliance.uninstall_retention;
        assert_eq!(retention(&[]), Duration::from_secs(30 * 86_400));
        assert_eq!(
            retention(&[("UNINSTALL_RETENTION_DAYS", "0.5")]),
            Duration::from_secs(43_200)
        );
        assert_eq!(
            retention(&[("UNINSTALL_RETENTION_DAYS", "0")]),
            Duration::ZERO
        );
    }

    #[test]
    fn bad_compliance_values_name_the_variable() {
        each_is_refused_by_name(&[
            ("UNINSTALL_RETENTION_DAYS", "-1"),
            ("UNINSTALL_RETENTION_DAYS", "NaN"),
            ("PURGE_INTERVAL_SECS", "0"),
        ]);
    }
}
