//! A throwaway certificate authority for the TLS tests, made by rcgen in the test: a CA
//! and certificates it signs, written as PEM files into the test's temp dir.
//!
//! Rules: every certificate names `localhost` and `127.0.0.1` (the tests serve on
//! loopback) and may serve and authenticate clients; nothing is kept beyond the dir.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

/// A CA whose certificate is `ca_file`; [`Pki::issue`] writes certificates it signs.
pub struct Pki {
    dir: PathBuf,
    name: String,
    issuer: Issuer<'static, KeyPair>,
    /// The CA's certificate (PEM): what a peer trusts.
    pub ca_file: PathBuf,
}

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// How long an issued certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// From a year ago to a year ahead.
    Current,
    /// Expired a year ago.
    Expired,
}

impl Pki {
    /// A new CA named `name`, its certificate written to `dir/NAME-ca.pem`.
    pub fn new(dir: &Path, name: &str) -> Pki {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, format!("{name} test CA"));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let cert = params.self_signed(&key).expect("self-signed CA");
        let ca_file = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&ca_file, cert.pem()).expect("write CA");
        Pki { dir: dir.to_owned(), name: name.to_owned(), issuer: Issuer::new(params, key), ca_file }
    }

    /// A certificate for `who` (valid as `validity` says), written to `dir/CA-WHO.pem` and
    /// `dir/CA-WHO.key`.
    pub fn issue(&self, who: &str, validity: Validity) -> Issued {
        let key = KeyPair::generate().expect("key");
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).expect("params");
        params.distinguished_name.push(DnType::CommonName, who);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let now = time_now_year();
        (params.not_before, params.not_after) = match validity {
            Validity::Current => (rcgen::date_time_ymd(now - 1, 1, 1), rcgen::date_time_ymd(now + 1, 12, 31)),
            Validity::Expired => (rcgen::date_time_ymd(now - 3, 1, 1), rcgen::date_time_ymd(now - 1, 1, 1)),
        };
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        let issued = Issued {
            cert_file: self.dir.join(format!("{}-{who}.pem", self.name)),
            key_file: self.dir.join(format!("{}-{who}.key", self.name)),
        };
        std::fs::write(&issued.cert_file, cert.pem()).expect("write certificate");
        std::fs::write(&issued.key_file, key.serialize_pem()).expect("write key");
        issued
    }
}

/// This year, from the system clock (tests never change it).
fn time_now_year() -> i32 {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    1970 + (secs / 31_556_952) as i32
}
