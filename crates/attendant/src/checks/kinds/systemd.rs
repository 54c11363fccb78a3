//! The `systemd` check: the state of one systemd unit, asked of systemd itself over
//! the system D-Bus (`org.freedesktop.systemd1`).
//!
//! The unit is loaded with the manager's `LoadUnit` (so units that are not currently
//! loaded are answered too) and its `LoadState`, `ActiveState` and `SubState` are read.
//! One D-Bus connection is shared by every systemd check of the attendant; where the
//! system bus cannot be reached (no systemd, as in most containers) the check says so
//! with status `unknown` and tries to connect again on its next run.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use rollcall_protocol::Status;
use serde::Deserialize;
use tokio::sync::Mutex;
use zbus::proxy::{Builder, CacheProperties};
use zbus::zvariant::OwnedObjectPath;
use zbus::{Connection, Proxy};

use crate::checks::{DEFAULT_TIMEOUT, Kind, Outcome, ServiceCheck};
use crate::config::fields::TableCx;

const SYSTEMD: &str = "org.freedesktop.systemd1";
const MANAGER_PATH: &str = "/org/freedesktop/systemd1";
const MANAGER_INTERFACE: &str = "org.freedesktop.systemd1.Manager";
const UNIT_INTERFACE: &str = "org.freedesktop.systemd1.Unit";

/// Unit type suffixes systemd knows; a name without one is taken as a `.service`,
/// as `systemctl` does (`dovecot` means `dovecot.service`).
const UNIT_SUFFIXES: &[&str] = &[
    ".service",
    ".socket",
    ".device",
    ".mount",
    ".automount",
    ".swap",
    ".target",
    ".path",
    ".timer",
    ".slice",
    ".scope",
];

/// The shared connection to the system bus; `None` until a connection succeeds, and
/// again after it is found closed. The lock is held while connecting, so checks that
/// run at once open one connection between them.
static BUS: Mutex<Option<Connection>> = Mutex::const_new(None);

/// What systemd says of one unit.
struct UnitState {
    load: String,
    active: String,
    sub: String,
}

/// `check = "systemd"`: `unit = "NAME.service"`.
pub const KIND: Kind = Kind { name: "systemd", keys: &["unit"], default_timeout: DEFAULT_TIMEOUT, parse };

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    unit: Option<String>,
}

#[derive(Debug)]
struct Systemd {
    unit: String,
}

fn parse(table: &toml::Table, cx: &mut TableCx<'_, '_>) -> Option<Arc<dyn ServiceCheck>> {
    let s: Settings = cx.settings(table)?;
    match s.unit {
        Some(unit) if !unit.is_empty() => Some(Arc::new(Systemd { unit })),
        _ => {
            cx.push("unit", "missing: check = \"systemd\" needs unit = \"NAME.service\"");
            None
        }
    }
}

impl ServiceCheck for Systemd {
    fn kind(&self) -> &'static str {
        KIND.name
    }
    fn run(&self, _timeout: Duration) -> BoxFuture<'_, Outcome> {
        Box::pin(check(&self.unit))
    }
}

/// Checks the systemd unit `unit` (a name without a type suffix means `.service`):
/// `active` is ok, a unit changing state is a warning, `failed`, `inactive` or a unit
/// systemd does not know is critical, no reachable systemd is unknown.
pub async fn check(unit: &str) -> Outcome {
    let unit = full_unit_name(unit);
    let conn = match bus().await {
        Ok(conn) => conn,
        Err(e) => {
            return Outcome::new(
                Status::Unknown,
                format!(
                    "cannot ask systemd about {unit}: systemd is not running here or the \
                     system D-Bus is not reachable ({e})"
                ),
            );
        }
    };
    match query(&conn, &unit).await {
        Ok(state) => outcome_for(&unit, &state.load, &state.active, &state.sub),
        Err(e) => {
            if matches!(e, zbus::Error::InputOutput(_)) || conn.is_closed() {
                forget(&conn).await;
            }
            outcome_for_error(&unit, &e)
        }
    }
}

