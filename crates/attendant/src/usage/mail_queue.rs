//! `kind = "mail_queue"`: the messages waiting in the MTA's queue. Postfix: `postqueue -j`
//! (one JSON object per message, with its `queue_name`: maildrop, incoming, active,
//! deferred, hold); OpenSMTPD: `smtpctl show queue` (one line per envelope); Exim:
//! `exim -bpc` (the count). `mta` picks the reader; without it the installed MTA is
//! detected by its program; `command` replaces the default program (a second instance:
//! `["postqueue", "-c", "/etc/postfix-out", "-j"]`).

use std::collections::BTreeMap;
use std::path::Path;

use super::{number, run, Figure};
use crate::config::Mta;

/// Where each MTA's queue program is looked for, in detection order.
const PROGRAMS: [(Mta, &[&str]); 3] = [
    (Mta::Postfix, &["/usr/sbin/postqueue", "/usr/bin/postqueue"]),
    (Mta::Opensmtpd, &["/usr/sbin/smtpctl", "/usr/bin/smtpctl"]),
    (Mta::Exim, &["/usr/sbin/exim", "/usr/sbin/exim4", "/usr/bin/exim"]),
];

pub async fn measure(mta: Option<Mta>, argv: Option<&[String]>) -> Result<Vec<Figure>, String> {
    let (mta, argv) = match (mta, argv) {
        (Some(m), Some(a)) => (m, a.to_vec()),
        (m, a) => {
            let (found, program) = detect(m).ok_or_else(|| match m {
                Some(m) => format!("the {} queue program is not installed", m.as_str()),
                None => "no MTA found (none of postqueue, smtpctl, exim): set mta and command".to_string(),
            })?;
            (found, a.map_or_else(|| default_argv(found, program), <[String]>::to_vec))
        }
    };
    let out = run::run(&argv).await?;
    if out.code != Some(0) {
        return Err(out.failure(&argv[0]));
    }
    let (count, message) = match mta {
        Mta::Postfix => postfix(&out.stdout)?,
        Mta::Opensmtpd => opensmtpd(&out.stdout),
        Mta::Exim => exim(&out.stdout)?,
    };
    Ok(vec![Figure { label: None, value: Some(count as f64), unit: "messages".into(), message }])
}

/// The MTA (the one asked for, or the first installed) and its queue program.
fn detect(mta: Option<Mta>) -> Option<(Mta, &'static str)> {
    PROGRAMS
        .iter()
        .filter(|(m, _)| mta.is_none_or(|want| want == *m))
        .find_map(|(m, paths)| paths.iter().find(|p| Path::new(p).exists()).map(|p| (*m, *p)))
}

fn default_argv(mta: Mta, program: &str) -> Vec<String> {
    let args: &[&str] = match mta {
        Mta::Postfix => &["-j"],
        Mta::Opensmtpd => &["show", "queue"],
        Mta::Exim => &["-bpc"],
    };
    std::iter::once(program).chain(args.iter().copied()).map(String::from).collect()
}

/// Envelopes in `smtpctl show queue` output: one line each.
fn opensmtpd(text: &str) -> (u64, String) {
    let n = text.lines().filter(|l| !l.trim().is_empty()).count() as u64;
    (n, format!("{n} envelope(s) in the OpenSMTPD queue"))
}

/// The count `exim -bpc` prints.
fn exim(text: &str) -> Result<(u64, String), String> {
    let n: u64 = text.trim().parse().map_err(|_| format!("exim -bpc printed {:?}, not a count", text.trim()))?;
    Ok((n, format!("{n} message(s) in the Exim queue")))
}

/// Messages in `postqueue -j` output, and a message counting them by queue.
fn postfix(text: &str) -> Result<(u64, String), String> {
    let mut by_queue: BTreeMap<String, u64> = BTreeMap::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("postqueue -j line {}: not JSON ({e})", i + 1))?;
        let queue = v.get("queue_name").and_then(|q| q.as_str()).unwrap_or("unknown");
        *by_queue.entry(queue.to_string()).or_default() += 1;
    }
    let total: u64 = by_queue.values().sum();
    let parts: Vec<String> = by_queue.iter().map(|(q, n)| format!("{} {q}", number(*n as f64))).collect();
    let message = if total == 0 {
        "the Postfix queue is empty".to_string()
    } else {
        format!("{total} message(s): {}", parts.join(", "))
    };
    Ok((total, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postqueue_json_is_counted_by_queue() {
        let text = r#"{"queue_name": "deferred", "queue_id": "4Xk2", "arrival_time": 1, "message_size": 10, "sender": "a@b", "recipients": []}
{"queue_name": "hold", "queue_id": "4Xk3", "arrival_time": 1, "message_size": 10, "sender": "a@b", "recipients": []}
{"queue_name": "deferred", "queue_id": "4Xk4", "arrival_time": 1, "message_size": 10, "sender": "a@b", "recipients": []}
"#;
        assert_eq!(postfix(text), Ok((3, "3 message(s): 2 deferred, 1 hold".to_string())));
        assert_eq!(postfix(""), Ok((0, "the Postfix queue is empty".to_string())));
        let e = postfix("Mail system is down\n").expect_err("not JSON");
        assert!(e.starts_with("postqueue -j line 1: not JSON"), "{e}");
    }

    #[test]
    fn opensmtpd_lines_and_exim_counts() {
        let smtpctl = "1a2b3c4d|inet4|mta|1|a@b|c@d|c@d|1700000000|1700000000|0|0|pending|0|\n5e6f7a8b|inet4|mta|1|a@b|e@f|e@f|1700000000|1700000000|0|0|pending|0|\n";
        assert_eq!(opensmtpd(smtpctl).0, 2);
        assert_eq!(opensmtpd("").0, 0);
        assert_eq!(exim("17\n"), Ok((17, "17 message(s) in the Exim queue".to_string())));
        let e = exim("exim: permission denied\n").expect_err("not a count");
        assert_eq!(e, "exim -bpc printed \"exim: permission denied\", not a count");
    }
}
