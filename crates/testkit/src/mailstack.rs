//! A real mail stack for the attendant's mail-probe tests and the poller's mail-notification
//! tests: Dovecot (IMAP + LMTP), Postfix delivering to it over LMTP, and OpenLDAP's slapd,
//! each from the Debian packages, each on free loopback ports with its own config and state
//! in a temp dir, each stopped on drop.
//!
//! Rules: nothing system-wide is touched (no /etc edits, no system service, no port the
//! machine uses); a missing daemon fails the test naming the package to install, unless
//! ROLLCALL_SKIP_MAIL_TESTS=1 says to skip (and the test prints why); every wait is
//! bounded and a failure shows the daemon's log.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Uid and gid the mail store runs as (`nobody`/`nogroup`): never root.
const MAIL_UID: u32 = 65534;
const MAIL_GID: u32 = 65534;

/// The probe account every test uses.
pub const USER: &str = "probe@example.test";
pub const PASSWORD: &str = "probe-pw-1";
/// The directory's suffix and the probe identity that binds to it.
pub const LDAP_BASE: &str = "dc=example,dc=test";
pub const LDAP_PROBE_DN: &str = "cn=rollcall-probe,dc=example,dc=test";
pub const LDAP_PROBE_PASSWORD: &str = "ldap-probe-pw";

/// True (after saying why) when `ROLLCALL_SKIP_MAIL_TESTS=1` asks to skip the mail tests.
pub fn skip() -> bool {
    crate::skip("MAIL", "Dovecot, Postfix and slapd")
}

/// Fails the test with the package to install when `path` is missing.
fn require(path: &str, package: &str) {
    crate::require(path, package, "MAIL");
}

fn write(path: &Path, text: &str) {
    fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn uid_of(user: &str) -> u32 {
    let passwd = fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&user)).then(|| f.get(2).and_then(|u| u.parse().ok())).flatten()
        })
        .unwrap_or_else(|| panic!("no system user {user:?} (its package creates it)"))
}

use crate::{free_port, Daemon};

/// Dovecot serving IMAP (and LMTP for the MTA) for one user with a Maildir in `dir`.
pub struct Dovecot {
    pub dir: PathBuf,
    pub imap_port: u16,
    pub lmtp_port: u16,
    /// With TLS: the CA file a client must trust (the self-signed server certificate).
    pub ca_file: Option<PathBuf>,
    daemon: Option<Daemon>,
}

impl Dovecot {
    /// Starts Dovecot under `root/dovecot`; `tls` adds a self-signed certificate for STARTTLS.
    pub fn start(root: &Path, tls: bool) -> Dovecot {
        require("/usr/sbin/dovecot", "dovecot-imapd");
        require("/usr/lib/dovecot/lmtp", "dovecot-lmtpd");
        let dir = root.join("dovecot");
        fs::create_dir_all(dir.join("mail")).expect("mkdir");
        // The store runs as nobody: it must be able to walk into the temp dir.
        for d in [root, dir.as_path()] {
            fs::set_permissions(d, fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        std::os::unix::fs::chown(dir.join("mail"), Some(MAIL_UID), Some(MAIL_GID)).expect("chown mail");
        let ca_file = tls.then(|| {
            require("/usr/bin/openssl", "openssl");
            let status = Command::new("openssl")
                .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"])
                .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
                // A leaf, not a CA: rustls refuses a CA certificate as the server's own.
                .args(["-addext", "basicConstraints=critical,CA:FALSE"])
                .args(["-addext", "extendedKeyUsage=serverAuth"])
                .arg("-keyout")
                .arg(dir.join("key.pem"))
                .arg("-out")
                .arg(dir.join("cert.pem"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("run openssl");
            assert!(status.success(), "openssl could not make a test certificate");
            dir.join("cert.pem")
        });
        let d = Dovecot { imap_port: free_port(), lmtp_port: free_port(), dir, ca_file, daemon: None };
        d.set_password(PASSWORD);
        let ssl = match &d.ca_file {
            Some(_) => format!("ssl = yes\nssl_cert = <{0}/cert.pem\nssl_key = <{0}/key.pem\n", d.dir.display()),
            None => "ssl = no\n".to_string(),
        };
        let instance = d.dir.display().to_string().replace('/', "_");
        write(
            &d.dir.join("dovecot.conf"),
            &format!(
                r#"base_dir = {dir}/run
state_dir = {dir}/state
log_path = {dir}/dovecot.log
instance_name = rollcall{instance}
protocols = imap lmtp
listen = 127.0.0.1
{ssl}disable_plaintext_auth = no
auth_mechanisms = plain login xoauth2
# Probes retry every few hundred ms in tests: no brute-force penalty for loopback.
auth_failure_delay = 0
login_trusted_networks = 127.0.0.0/8
first_valid_uid = 1
mail_location = maildir:{dir}/mail/%u
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {dir}/passwd
}}
userdb {{
  driver = static
  args = uid={MAIL_UID} gid={MAIL_GID} home={dir}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp}
  }}
}}
"#,
                dir = d.dir.display(),
                imap = d.imap_port,
                lmtp = d.lmtp_port,
            ),
        );
        let mut d = d;
        d.restart();
        d
    }

    /// (Re)starts the daemon on the same ports and state.
    pub fn restart(&mut self) {
        self.stop();
        let mut cmd = Command::new("/usr/sbin/dovecot");
        cmd.arg("-F").arg("-c").arg(self.dir.join("dovecot.conf"));
        let ports = [self.imap_port, self.lmtp_port];
        let log = self.dir.join("dovecot.log");
        self.daemon = Some(Daemon::listening("dovecot", &mut cmd, &self.dir.join("dovecot.out"), &ports, &[&log]));
    }

    /// Stops it (its sessions end with it: `shutdown_clients` is on by default).
    pub fn stop(&mut self) {
        self.daemon = None; // dropping a Daemon stops it
    }

    /// Sets the probe user's password (Dovecot rereads the passwd-file when it changes).
    pub fn set_password(&self, password: &str) {
        let path = self.dir.join("passwd");
        write(&path, &format!("{USER}:{{PLAIN}}{password}::::::\n"));
        // Make sure the mtime moves even within the same second.
        let _ = fs::File::options()
            .append(true)
            .open(&path)
            .and_then(|f| f.set_modified(std::time::SystemTime::now() + Duration::from_secs(1)));
    }

    /// The probe user's Maildir (exists once the user logged in or got mail).
    pub fn maildir(&self) -> PathBuf {
        self.dir.join("mail").join(USER)
    }

    /// Drops a message straight into the Maildir's `new/`, as a delivery agent would.
    pub fn drop_message(&self, name: &str, text: &str) {
        let path = self.maildir().join("new").join(name);
        write(&path, text);
        std::os::unix::fs::chown(&path, Some(MAIL_UID), Some(MAIL_GID)).expect("chown message");
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("dovecot.log")).unwrap_or_default()
    }
}

