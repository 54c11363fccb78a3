//! The [`Attendant`]: the running config (swapped on reload), the clock and its keeper,
//! the probe board and the host cache, and the one query it answers.
//!
//! Rules: a query in progress keeps the config it started with; a reload is announced on
//! a `tokio::sync::watch` channel, which the probes follow ([`Attendant::probe_context`]).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use rollcall_protocol::Compilation;
use tokio::sync::watch;

use crate::checks;
use crate::clock::{self, Clock};
use crate::clock_keeper::{ClockKeeper, OsClock, SystemClock};
use crate::compile::{self, Parts};
use crate::config::AttendantConfig;
use crate::host::{self, HostCache};
use crate::probe_board::ProbeBoard;
use crate::probes::ProbeContext;
use crate::usage::{UsageBoard, UsageContext};

/// Everything the attendant needs to answer a query. The config can be swapped on SIGHUP;
/// a query in progress keeps the config it started with.
pub struct Attendant {
    config: watch::Sender<Arc<AttendantConfig>>,
    pub clock: Arc<Clock>,
    /// Latest results of the background probes.
    pub probes: ProbeBoard,
    /// Latest figures of the `[[usage]]` reports.
    pub usage: UsageBoard,
    /// Checks and applies the poller's clock orders.
    pub clock_keeper: ClockKeeper,
    host: HostCache,
    hostname: String,
    /// Read once at start from where the machine sets it (`clock::ZoneSource`).
    zone: clock::Zone,
}

impl Attendant {
    /// An attendant for `config`, reporting `host`'s samples. Starts nothing: see
    /// [`crate::start`] for the probes and the host sampler.
    pub fn new(config: AttendantConfig, host: HostCache) -> Attendant {
        let (clock, system): (Clock, Option<Box<dyn SystemClock>>) = match config.clock {
            clock::ClockMode::Virtual => (Clock::virtual_with_offset(config.clock_offset_us), None),
            clock::ClockMode::System => {
                let os = OsClock;
                if config.poller_public_key.is_some() && !os.may_set_time() {
                    tracing::warn!(server = %config.name, "clock = \"system\" but the attendant lacks CAP_SYS_TIME: clock orders will be refused");
                }
                (Clock::system(), Some(Box::new(os)))
            }
        };
        let clock_keeper = ClockKeeper::new(public_key(&config), config.max_clock_step.get(), system);
        Attendant {
            config: watch::Sender::new(Arc::new(config)),
            clock: Arc::new(clock),
            probes: ProbeBoard::default(),
            usage: UsageBoard::default(),
            clock_keeper,
            host,
            hostname: host::hostname(),
            zone: clock::ZoneSource::system().resolve(),
        }
    }

    /// The running config.
    pub fn config(&self) -> Arc<AttendantConfig> {
        self.config.borrow().clone()
    }

    /// Installs a new config; the next compilation uses it and the probes are told.
    pub fn replace_config(&self, new: AttendantConfig) {
        self.clock_keeper.reconfigure(public_key(&new), new.max_clock_step.get());
        self.host.set_filter(new.disks.clone());
        self.config.send_replace(Arc::new(new));
    }

    /// What the probes may use of the attendant: its name, clock, board, and a watch on
    /// the running config.
    pub fn probe_context(&self) -> ProbeContext {
        ProbeContext {
            name: self.config().name.clone(),
            clock: self.clock.clone(),
            board: self.probes.clone(),
            config: self.config.subscribe(),
        }
    }

    /// What the usage reports may use of the attendant, as [`Attendant::probe_context`].
    pub fn usage_context(&self) -> UsageContext {
        UsageContext {
            name: self.config().name.clone(),
            clock: self.clock.clone(),
            board: self.usage.clone(),
            config: self.config.subscribe(),
        }
    }

    /// The whole compilation. `replied_at` is stamped here; the caller serializes at once.
    pub async fn compile(&self, received_at: DateTime<Utc>) -> Compilation {
        let config = self.config();
        let services = checks::run_all(&config.services, &self.clock).await;
        let now = self.clock.now();
        let (usage, usage_deficiencies) = self.usage.snapshot();
        let parts = Parts {
            name: config.name.clone(),
            hostname: self.hostname.clone(),
            zone: self.zone.name.clone(),
            utc_offset_seconds: self.zone.offset_seconds(now),
            received_at,
            now,
            services,
            probes: self.probes.snapshot(),
            host: self.host.latest(),
            usage,
            usage_deficiencies,
        };
        compile::compilation(parts, &config.host)
    }
}

/// The poller's key; the config was validated, so a bad line cannot reach here.
fn public_key(config: &AttendantConfig) -> Option<ed25519_dalek::VerifyingKey> {
    let line = config.poller_public_key.as_deref()?;
    rollcall_protocol::clock_order::parse_public_key(line).ok()
}
