//! The attendant's clock: the time it reports, and the offset a clock order moves when
//! the clock is virtual (`clock_keeper` decides whether an order is applied).
//!
//! `clock = "virtual"` keeps an offset inside the attendant instead of touching the OS
//! clock, so tests and demos can run drifted servers without ever changing the machine's
//! real time. `clock = "system"` reports the OS clock as it is.

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Utc};

/// Which clock the attendant reports and corrects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClockMode {
    System,
    Virtual,
}

/// The attendant's notion of now.
#[derive(Debug)]
pub struct Clock {
    mode: ClockMode,
    /// Virtual mode only: the error against real time, in microseconds.
    offset_us: AtomicI64,
}

impl Clock {
    pub fn system() -> Clock {
        Clock { mode: ClockMode::System, offset_us: AtomicI64::new(0) }
    }

    /// A virtual clock running `offset_us` ahead of (or, negative, behind) real time.
    pub fn virtual_with_offset(offset_us: i64) -> Clock {
        Clock { mode: ClockMode::Virtual, offset_us: AtomicI64::new(offset_us) }
    }

    pub fn mode(&self) -> ClockMode {
        self.mode
    }

    /// The virtual offset in microseconds (always 0 for the system clock).
    pub fn offset_us(&self) -> i64 {
        self.offset_us.load(Ordering::Relaxed)
    }

    /// Moves a virtual clock by `us` microseconds (a clock order applied).
    pub fn adjust(&self, us: i64) {
        if self.mode == ClockMode::Virtual {
            self.offset_us.fetch_add(us, Ordering::Relaxed);
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        let now = Utc::now();
        match self.mode {
            ClockMode::System => now,
            ClockMode::Virtual => now + chrono::Duration::microseconds(self.offset_us()),
        }
    }
}

/// The server's time zone: its current UTC offset in seconds and IANA name when known.
pub fn zone() -> (i32, Option<String>) {
    let offset = chrono::Local::now().offset().local_minus_utc();
    (offset, iana_time_zone::get_timezone().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_clock_runs_at_its_offset() {
        let c = Clock::virtual_with_offset(45_000_000);
        let d = c.now() - Utc::now();
        assert!((d.num_milliseconds() - 45_000).abs() < 1_000, "{d}");
        let c = Clock::virtual_with_offset(-3_000_000);
        let d = c.now() - Utc::now();
        assert!((d.num_milliseconds() + 3_000).abs() < 1_000, "{d}");
    }

    #[test]
    fn system_clock_has_no_offset() {
        let d = Clock::system().now() - Utc::now();
        assert!(d.num_milliseconds().abs() < 1_000);
    }
}
