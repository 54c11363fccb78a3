//! The one login/endpoint settings type ([`Login`]) and its one validator ([`login`]),
//! shared by every table that connects somewhere and may log in: the `imap`, `smtp` and
//! `ldap` checks, `[probe.mailbox]` and `[probe.mail_loop]`; and the one TLS setting
//! ([`ca_file`]) those and the `http` check share.
//!
//! Rules: every problem is named by its key (and so its line); a credential is a *source*
//! (file, command, OAuth2 token command), never a value, read at each login so a rotated
//! password needs no restart; at most one source is set, and a source needs a login name
//! and a login name a source. Nothing here reads another module of the crate but `fields`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::fields::{host_port, usable_argv, TableCx};

/// How a connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Plain TCP (fine on loopback or a trusted segment).
    #[default]
    None,
    /// Plain TCP upgraded by the protocol's STARTTLS command before any credential is sent.
    Starttls,
    /// TLS from the first byte (IMAPS 993, SMTPS 465, LDAPS 636).
    Tls,
}

impl Security {
    /// The config spelling: `none`, `starttls`, `tls`.
    pub fn as_str(self) -> &'static str {
        match self {
            Security::None => "none",
            Security::Starttls => "starttls",
            Security::Tls => "tls",
        }
    }
}

/// Where to connect and how to protect it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `HOST:PORT`; HOST is also the name the server's certificate must carry.
    pub address: String,
    pub security: Security,
    /// PEM file of the CAs to trust instead of the system's (a site's private CA).
    pub ca_file: Option<PathBuf>,
}

impl Endpoint {
    /// The host part of `address`, without IPv6 brackets.
    pub fn host(&self) -> &str {
        let host = self.address.rsplit_once(':').map_or(self.address.as_str(), |(h, _)| h);
        host.trim_start_matches('[').trim_end_matches(']')
    }
}

/// Where a login secret comes from; the config never holds the secret itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretFrom {
    /// A file holding the password (trailing newline trimmed).
    File(PathBuf),
    /// A command printing the password (run with a timeout, output trimmed).
    Command(Vec<String>),
    /// A command printing an OAuth2 access token, used with SASL XOAUTH2.
    OAuth2Command(Vec<String>),
}

/// A user name (for LDAP, a bind DN) and where its secret comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub secret: SecretFrom,
}

/// A validated endpoint and, when the table asks for one, a login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub endpoint: Endpoint,
    /// `None`: connect without logging in (anonymous for LDAP).
    pub credentials: Option<Credentials>,
}

/// The login/endpoint keys of one table as written. The key names differ per table
/// (`address`, `server`, `smtp`; `user`, `bind_dn`), so each carries its own.
pub struct LoginKeys<'a> {
    /// The `HOST:PORT` key's name and value.
    pub address: (&'a str, Option<&'a str>),
    pub security: Option<Security>,
    pub ca_file: Option<&'a Path>,
    /// The login name's key and value.
    pub user: (&'a str, Option<&'a str>),
    pub password_file: Option<&'a Path>,
    pub password_command: Option<&'a [String]>,
    pub oauth2_token_command: Option<&'a [String]>,
}

/// What a table demands of its login.
#[derive(Debug, Clone, Copy)]
pub struct LoginRules {
    /// A login name and secret must be set (the mailbox probe logs in to read mail).
    pub required: bool,
    /// `oauth2_token_command` is allowed (SASL XOAUTH2: IMAP and SMTP, not LDAP).
    pub oauth2: bool,
}

/// Validates `keys` under `rules`; every problem goes to `cx`, and then the answer is `None`.
/// With `rules.required`, an answer always has `credentials`.
pub fn login(cx: &mut TableCx<'_, '_>, keys: &LoginKeys<'_>, rules: LoginRules) -> Option<Login> {
    let (address_key, address) = keys.address;
    let address = host_port(cx, address_key, address, "write it as \"HOST:PORT\"");
    let credentials = credentials(cx, keys, rules);
    let ca_file = ca_file(cx, "ca_file", keys.ca_file);
    let endpoint = Endpoint { address: address?, security: keys.security.unwrap_or_default(), ca_file: ca_file? };
    Some(Login { endpoint, credentials: credentials? })
}

