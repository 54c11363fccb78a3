//! Polling levels and the list-transfer rules that move servers between them (SPEC 3).
//!
//! Rules it keeps: a server moves UP at once, on the first reply (or failed poll) whose
//! deficiencies call for a higher level; it moves DOWN only after `recover_after` replies
//! in a row that call for a lower level; each deficiency takes the level of the first rule
//! that matches it, or the last level when none does; the highest such level wins.
//!
//! Progressive escalation (SPEC 13, the seed's "progressively increasing frequencies"): a
//! level with `escalate_after` sends a server that has stayed deficient at it that long
//! one level up ([`Rules::escalate`]). An escalated server stays up while it is deficient
//! (its deficiencies alone would call for the lower level it came from, which would undo
//! the escalation at the next poll); it moves down as usual once they clear.

use rollcall_protocol::{Deficiency, Severity};

/// A polling level: a name and how often servers at that level are polled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Level {
    pub name: String,
    pub interval: std::time::Duration,
    /// Deficient this long at this level: up one level (`None`: never by time).
    pub escalate_after: Option<std::time::Duration>,
}

impl Level {
    pub fn new(name: &str, interval: std::time::Duration) -> Level {
        Level { name: name.to_string(), interval, escalate_after: None }
    }
}

/// One list-transfer setting: deficiencies whose source matches the glob (and severity,
/// when given) send the server to `level` (an index into the levels).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub source: String,
    pub severity: Option<Severity>,
    pub level: usize,
}

impl Rule {
    pub fn matches(&self, d: &Deficiency) -> bool {
        self.severity.is_none_or(|s| s == d.severity) && glob_match(&self.source, &d.source)
    }
}

/// Where a server stands: its level and how many calmer replies it has seen in a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LevelState {
    pub level: usize,
    pub calm_streak: u32,
    /// The level was reached by `escalate_after` (see the module's rules).
    pub escalated: bool,
}

/// A level change and why it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub from: usize,
    pub to: usize,
    pub reason: String,
}

/// The ordered levels, the rules and the hysteresis: everything that decides levels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    levels: Vec<Level>,
    rules: Vec<Rule>,
    recover_after: u32,
}

impl Rules {
    /// `levels` must not be empty (the config guarantees it).
    pub fn new(levels: Vec<Level>, rules: Vec<Rule>, recover_after: u32) -> Rules {
        Rules { levels, rules, recover_after: recover_after.max(1) }
    }

    pub fn levels(&self) -> &[Level] {
        &self.levels
    }

    pub fn level(&self, i: usize) -> &Level {
        &self.levels[i.min(self.levels.len() - 1)]
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.levels.iter().position(|l| l.name == name)
    }

    pub fn recover_after(&self) -> u32 {
        self.recover_after
    }

    /// The level these deficiencies call for, and the deficiency that calls for it.
    pub fn target<'d>(&self, deficiencies: &'d [Deficiency]) -> (usize, Option<&'d Deficiency>) {
        let last = self.levels.len() - 1;
        let mut best: (usize, Option<&Deficiency>) = (0, None);
        for d in deficiencies {
            let level = self.rules.iter().find(|r| r.matches(d)).map_or(last, |r| r.level);
            if best.1.is_none() || level > best.0 {
                best = (level, Some(d));
            }
        }
        best
    }

    /// Applies one poll's deficiencies to a server's level state.
    pub fn decide(&self, now: LevelState, deficiencies: &[Deficiency]) -> (LevelState, Option<Transition>) {
        let (target, cause) = self.target(deficiencies);
        let level = now.level.min(self.levels.len() - 1);
        if target > level {
            let cause = cause.map_or_else(String::new, |d| format!("{} ({}): {}", d.source, d.severity, d.summary));
            return (
                LevelState { level: target, calm_streak: 0, escalated: false },
                Some(Transition { from: level, to: target, reason: cause }),
            );
        }
        if target == level || (now.escalated && !deficiencies.is_empty()) {
            return (LevelState { level, calm_streak: 0, escalated: now.escalated && target < level }, None);
        }
        let streak = now.calm_streak + 1;
        if streak < self.recover_after {
            return (LevelState { level, calm_streak: streak, escalated: now.escalated }, None);
        }
        let reason = match cause {
            None if streak == 1 => "all deficiencies cleared".to_string(),
            None => format!("all deficiencies cleared ({streak} clean replies in a row)"),
            Some(d) => format!(
                "remaining deficiencies only call for {}: {} ({})",
                self.levels[target].name, d.source, d.severity
            ),
        };
        (
            LevelState { level: target, calm_streak: 0, escalated: false },
            Some(Transition { from: level, to: target, reason }),
        )
    }

    /// Progressive escalation: a server still deficient (`deficient`) at a level with
    /// `escalate_after`, there since `since`, moves up one level once `at - since` reaches
    /// it. Reason: "deficient for 10m at warning".
    pub fn escalate(
        &self,
        now: LevelState,
        deficient: bool,
        since: chrono::DateTime<chrono::Utc>,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Option<(LevelState, Transition)> {
        let level = now.level.min(self.levels.len() - 1);
        let after = self.levels[level].escalate_after?;
        if !deficient || level + 1 >= self.levels.len() {
            return None;
        }
        let stayed = (at - since).to_std().ok()?;
        if stayed < after {
            return None;
        }
        let reason = format!("deficient for {} at {}", rollcall_config::Duration(after), self.levels[level].name);
        Some((
            LevelState { level: level + 1, calm_streak: 0, escalated: true },
            Transition { from: level, to: level + 1, reason },
        ))
    }
}