/// The unit name systemd is asked about: `unit`, with `.service` added where it has
/// no unit type suffix.
fn full_unit_name(unit: &str) -> String {
    let unit = unit.trim();
    if UNIT_SUFFIXES.iter().any(|s| unit.ends_with(s)) {
        unit.to_string()
    } else {
        format!("{unit}.service")
    }
}

/// The shared system bus connection, connecting (again) where there is none yet or the
/// last one was closed.
async fn bus() -> zbus::Result<Connection> {
    let mut shared = BUS.lock().await;
    if let Some(conn) = shared.as_ref() {
        if !conn.is_closed() {
            return Ok(conn.clone());
        }
    }
    *shared = None;
    let conn = Connection::system().await?;
    *shared = Some(conn.clone());
    Ok(conn)
}

/// Drops the shared connection if it is still `conn`, so the next check reconnects.
async fn forget(conn: &Connection) {
    let mut shared = BUS.lock().await;
    if shared.as_ref().is_some_and(|c| c.unique_name() == conn.unique_name()) {
        *shared = None;
    }
}

/// Loads `unit` through the manager and reads its three states.
async fn query(conn: &Connection, unit: &str) -> zbus::Result<UnitState> {
    let reply = conn.call_method(Some(SYSTEMD), MANAGER_PATH, Some(MANAGER_INTERFACE), "LoadUnit", &(unit,)).await?;
    let path: OwnedObjectPath = reply.body().deserialize()?;
    // No property cache: a cache would subscribe to the unit's PropertiesChanged
    // signals, for a proxy that reads three properties once.
    let proxy: Proxy<'_> = Builder::new(conn)
        .destination(SYSTEMD)?
        .path(path)?
        .interface(UNIT_INTERFACE)?
        .cache_properties(CacheProperties::No)
        .build()
        .await?;
    let (load, active, sub) = futures::try_join!(
        proxy.get_property::<String>("LoadState"),
        proxy.get_property::<String>("ActiveState"),
        proxy.get_property::<String>("SubState"),
    )?;
    Ok(UnitState { load, active, sub })
}

/// The outcome for the states systemd reported for `unit`.
fn outcome_for(unit: &str, load_state: &str, active_state: &str, sub_state: &str) -> Outcome {
    let (status, message) = if load_state == "not-found" {
        (Status::Critical, format!("unit {unit} not found"))
    } else {
        let status = match active_state {
            "active" => Status::Ok,
            "reloading" | "activating" | "deactivating" => Status::Warning,
            "failed" | "inactive" => Status::Critical,
            _ => Status::Unknown,
        };
        let mut message = format!("{unit} {active_state} ({sub_state})");
        if load_state != "loaded" {
            message.push_str(&format!(", load state {load_state}"));
        }
        (status, message)
    };
    Outcome::new(status, message)
        .with("active_state", active_state)
        .with("sub_state", sub_state)
        .with("load_state", load_state)
}

