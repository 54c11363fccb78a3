//! `kind = "logged_in_users"`: login sessions in the utmp file, counted as `who -q` and
//! `uptime` count them ("N users": one per session), the distinct names in the message.
//!
//! Rules: a missing file is nobody logged in, as `who` and `uptime` have it; glibc's
//! utmp record on Linux (x86-64 and arm64 alike): 384 bytes, `ut_type` an i16 at 0
//! (7 = USER_PROCESS), `ut_user` 32 bytes at 44; read by offsets, no `unsafe`; a file
//! that is not whole records is an error naming it; the file is read whole up to a bound
//! (a busy server has a few hundred sessions, not thousands of kilobytes).

use std::collections::BTreeSet;
use std::path::Path;

use super::Figure;

const RECORD: usize = 384;
const USER_PROCESS: i16 = 7;
const USER_AT: usize = 44;
const USER_LEN: usize = 32;
/// Largest utmp file read: 10,000 sessions.
const MAX_BYTES: u64 = (RECORD * 10_000) as u64;

pub async fn measure(utmp: &Path) -> Result<Vec<Figure>, String> {
    let path = utmp.to_path_buf();
    let bytes = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut buf = Vec::new();
        match std::fs::File::open(&path).and_then(|f| f.take(MAX_BYTES + 1).read_to_end(&mut buf)) {
            Ok(_) => Ok(Some(buf)),
            // As `who` and `uptime` read it: no file, nobody logged in (a container, a
            // system where nobody has logged in since boot).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    })
    .await
    .map_err(|e| e.to_string())??;
    let Some(bytes) = bytes else {
        return Ok(vec![Figure {
            label: None,
            value: Some(0.0),
            unit: "users".into(),
            message: format!("nobody logged in (no utmp file at {})", utmp.display()),
        }]);
    };
    let names = sessions(&bytes).map_err(|e| format!("{}: {e}", utmp.display()))?;
    let users: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    let n = names.len();
    let list = users.iter().copied().collect::<Vec<_>>().join(", ");
    Ok(vec![Figure {
        label: None,
        value: Some(n as f64),
        unit: "users".into(),
        message: if n == 0 {
            "nobody logged in".to_string()
        } else {
            format!("{n} login session(s) of {} user(s): {list}", users.len())
        },
    }])
}

/// The user name of every login session in utmp `bytes`.
fn sessions(bytes: &[u8]) -> Result<Vec<String>, String> {
    if bytes.len() as u64 > MAX_BYTES {
        return Err(format!("larger than {MAX_BYTES} bytes"));
    }
    if !bytes.len().is_multiple_of(RECORD) {
        return Err(format!("{} bytes is not a whole number of {RECORD}-byte utmp records", bytes.len()));
    }
    Ok(bytes
        .chunks(RECORD)
        .filter(|r| i16::from_ne_bytes([r[0], r[1]]) == USER_PROCESS)
        .map(|r| {
            let user = &r[USER_AT..USER_AT + USER_LEN];
            let end = user.iter().position(|b| *b == 0).unwrap_or(USER_LEN);
            String::from_utf8_lossy(&user[..end]).into_owned()
        })
        .filter(|u| !u.is_empty())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: i16, user: &str) -> Vec<u8> {
        let mut r = vec![0u8; RECORD];
        r[..2].copy_from_slice(&kind.to_ne_bytes());
        r[USER_AT..USER_AT + user.len()].copy_from_slice(user.as_bytes());
        r
    }

    #[test]
    fn user_processes_count_and_a_torn_file_is_named() {
        let mut file = record(2, "reboot"); // BOOT_TIME
        file.extend(record(USER_PROCESS, "alice"));
        file.extend(record(USER_PROCESS, "bob"));
        file.extend(record(USER_PROCESS, "alice"));
        file.extend(record(8, "carol")); // DEAD_PROCESS: logged out
        assert_eq!(sessions(&file).expect("parse"), ["alice", "bob", "alice"]);
        let e = sessions(&file[..RECORD + 5]).expect_err("torn");
        assert!(e.contains("not a whole number of 384-byte utmp records"), "{e}");
    }
}