/// The one TLS setting every network check and probe shares: `ca_file`, a PEM file of the
/// CAs to trust instead of the system's (a site's private CA), resolved beside the config
/// file. `Some(None)`: not set; `None`: a problem was pushed (the file cannot be read).
pub fn ca_file(cx: &mut TableCx<'_, '_>, key: &str, value: Option<&Path>) -> Option<Option<PathBuf>> {
    let Some(path) = value else { return Some(None) };
    let path = cx.resolve(path);
    match std::fs::metadata(&path) {
        Ok(m) if m.is_file() => Some(Some(path)),
        Ok(_) => {
            cx.push(key, format!("{} is not a file (a PEM file of CA certificates)", path.display()));
            None
        }
        Err(e) => {
            cx.push(key, format!("cannot read {}: {e}", path.display()));
            None
        }
    }
}

/// `Some(None)`: no login; `Some(Some(_))`: a valid one; `None`: a problem was pushed.
fn credentials(cx: &mut TableCx<'_, '_>, keys: &LoginKeys<'_>, rules: LoginRules) -> Option<Option<Credentials>> {
    let (user_key, user) = keys.user;
    let sources = if rules.oauth2 {
        "password_file, password_command or oauth2_token_command"
    } else {
        "password_file or password_command"
    };
    let any_secret =
        keys.password_file.is_some() || keys.password_command.is_some() || keys.oauth2_token_command.is_some();
    match (user, any_secret) {
        (None, false) if !rules.required => Some(None),
        (None, false) => {
            cx.push(user_key, format!("missing: the login name (and its secret: {sources})"));
            None
        }
        (None, true) => {
            cx.push(user_key, format!("missing: the password is for whom? set {user_key}"));
            None
        }
        (Some(u), _) if u.trim().is_empty() => {
            cx.push(user_key, "must not be empty");
            None
        }
        (Some(_), false) => {
            cx.push("password_file", format!("missing: a login as {user_key} needs {sources}"));
            None
        }
        (Some(u), true) => {
            secret(cx, keys, rules.oauth2).map(|secret| Some(Credentials { user: u.to_string(), secret }))
        }
    }
}

/// The one secret source set; a problem when two are, or the one set is unusable.
fn secret(cx: &mut TableCx<'_, '_>, keys: &LoginKeys<'_>, oauth2: bool) -> Option<SecretFrom> {
    let mut set = Vec::new();
    if let Some(f) = keys.password_file {
        set.push(("password_file", SecretFrom::File(cx.resolve(f))));
    }
    if let Some(c) = keys.password_command {
        set.push(("password_command", SecretFrom::Command(c.to_vec())));
    }
    if let Some(c) = keys.oauth2_token_command {
        if !oauth2 {
            cx.push("oauth2_token_command", "not supported here (use password_file or password_command)");
            return None;
        }
        set.push(("oauth2_token_command", SecretFrom::OAuth2Command(c.to_vec())));
    }
    if set.len() > 1 {
        cx.push(set[1].0, format!("set together with {}; choose one", set[0].0));
        return None;
    }
    let (key, s) = set.pop()?;
    match &s {
        SecretFrom::Command(argv) | SecretFrom::OAuth2Command(argv) if !usable_argv(argv) => {
            cx.push(key, "empty: write it as [\"/path/to/program\", \"ARG\", ...]");
            None
        }
        SecretFrom::File(path) if !path.is_file() => {
            cx.push(key, format!("cannot read secret file {}: not a file", path.display()));
            None
        }
        _ => Some(s),
    }
}

/// The login/endpoint keys as a `[[service]]` of the `imap` and `smtp` checks writes them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLogin {
    pub address: Option<String>,
    pub security: Option<Security>,
    pub ca_file: Option<PathBuf>,
    pub user: Option<String>,
    pub password_file: Option<PathBuf>,
    pub password_command: Option<Vec<String>>,
    pub oauth2_token_command: Option<Vec<String>>,
}

impl RawLogin {
    /// The names of [`RawLogin`]'s keys, in the order error messages list them.
    pub const KEYS: &'static [&'static str] =
        &["address", "security", "ca_file", "user", "password_file", "password_command", "oauth2_token_command"];

    /// These keys under their own names, for [`login`].
    pub fn keys(&self) -> LoginKeys<'_> {
        LoginKeys {
            address: ("address", self.address.as_deref()),
            security: self.security,
            ca_file: self.ca_file.as_deref(),
            user: ("user", self.user.as_deref()),
            password_file: self.password_file.as_deref(),
            password_command: self.password_command.as_deref(),
            oauth2_token_command: self.oauth2_token_command.as_deref(),
        }
    }
}