/// Glob with `*` (any run) and `?` (one character), the whole of what rule sources need;
/// a crate would add a dependency for twenty lines.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn d(source: &str, severity: Severity) -> Deficiency {
        Deficiency { source: source.into(), severity, summary: "s".into() }
    }

    fn three_levels(rules: Vec<Rule>, recover_after: u32) -> Rules {
        Rules::new(
            vec![
                Level::new("normal", Duration::from_secs(900)),
                Level::new("warning", Duration::from_secs(300)),
                Level::new("critical", Duration::from_secs(120)),
            ],
            rules,
            recover_after,
        )
    }

    #[test]
    fn globs() {
        assert!(glob_match("poll:*", "poll:timeout"));
        assert!(glob_match("service:directory", "service:directory"));
        assert!(!glob_match("service:directory", "service:directory2"));
        assert!(glob_match("host:disk:*", "host:disk:/var"));
        assert!(glob_match("*:d?sk*", "host:disk:/"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("probe:*", "service:x"));
    }

    #[test]
    fn any_deficiency_goes_to_the_last_level_by_default() {
        let r = three_levels(vec![], 1);
        let (s, t) = r.decide(LevelState::default(), &[d("service:x", Severity::Warning)]);
        assert_eq!(s.level, 2);
        assert_eq!(t.unwrap().reason, "service:x (warning): s");
    }

    #[test]
    fn first_matching_rule_wins_and_the_highest_level_is_taken() {
        let r = three_levels(
            vec![
                Rule { source: "host:disk:*".into(), severity: Some(Severity::Warning), level: 1 },
                Rule { source: "service:directory".into(), severity: None, level: 2 },
                Rule { source: "*".into(), severity: None, level: 1 },
            ],
            1,
        );
        assert_eq!(r.target(&[d("host:disk:/", Severity::Warning)]).0, 1);
        assert_eq!(r.target(&[d("host:disk:/", Severity::Critical)]).0, 1, "falls through to '*'");
        assert_eq!(r.target(&[d("service:web", Severity::Critical)]).0, 1);
        let both = [d("host:disk:/", Severity::Warning), d("service:directory", Severity::Warning)];
        let (level, cause) = r.target(&both);
        assert_eq!((level, cause.unwrap().source.as_str()), (2, "service:directory"));
        assert_eq!(r.target(&[]).0, 0);
    }

    #[test]
    fn rule_to_the_first_level_ignores_a_deficiency() {
        let r = three_levels(vec![Rule { source: "probe:refresh".into(), severity: None, level: 0 }], 1);
        let (s, t) = r.decide(LevelState::default(), &[d("probe:refresh", Severity::Critical)]);
        assert_eq!((s.level, t), (0, None));
    }

    #[test]
    fn recovery_waits_for_recover_after_clean_replies() {
        let r = three_levels(vec![], 3);
        let (s, _) = r.decide(LevelState::default(), &[d("poll:timeout", Severity::Critical)]);
        assert_eq!(s.level, 2);
        let (s, t) = r.decide(s, &[]);
        assert_eq!((s, t), (LevelState { level: 2, calm_streak: 1, escalated: false }, None));
        let (s, t) = r.decide(s, &[]);
        assert_eq!((s, t), (LevelState { level: 2, calm_streak: 2, escalated: false }, None));
        let (s, t) = r.decide(s, &[]);
        assert_eq!(s, LevelState { level: 0, calm_streak: 0, escalated: false });
        assert_eq!(t.unwrap().reason, "all deficiencies cleared (3 clean replies in a row)");
    }

    #[test]
    fn a_relapse_resets_the_streak() {
        let r = three_levels(vec![], 2);
        let s = LevelState { level: 2, calm_streak: 1, escalated: false };
        let (s, t) = r.decide(s, &[d("poll:refused", Severity::Critical)]);
        assert_eq!((s, t), (LevelState { level: 2, calm_streak: 0, escalated: false }, None));
    }

    #[test]
    fn escalate_after_moves_a_deficient_server_up_one_level_once_it_has_stayed_that_long() {
        let t = |s: i64| chrono::DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap();
        let mut levels = three_levels(vec![], 1).levels().to_vec();
        levels[1].escalate_after = Some(Duration::from_secs(600));
        let r = Rules::new(levels, vec![Rule { source: "host:*".into(), severity: None, level: 1 }], 1);
        let at_warning = LevelState { level: 1, calm_streak: 0, escalated: false };
        assert_eq!(r.escalate(at_warning, true, t(0), t(599)), None);
        let (up, why) = r.escalate(at_warning, true, t(0), t(600)).unwrap();
        assert_eq!(
            (up, why.to, why.reason.as_str()),
            (LevelState { level: 2, calm_streak: 0, escalated: true }, 2, "deficient for 10m at warning")
        );
        assert_eq!(r.escalate(at_warning, false, t(0), t(6000)), None, "only while deficient");
        assert_eq!(r.escalate(LevelState { level: 0, ..at_warning }, true, t(0), t(6000)), None, "normal has none");
        // Escalated: the warning deficiency alone does not bring it down; clearing does.
        let disk = [d("host:disk:/", Severity::Warning)];
        assert_eq!(r.decide(up, &disk), (up, None));
        let (down, t) = r.decide(up, &[]);
        assert_eq!((down.level, down.escalated, t.unwrap().to), (0, false, 0));
    }

    #[test]
    fn de_escalation_to_a_middle_level_names_what_remains() {
        let r = three_levels(vec![Rule { source: "host:*".into(), severity: None, level: 1 }], 1);
        let (s, t) =
            r.decide(LevelState { level: 2, calm_streak: 0, escalated: false }, &[d("host:disk:/", Severity::Warning)]);
        assert_eq!(s.level, 1);
        assert_eq!(t.unwrap().reason, "remaining deficiencies only call for warning: host:disk:/ (warning)");
    }
}
