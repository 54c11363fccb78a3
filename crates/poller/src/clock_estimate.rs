//! NTP-style clock offset from one poll's four timestamps (SPEC section 4).
//!
//! T1 poller sends, T2 attendant receives, T3 attendant replies, T4 poller receives.
//! offset θ = ((T2−T1)+(T3−T4))/2 and delay δ = (T4−T1)−(T3−T2): symmetric network delay
//! cancels out, and any asymmetry can bias θ by at most δ/2. All four are UTC instants, so
//! the server's time zone never looks like skew.

use chrono::{DateTime, Utc};

/// One poll's estimate, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClockEstimate {
    /// How far the attendant's clock is ahead of the poller's (negative: behind).
    pub offset_ms: f64,
    /// Round-trip network delay, the attendant's own processing time excluded.
    pub delay_ms: f64,
}

impl ClockEstimate {
    pub fn from_stamps(t1: DateTime<Utc>, t2: DateTime<Utc>, t3: DateTime<Utc>, t4: DateTime<Utc>) -> ClockEstimate {
        let ms = |d: chrono::Duration| d.num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0;
        // The stamps have microseconds; rounding to them keeps binary noise out of the API.
        let us = |v: f64| (v * 1000.0).round() / 1000.0;
        ClockEstimate {
            offset_ms: us((ms(t2 - t1) + ms(t3 - t4)) / 2.0),
            delay_ms: us((ms(t4 - t1) - ms(t3 - t2)).max(0.0)),
        }
    }

    /// The part of the offset that network asymmetry cannot explain: |θ| − δ/2.
    pub fn certain_skew_ms(&self) -> f64 {
        (self.offset_ms.abs() - self.delay_ms / 2.0).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    #[test]
    fn symmetric_delay_cancels() {
        let t1 = Utc::now();
        // Attendant 45 s ahead; 10 ms each way; 2 ms processing.
        let t2 = t1 + Duration::milliseconds(10) + Duration::seconds(45);
        let t3 = t2 + Duration::milliseconds(2);
        let t4 = t1 + Duration::milliseconds(22);
        let e = ClockEstimate::from_stamps(t1, t2, t3, t4);
        assert!((e.offset_ms - 45_000.0).abs() < 1e-6, "{e:?}");
        assert!((e.delay_ms - 20.0).abs() < 1e-6, "{e:?}");
    }

    #[test]
    fn asymmetric_delay_stays_within_half_the_delay() {
        let t1 = Utc::now();
        // True offset 0; 100 ms out, 0 ms back.
        let t2 = t1 + Duration::milliseconds(100);
        let t3 = t2;
        let t4 = t3;
        let e = ClockEstimate::from_stamps(t1, t2, t3, t4);
        assert!(e.offset_ms.abs() <= e.delay_ms / 2.0 + 1e-9, "{e:?}");
        assert_eq!(e.certain_skew_ms(), 0.0);
    }
}
