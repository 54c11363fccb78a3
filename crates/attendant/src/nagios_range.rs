//! Nagios threshold ranges, as the Monitoring Plugins development guidelines define them
//! (the `warning`/`critical` of `check_*` plugins and of `[[usage]]`): `10` alerts outside
//! 0..10, `10:` below 10, `~:10` above 10, `10:20` outside 10..20, `@10:20` inside 10..20
//! (ends included).
//!
//! Rules: a leaf (imports nothing of the crate), so checks (perfdata thresholds) and usage
//! share one parser; a decimal comma reads as a point (plugins under European locales
//! print `0,5:1,5`); a range that does not parse, or whose start is above its end, is an
//! error naming the text.

use std::fmt;
use std::str::FromStr;

/// A parsed range; [`Range::alerts`] says whether a value is outside what it allows.
#[derive(Debug, Clone, PartialEq)]
pub struct Range {
    /// Lower end; `None` is negative infinity (`~`).
    start: Option<f64>,
    /// Upper end; `None` is positive infinity (nothing after `:`).
    end: Option<f64>,
    /// `@`: alert inside the range instead of outside.
    inside: bool,
    text: String,
}

/// Why a text is not a Nagios range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a Nagios range ({why}); write e.g. \"10\", \"10:\", \"~:10\", \"10:20\" or \"@10:20\"")]
pub struct RangeError {
    pub text: String,
    pub why: &'static str,
}

impl Range {
    /// Lower end; `None` is negative infinity (`~`).
    pub fn start(&self) -> Option<f64> {
        self.start
    }

    /// Upper end; `None` is positive infinity.
    pub fn end(&self) -> Option<f64> {
        self.end
    }

    /// `@`: the alert is raised inside the range.
    pub fn inside(&self) -> bool {
        self.inside
    }

    /// Whether `value` raises the alert this range stands for.
    pub fn alerts(&self, value: f64) -> bool {
        let within = self.start.is_none_or(|s| value >= s) && self.end.is_none_or(|e| value <= e);
        within == self.inside
    }
}

impl FromStr for Range {
    type Err = RangeError;

    fn from_str(text: &str) -> Result<Range, RangeError> {
        let err = |why| RangeError { text: text.to_string(), why };
        let t = text.trim();
        let (inside, t) = match t.strip_prefix('@') {
            Some(rest) => (true, rest),
            None => (false, t),
        };
        if t.is_empty() {
            return Err(err("empty"));
        }
        let number = |s: &str| {
            s.trim().replace(',', ".").parse::<f64>().ok().filter(|v| v.is_finite()).ok_or_else(|| err("not a number"))
        };
        let (start, end) = match t.split_once(':') {
            None => (Some(0.0), Some(number(t)?)),
            Some((s, e)) => {
                let start = match s.trim() {
                    "~" => None,
                    "" => Some(0.0),
                    s => Some(number(s)?),
                };
                let end = if e.trim().is_empty() { None } else { Some(number(e)?) };
                (start, end)
            }
        };
        if let (Some(s), Some(e)) = (start, end) {
            if s > e {
                return Err(err("its start is above its end"));
            }
        }
        Ok(Range { start, end, inside, text: text.trim().to_string() })
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Range {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_guidelines_table() {
        // (range, values that alert, values that do not)
        for (range, alert, calm) in [
            ("10", &[-1.0, 10.5, 11.0][..], &[0.0, 5.0, 10.0][..]),
            ("10:", &[9.9, -3.0], &[10.0, 1e9]),
            ("~:10", &[10.1, 1e9], &[-1e9, 10.0]),
            ("10:20", &[9.0, 21.0], &[10.0, 15.0, 20.0]),
            ("@10:20", &[10.0, 15.0, 20.0], &[9.0, 21.0]),
            ("@5", &[0.0, 5.0], &[-0.1, 5.1]),
            ("0.5:1.5", &[0.4, 1.6], &[1.0]),
        ] {
            for v in alert {
                assert!(r(range).alerts(*v), "{range} should alert at {v}");
            }
            for v in calm {
                assert!(!r(range).alerts(*v), "{range} should not alert at {v}");
            }
        }
        assert_eq!(r(" @10:20 ").to_string(), "@10:20");
    }

    #[test]
    fn bad_ranges_are_named() {
        for (text, why) in [
            ("", "empty"),
            ("ten", "not a number"),
            ("20:10", "start is above"),
            ("1:x", "not a number"),
            ("@", "empty"),
            ("inf", "not a number"),
        ] {
            let e = text.parse::<Range>().expect_err(text);
            assert!(e.why.starts_with(why) || e.why.contains(why), "{text}: {e}");
            assert!(e.to_string().contains(&format!("{text:?}")), "{e}");
        }
    }
}