/// The outcome where asking systemd about `unit` failed with `error`.
fn outcome_for_error(unit: &str, error: &zbus::Error) -> Outcome {
    if let zbus::Error::MethodError(name, detail, _) = error {
        let detail = detail.as_deref().unwrap_or(name.as_str());
        match name.as_str() {
            // Older systemd answers LoadUnit of an unknown unit with this error rather
            // than a unit whose LoadState is `not-found`.
            "org.freedesktop.systemd1.NoSuchUnit" => {
                return Outcome::new(Status::Critical, format!("unit {unit} not found"))
                    .with("load_state", "not-found");
            }
            "org.freedesktop.DBus.Error.ServiceUnknown" | "org.freedesktop.DBus.Error.NameHasNoOwner" => {
                return Outcome::new(
                    Status::Unknown,
                    format!(
                        "cannot ask systemd about {unit}: systemd is not running here \
                         (nothing answers as {SYSTEMD} on the system D-Bus: {detail})"
                    ),
                );
            }
            _ => {}
        }
    }
    Outcome::new(Status::Unknown, format!("cannot ask systemd about {unit}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_is_ok() {
        let o = outcome_for("dovecot.service", "loaded", "active", "running");
        assert_eq!(o.status, Status::Ok);
        assert_eq!(o.message, "dovecot.service active (running)");
        assert_eq!(o.details["active_state"], "active");
        assert_eq!(o.details["sub_state"], "running");
        assert_eq!(o.details["load_state"], "loaded");
    }

    #[test]
    fn changing_state_is_warning() {
        for state in ["reloading", "activating", "deactivating"] {
            let o = outcome_for("x.service", "loaded", state, "start");
            assert_eq!(o.status, Status::Warning, "{state}");
            assert_eq!(o.message, format!("x.service {state} (start)"));
        }
    }

    #[test]
    fn failed_and_inactive_are_critical() {
        let o = outcome_for("x.service", "loaded", "failed", "failed");
        assert_eq!(o.status, Status::Critical);
        assert_eq!(o.message, "x.service failed (failed)");
        let o = outcome_for("x.service", "loaded", "inactive", "dead");
        assert_eq!(o.status, Status::Critical);
        assert_eq!(o.message, "x.service inactive (dead)");
    }

    #[test]
    fn not_found_is_critical_whatever_the_active_state() {
        let o = outcome_for("nope.service", "not-found", "inactive", "dead");
        assert_eq!(o.status, Status::Critical);
        assert_eq!(o.message, "unit nope.service not found");
        assert_eq!(o.details["load_state"], "not-found");
        assert_eq!(o.details["active_state"], "inactive");
        assert_eq!(o.details["sub_state"], "dead");
    }

    #[test]
    fn other_active_states_are_unknown() {
        let o = outcome_for("x.service", "loaded", "maintenance", "whatever");
        assert_eq!(o.status, Status::Unknown);
        assert_eq!(o.message, "x.service maintenance (whatever)");
    }

    #[test]
    fn unusual_load_state_is_in_the_message() {
        let o = outcome_for("x.service", "masked", "inactive", "dead");
        assert_eq!(o.status, Status::Critical);
        assert_eq!(o.message, "x.service inactive (dead), load state masked");
    }

    #[test]
    fn unit_names_without_suffix_are_services() {
        assert_eq!(full_unit_name("dovecot"), "dovecot.service");
        assert_eq!(full_unit_name("getty@tty1"), "getty@tty1.service");
        assert_eq!(full_unit_name("dovecot.service"), "dovecot.service");
        assert_eq!(full_unit_name("fstrim.timer"), "fstrim.timer");
        assert_eq!(full_unit_name("home.mount"), "home.mount");
    }

    #[test]
    fn generic_errors_are_unknown() {
        let o = outcome_for_error("x.service", &zbus::Error::InvalidReply);
        assert_eq!(o.status, Status::Unknown);
        assert!(o.message.starts_with("cannot ask systemd about x.service: "));
    }

    #[tokio::test]
    async fn checks_dbus_service_without_panicking() {
        let no_system_bus = !std::path::Path::new("/run/dbus/system_bus_socket").exists()
            && std::env::var_os("DBUS_SYSTEM_BUS_ADDRESS").is_none();
        let o = check("dbus.service").await;
        if no_system_bus {
            assert_eq!(o.status, Status::Unknown, "{}", o.message);
            assert!(o.message.contains("systemd"), "{}", o.message);
            assert!(o.message.contains("D-Bus"), "{}", o.message);
        }
        // Once more: the second call reuses (or retries) the shared connection.
        let again = check("dbus.service").await;
        if no_system_bus {
            assert_eq!(again.status, Status::Unknown, "{}", again.message);
        }
    }
}
