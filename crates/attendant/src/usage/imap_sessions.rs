//! `kind = "imap_sessions"`: the IMAP sessions logged in to the store, from Dovecot's
//! `doveadm who -1` (one line per connection: user, protocol, pid, address), or the
//! `command` given (e.g. `["doveadm", "-c", "/etc/dovecot-2/dovecot.conf", "who", "-1"]`).
//!
//! Rules: lines whose protocol is `imap` count; the grouped form (`user  N  imap  (pids)
//! (ips)`) counts N; the header and other protocols (pop3, lmtp, submission) do not.

use std::collections::BTreeSet;

use super::{run, Figure};

const DEFAULT: [&str; 3] = ["doveadm", "who", "-1"];

pub async fn measure(argv: Option<&[String]>) -> Result<Vec<Figure>, String> {
    let argv = argv.map_or_else(|| DEFAULT.map(String::from).to_vec(), <[String]>::to_vec);
    let out = run::run(&argv).await?;
    if out.code != Some(0) {
        return Err(out.failure(&argv[0]));
    }
    let (sessions, users) = count(&out.stdout);
    Ok(vec![Figure {
        label: None,
        value: Some(sessions as f64),
        unit: "sessions".into(),
        message: format!("{sessions} IMAP session(s) of {} user(s)", users.len()),
    }])
}

/// IMAP sessions and the users holding them, from `doveadm who` output.
fn count(text: &str) -> (u64, BTreeSet<String>) {
    let mut sessions = 0;
    let mut users = BTreeSet::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let Some((user, rest)) = f.split_first() else { continue };
        let n = match rest {
            [n, proto, ..] if proto.eq_ignore_ascii_case("imap") && n.parse::<u64>().is_ok() => n.parse().unwrap_or(1),
            [proto, ..] if proto.eq_ignore_ascii_case("imap") => 1,
            _ => continue,
        };
        sessions += n;
        users.insert((*user).to_string());
    }
    (sessions, users)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_imap_lines_in_both_forms_and_nothing_else() {
        let one = "username              proto pid   ip\nann@example.test      imap  4242  127.0.0.1\nann@example.test      imap  4243  127.0.0.1\nbob@example.test      pop3  4244  10.0.0.1\ncy@example.test       imap  4245  ::1\n";
        let (n, users) = count(one);
        assert_eq!((n, users.len()), (3, 2));
        let grouped = "username # proto (pids) (ips)\nann@example.test 2 imap (4242 4243) (127.0.0.1)\nbob@example.test 1 pop3 (4244) (10.0.0.1)\n";
        assert_eq!(count(grouped).0, 2);
        assert_eq!(count("").0, 0);
    }
}
