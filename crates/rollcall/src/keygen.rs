//! `rollcall keygen --out DIR`: the poller's Ed25519 key pair for signing clock orders.
//!
//! Writes `DIR/poller.key` (private, mode 0600) and `DIR/poller.pub`, and prints the public
//! key line that goes into each attendant's `poller_public_key`. Never overwrites a key
//! unless told to: replacing it silently would make every attendant reject the poller.
//!
//! The `signing_key_file` line it prints names the key by its absolute path: paths in a
//! config are taken relative to that config's folder, which keygen cannot know, and an
//! absolute path is right wherever the line is pasted.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context;
use rollcall_protocol::clock_order::{public_key_line, signing_key_text};

pub fn run(out: &Path, force: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let key_path = out.join("poller.key");
    if key_path.exists() && !force {
        anyhow::bail!(
            "{} exists; pass --force to replace it (every attendant then needs the new public key)",
            key_path.display()
        );
    }
    let seed = random_seed()?;
    let (text, public) = signing_key_text(seed);
    let line = public_key_line(&public);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&key_path)
        .with_context(|| format!("cannot write {}", key_path.display()))?;
    f.write_all(text.as_bytes()).with_context(|| format!("cannot write {}", key_path.display()))?;
    let pub_path = out.join("poller.pub");
    std::fs::write(&pub_path, format!("{line}\n")).with_context(|| format!("cannot write {}", pub_path.display()))?;
    let key_path =
        std::fs::canonicalize(&key_path).with_context(|| format!("cannot resolve {}", key_path.display()))?;
    eprintln!("wrote {} (keep it secret) and {}", key_path.display(), pub_path.display());
    for l in paste_lines(&key_path, &line) {
        eprintln!("{l}");
    }
    println!("{line}");
    Ok(())
}

/// The two lines to paste, each named by the file it goes into (at its top, before any
/// `[table]`): the key by its absolute path, right wherever poller.toml is.
pub fn paste_lines(key_path: &Path, public_line: &str) -> [String; 2] {
    [
        format!("poller.toml:    signing_key_file = {:?}", key_path.display().to_string()),
        format!("attendant.toml: poller_public_key = {public_line:?}"),
    ]
}

/// 32 random bytes from the kernel.
pub fn random_seed() -> anyhow::Result<[u8; 32]> {
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut seed))
        .context("cannot read /dev/urandom")?;
    Ok(seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_private_key_only_its_owner_reads_and_refuses_to_overwrite() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        run(dir.path(), false).unwrap();
        let key = std::fs::read_to_string(dir.path().join("poller.key")).unwrap();
        let key = rollcall_protocol::clock_order::parse_signing_key(&key).unwrap();
        let public = std::fs::read_to_string(dir.path().join("poller.pub")).unwrap();
        assert_eq!(rollcall_protocol::clock_order::parse_public_key(&public).unwrap(), key.verifying_key());
        let mode = std::fs::metadata(dir.path().join("poller.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let err = run(dir.path(), false).unwrap_err().to_string();
        assert!(err.contains("exists; pass --force"), "{err}");
        run(dir.path(), true).unwrap();
    }

    /// Pasted into a poller.toml anywhere, the line must still name the key.
    #[test]
    fn the_signing_key_line_names_the_key_by_its_absolute_path() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("poller.key");
        let [poller, attendant] = paste_lines(&key, "ed25519:abc");
        assert_eq!(poller, format!("poller.toml:    signing_key_file = \"{}\"", key.display()));
        assert!(key.is_absolute());
        assert_eq!(attendant, "attendant.toml: poller_public_key = \"ed25519:abc\"");
    }
}
