//! Acknowledgements (SPEC 13): an operator owns a server's current problem, and
//! notifications about it stop until it ends.
//!
//! Rules it keeps:
//! - Only a problem can be acknowledged: a server with deficiencies (an unreachable one
//!   has its `poll:*` deficiency). A fine or never-polled server answers [`AckError`].
//! - An acknowledgement ends by itself at the first poll that finds the server recovered
//!   (no deficiency left) or worse: a deficiency source it did not have when acknowledged,
//!   or a level above the one it was at. Fewer sources at the same level are the same
//!   problem getting better: the acknowledgement stays.
//! - A new acknowledgement replaces the previous one (the newest comment counts).

use chrono::{DateTime, Utc};
use rollcall_protocol::Deficiency;

use crate::levels::Rules;
use crate::model::Ack;

/// Why an acknowledgement cannot be given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    #[error("{server} has no problem to acknowledge (state {state}, no deficiencies)")]
    NothingToAcknowledge { server: String, state: &'static str },
}

/// The acknowledgement of a server's problem as it stands: its level and deficiencies.
pub fn acknowledge(
    server: &str,
    state: &'static str,
    level: &str,
    deficiencies: &[Deficiency],
    by: &str,
    at: DateTime<Utc>,
    comment: &str,
) -> Result<Ack, AckError> {
    if deficiencies.is_empty() {
        return Err(AckError::NothingToAcknowledge { server: server.to_string(), state });
    }
    let mut sources: Vec<String> = deficiencies.iter().map(|d| d.source.clone()).collect();
    sources.sort();
    sources.dedup();
    Ok(Ack { by: by.to_string(), at, comment: comment.to_string(), level: level.to_string(), sources })
}

/// Why `ack` ends at a poll that finds `deficiencies` at level index `level`, or `None`
/// while it still covers the problem.
pub fn ends(ack: &Ack, deficiencies: &[Deficiency], level: usize, rules: &Rules) -> Option<&'static str> {
    if deficiencies.is_empty() {
        return Some("recovered");
    }
    if deficiencies.iter().any(|d| !ack.sources.contains(&d.source)) {
        return Some("a new deficiency source");
    }
    if rules.index_of(&ack.level).is_some_and(|acked| level > acked) {
        return Some("a higher level");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::levels::Level;
    use rollcall_protocol::Severity;
    use std::time::Duration;

    fn d(source: &str) -> Deficiency {
        Deficiency { source: source.into(), severity: Severity::Critical, summary: "s".into() }
    }

    fn rules() -> Rules {
        Rules::new(
            vec![
                Level::new("normal", Duration::from_secs(900)),
                Level::new("warning", Duration::from_secs(300)),
                Level::new("critical", Duration::from_secs(120)),
            ],
            vec![],
            1,
        )
    }

    fn ack(level: &str, sources: &[&str]) -> Ack {
        let defs: Vec<Deficiency> = sources.iter().map(|s| d(s)).collect();
        acknowledge("mail-01", "deficient", level, &defs, "ops", DateTime::UNIX_EPOCH, "on it").unwrap()
    }

    #[test]
    fn only_a_problem_can_be_acknowledged() {
        let e = acknowledge("mail-01", "ok", "normal", &[], "ops", DateTime::UNIX_EPOCH, "x").unwrap_err();
        assert_eq!(e.to_string(), "mail-01 has no problem to acknowledge (state ok, no deficiencies)");
        let a = ack("warning", &["service:smtp", "service:smtp", "host:disk:/"]);
        assert_eq!(a.sources, ["host:disk:/", "service:smtp"]);
        assert_eq!((a.by.as_str(), a.comment.as_str(), a.level.as_str()), ("ops", "on it", "warning"));
    }

    #[test]
    fn the_same_problem_keeps_it_and_a_better_one_too() {
        let a = ack("warning", &["service:smtp", "host:disk:/"]);
        assert_eq!(ends(&a, &[d("service:smtp"), d("host:disk:/")], 1, &rules()), None);
        assert_eq!(ends(&a, &[d("service:smtp")], 1, &rules()), None, "fewer sources: still the same problem");
        assert_eq!(ends(&a, &[d("service:smtp")], 0, &rules()), None, "a lower level: better, not worse");
    }

    #[test]
    fn recovery_a_new_source_or_a_higher_level_ends_it() {
        let a = ack("warning", &["service:smtp"]);
        assert_eq!(ends(&a, &[], 0, &rules()), Some("recovered"));
        assert_eq!(ends(&a, &[d("service:smtp"), d("service:imap")], 1, &rules()), Some("a new deficiency source"));
        assert_eq!(ends(&a, &[d("service:smtp")], 2, &rules()), Some("a higher level"));
    }
}