/// Postfix accepting mail for example.test on loopback and handing it to Dovecot's LMTP.
pub struct Postfix {
    pub dir: PathBuf,
    pub smtp_port: u16,
    daemon: Option<Daemon>,
}

impl Postfix {
    pub fn start(root: &Path, lmtp_port: u16) -> Postfix {
        require("/usr/sbin/postfix", "postfix");
        require("/usr/lib/postfix/sbin/master", "postfix");
        let dir = root.join("postfix");
        for sub in ["conf", "queue", "data"] {
            fs::create_dir_all(dir.join(sub)).expect("mkdir");
        }
        std::os::unix::fs::chown(dir.join("data"), Some(uid_of("postfix")), None).expect("chown data");
        let p = Postfix { smtp_port: free_port(), dir, daemon: None };
        let d = p.dir.display();
        write(
            &p.dir.join("conf/main.cf"),
            &format!(
                "compatibility_level = 3.6
queue_directory = {d}/queue
data_directory = {d}/data
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = mta.example.test
mydomain = example.test
myorigin = example.test
mydestination =
mynetworks = 127.0.0.0/8
relay_domains =
virtual_mailbox_domains = example.test
virtual_transport = lmtp:inet:127.0.0.1:{lmtp_port}
maillog_file = /dev/stdout
smtputf8_enable = no
biff = no
alias_maps =
alias_database =
"
            ),
        );
        write(
            &p.dir.join("conf/master.cf"),
            &format!(
                "127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
lmtp      unix  - - n - - lmtp
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
",
                port = p.smtp_port
            ),
        );
        let status = Command::new("/usr/sbin/postfix")
            .arg("-c")
            .arg(p.dir.join("conf"))
            .arg("set-permissions")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("postfix set-permissions");
        assert!(status.success(), "postfix set-permissions failed");
        let mut p = p;
        p.restart();
        p
    }

    pub fn restart(&mut self) {
        self.stop();
        let mut cmd = Command::new("/usr/lib/postfix/sbin/master");
        cmd.arg("-c").arg(self.dir.join("conf")).arg("-d");
        self.daemon = Some(Daemon::listening("postfix", &mut cmd, &self.dir.join("maillog"), &[self.smtp_port], &[]));
    }

    pub fn stop(&mut self) {
        self.daemon = None; // dropping a Daemon stops it
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("maillog")).unwrap_or_default()
    }
}

/// OpenLDAP's slapd with an mdb database holding the suffix and a probe identity.
pub struct Slapd {
    pub dir: PathBuf,
    pub port: u16,
    daemon: Option<Daemon>,
}

