//! The Alertmanager channel: Prometheus Alertmanager's v2 API (`POST /api/v2/alerts`).
//!
//! Alerts and their labels:
//! - `RollcallServer` with `server`, `level`, `state`: fires while a server is not fine
//!   (not at the first level, or not ok); a change of level or state resolves the old label
//!   set (`endsAt` now) and fires the new one; a recovery resolves it.
//! - `RollcallServerFlapping` with `server`: fires while a server is flapping.
//! - `RollcallClock` with `server`: fires when a clock order was refused, failed or did not
//!   take; resolved when one is applied or verified.
//!
//! Rules it keeps: Alertmanager forgets an alert not re-sent within its `resolve_timeout`,
//! so every firing alert is re-sent every `resend` with `endsAt` four `resend`s ahead (like
//! Prometheus); the firing set starts from what the store says was told, so a restart
//! keeps alerts alive without telling anything new. Re-sending the same labels is not a
//! new notification: Alertmanager groups and de-duplicates them.

use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::NotifyConfig;
use crate::notify::{Condition, DeliveryError, Memory, Notice, NoticeKind};

/// One alert as the v2 API takes it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Alert {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    #[serde(rename = "startsAt")]
    pub starts_at: DateTime<Utc>,
    #[serde(rename = "endsAt")]
    pub ends_at: DateTime<Utc>,
}

/// An Alertmanager receiver and the alerts this poller has firing there.
pub struct Alertmanager {
    client: reqwest::Client,
    url: String,
    token: Option<rollcall_config::Secret>,
    resend: std::time::Duration,
    first_level: String,
    /// Firing alerts by their label set.
    firing: Mutex<HashMap<BTreeMap<String, String>, Alert>>,
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// The label sets a told condition keeps firing.
fn condition_alerts(server: &str, c: &Condition, first_level: &str) -> Vec<BTreeMap<String, String>> {
    if c.flapping {
        vec![labels(&[("alertname", "RollcallServerFlapping"), ("server", server)])]
    } else if c.is_fine(first_level) {
        Vec::new()
    } else {
        vec![labels(&[
            ("alertname", "RollcallServer"),
            ("server", server),
            ("level", &c.level),
            ("state", c.state.as_str()),
        ])]
    }
}

impl Alertmanager {
    /// Starts from the conditions told before (persisted), so they keep firing.
    pub fn new(config: &NotifyConfig, memory: &HashMap<String, Memory>, first_level: &str) -> Alertmanager {
        let now = Utc::now();
        let mut firing = HashMap::new();
        for (server, m) in memory {
            for l in condition_alerts(server, &m.told, first_level) {
                let summary = format!("{server} is {} at level {}", m.told.state.as_str(), m.told.level);
                firing.insert(l.clone(), alert(l, &summary, "", now, now));
            }
        }
        Alertmanager {
            client: super::webhook::client(config),
            url: format!("{}/api/v2/alerts", config.url),
            token: config.token.clone(),
            resend: config.resend,
            first_level: first_level.to_string(),
            firing: Mutex::new(firing),
        }
    }

    fn ends_at(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + chrono::TimeDelta::from_std(self.resend * 4).unwrap_or(chrono::TimeDelta::minutes(5))
    }

    /// The alerts one notice resolves and fires, applied to the firing set.
    pub fn alerts_for(&self, n: &Notice) -> Vec<Alert> {
        let now = Utc::now();
        let mut firing = self.firing.lock();
        let mut out = Vec::new();
        let description = super::describe(n);
        let (old, new) = match n.kind {
            NoticeKind::Clock => {
                let l = labels(&[("alertname", "RollcallClock"), ("server", &n.server)]);
                let bad = n.clock.as_ref().is_some_and(|c| !matches!(c.outcome.as_str(), "applied" | "verified"));
                if bad {
                    (Vec::new(), vec![l])
                } else {
                    (vec![l], Vec::new())
                }
            }
            _ => (
                condition_alerts(&n.server, &n.previous, &self.first_level),
                condition_alerts(&n.server, &n.condition(), &self.first_level),
            ),
        };
        for l in old.into_iter().filter(|l| !new.contains(l)) {
            let mut a = firing.remove(&l).unwrap_or_else(|| alert(l.clone(), &n.summary, &description, n.at, now));
            a.ends_at = now;
            a.annotations.insert("resolution".into(), n.summary.clone());
            out.push(a);
        }
        for l in new {
            let starts = firing.get(&l).map_or(n.at, |a| a.starts_at);
            let a = alert(l.clone(), &n.summary, &description, starts, self.ends_at(now));
            firing.insert(l, a.clone());
            out.push(a);
        }
        out
    }

    pub async fn deliver(&self, n: &Notice) -> Result<(), DeliveryError> {
        let alerts = self.alerts_for(n);
        if alerts.is_empty() {
            return Ok(());
        }
        super::webhook::post_json(&self.client, &self.url, self.token.as_ref(), &alerts, None).await
    }

    /// Re-sends every firing alert with a fresh `endsAt`.
    pub async fn refresh(&self) -> Result<(), DeliveryError> {
        let now = Utc::now();
        let alerts: Vec<Alert> = {
            let mut firing = self.firing.lock();
            firing
                .values_mut()
                .map(|a| {
                    a.ends_at = self.ends_at(now);
                    a.clone()
                })
                .collect()
        };
        if alerts.is_empty() {
            return Ok(());
        }
        super::webhook::post_json(&self.client, &self.url, self.token.as_ref(), &alerts, None).await
    }
}

fn alert(
    labels: BTreeMap<String, String>,
    summary: &str,
    description: &str,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
) -> Alert {
    let mut annotations = BTreeMap::new();
    annotations.insert("summary".to_string(), summary.to_string());
    if !description.is_empty() {
        annotations.insert("description".to_string(), description.to_string());
    }
    Alert { labels, annotations, starts_at, ends_at }
}