impl Slapd {
    pub fn start(root: &Path) -> Slapd {
        require("/usr/sbin/slapd", "slapd");
        require("/usr/sbin/slapadd", "slapd");
        let dir = root.join("slapd");
        fs::create_dir_all(dir.join("db")).expect("mkdir");
        let s = Slapd { port: free_port(), dir, daemon: None };
        let d = s.dir.display();
        write(
            &s.dir.join("slapd.conf"),
            &format!(
                "include /etc/ldap/schema/core.schema
pidfile {d}/slapd.pid
modulepath /usr/lib/ldap
moduleload back_mdb
database mdb
maxsize 10485760
suffix \"{LDAP_BASE}\"
rootdn \"cn=admin,{LDAP_BASE}\"
directory {d}/db
"
            ),
        );
        write(
            &s.dir.join("base.ldif"),
            &format!(
                "dn: {LDAP_BASE}
objectClass: dcObject
objectClass: organization
dc: example
o: Example

dn: {LDAP_PROBE_DN}
objectClass: person
objectClass: simpleSecurityObject
cn: rollcall-probe
sn: probe
userPassword: {LDAP_PROBE_PASSWORD}
"
            ),
        );
        let out = Command::new("/usr/sbin/slapadd")
            .arg("-f")
            .arg(s.dir.join("slapd.conf"))
            .arg("-l")
            .arg(s.dir.join("base.ldif"))
            .output()
            .expect("run slapadd");
        assert!(out.status.success(), "slapadd failed: {}", String::from_utf8_lossy(&out.stderr));
        let mut s = s;
        s.restart();
        s
    }

    pub fn restart(&mut self) {
        self.stop();
        let mut cmd = Command::new("/usr/sbin/slapd");
        cmd.arg("-f")
            .arg(self.dir.join("slapd.conf"))
            .arg("-h")
            .arg(format!("ldap://127.0.0.1:{}/", self.port))
            .args(["-d", "0"]);
        self.daemon = Some(Daemon::listening("slapd", &mut cmd, &self.dir.join("slapd.out"), &[self.port], &[]));
    }

    pub fn stop(&mut self) {
        self.daemon = None; // dropping a Daemon stops it
    }
}

/// Postfix with a listener behind `postscreen`, as many sites run port 25, and a second
/// plain smtpd; both log under their own names ([`POSTSCREEN_LOG_NAME`],
/// [`SECOND_SMTPD_LOG_NAME`]), so a test reads their sessions apart from the testkit's
/// readiness probe of `postfix.smtp_port`.
pub struct PostscreenPostfix {
    pub postfix: Postfix,
    /// The port where postscreen answers: `220-` at once, the final `220 ` only after
    /// `greet_wait` (a client that talks before it is refused), then the real smtpd.
    pub postscreen_port: u16,
    /// A plain smtpd nobody but the test connects to.
    pub second_smtpd_port: u16,
}

/// The log name of the smtpd behind postscreen (`postfix/behind-postscreen/smtpd[PID]`).
pub const POSTSCREEN_LOG_NAME: &str = "postfix/behind-postscreen";
/// The log name of the second plain smtpd.
pub const SECOND_SMTPD_LOG_NAME: &str = "postfix/second-smtpd";

impl Postfix {
    /// Like [`Postfix::start`] (whose `smtp_port` stays a plain smtpd), plus a postscreen
    /// listener that holds the greeting for `greet_wait` seconds on every new client
    /// (loopback included: its access list is emptied, its pregreet test enforced).
    pub fn start_with_postscreen(root: &Path, lmtp_port: u16, greet_wait_s: u32) -> PostscreenPostfix {
        require("/usr/lib/postfix/sbin/postscreen", "postfix");
        let mut postfix = Postfix::start(root, lmtp_port);
        let (postscreen_port, second_smtpd_port) = (free_port(), free_port());
        let append = |file: &str, text: &str| {
            let path = postfix.dir.join("conf").join(file);
            let old = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            write(&path, &format!("{old}{text}"));
        };
        append(
            "main.cf",
            &format!(
                "postscreen_access_list =
postscreen_greet_action = enforce
postscreen_greet_wait = {greet_wait_s}s
postscreen_dnsbl_sites =
"
            ),
        );
        append(
            "master.cf",
            &format!(
                "127.0.0.1:{postscreen_port} inet n - n - 1 postscreen
smtpd     pass  - - n - - smtpd -o syslog_name={POSTSCREEN_LOG_NAME}
127.0.0.1:{second_smtpd_port} inet n - n - - smtpd -o syslog_name={SECOND_SMTPD_LOG_NAME}
dnsblog   unix  - - n - 0 dnsblog
tlsproxy  unix  - - n - 0 tlsproxy
"
            ),
        );
        postfix.restart();
        // The restart's readiness probe may have met the old master; these ports are the
        // new one's. Watched in /proc/net/tcp: a probe connection would be a log line.
        for port in [postscreen_port, second_smtpd_port] {
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while !listening(port) {
                assert!(std::time::Instant::now() < deadline, "Postfix never listened on {port}:\n{}", postfix.log());
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        PostscreenPostfix { postfix, postscreen_port, second_smtpd_port }
    }
}

/// Whether a socket listens on 127.0.0.1:`port` (from /proc/net/tcp, without connecting).
fn listening(port: u16) -> bool {
    let want = format!("0100007F:{port:04X}");
    fs::read_to_string("/proc/net/tcp").unwrap_or_default().lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.get(1) == Some(&want.as_str()) && f.get(3) == Some(&"0A")
    })
}
