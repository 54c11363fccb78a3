//! Clock orders (SPEC section 4): the poller tells an attendant to correct its clock.
//!
//! Rules it keeps: an order carries typed fields only (the correction, the poller's time,
//! a nonce, the attendant it is meant for); it is signed with the poller's Ed25519 key over
//! the exact bytes of the order text, so nothing can be altered in transit; the attendant
//! verifies the signature before it reads a single field. Keys are written as one line,
//! `ed25519:BASE64`, so they paste into a config file.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

/// The attendant's path for clock orders.
pub const CLOCK_PATH: &str = "/v1/clock";

const KEY_PREFIX: &str = "ed25519:";

/// What the poller orders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockOrder {
    /// The attendant's name (from its compilation): an order for one server is worthless
    /// to every other.
    pub server: String,
    /// Microseconds to add to the attendant's clock (negative: set it back).
    pub correction_us: i64,
    /// The poller's master time when it sent the order.
    #[serde(with = "crate::rfc3339_us")]
    pub poller_time: DateTime<Utc>,
    /// Random, never reused: a recorded order cannot be replayed.
    pub nonce: String,
}

/// The request body of `POST /v1/clock`: the order as text, and its signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedOrder {
    /// The JSON text of a [`ClockOrder`], signed as is.
    pub order: String,
    /// Base64 Ed25519 signature of `order`'s bytes.
    pub signature: String,
}

/// What the attendant did with an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Corrected (slewed or stepped).
    Applied,
    /// Authentic, but against the attendant's own limits (too large, too frequent, NTP).
    Refused,
    /// Not authentic: bad signature, stale, replayed, meant for another server, no key.
    Rejected,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Refused => "refused",
            Outcome::Rejected => "rejected",
        }
    }
}

/// The attendant's answer to an order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClockReply {
    pub outcome: Outcome,
    /// `slew` or `step` when applied.
    #[serde(default)]
    pub method: Option<String>,
    pub correction_ms: f64,
    /// Why, in words an operator can act on.
    pub reason: String,
}

/// Why an order is not authentic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("signature is not valid base64 or has the wrong length")]
    BadSignatureEncoding,
    #[error("signature does not match the poller's public key")]
    BadSignature,
    #[error("order is not a valid clock order: {0}")]
    BadOrder(String),
}

/// Why a key line or key file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("public key must look like \"ed25519:BASE64\" (the line `rollcall keygen` prints)")]
    NotAKeyLine,
    #[error("key is not valid base64")]
    Base64,
    #[error("key has {0} bytes; an Ed25519 key has 32")]
    Length(usize),
    #[error("public key is not a valid Ed25519 point")]
    InvalidPoint,
}

/// Reads a public key line, `ed25519:BASE64`.
pub fn parse_public_key(line: &str) -> Result<VerifyingKey, KeyError> {
    let b64 = line.trim().strip_prefix(KEY_PREFIX).ok_or(KeyError::NotAKeyLine)?;
    let bytes = B64.decode(b64.trim()).map_err(|_| KeyError::Base64)?;
    let arr: [u8; 32] = bytes.as_slice().try_into().map_err(|_| KeyError::Length(bytes.len()))?;
    VerifyingKey::from_bytes(&arr).map_err(|_| KeyError::InvalidPoint)
}

/// Writes a public key as its one-line form.
pub fn public_key_line(key: &VerifyingKey) -> String {
    format!("{KEY_PREFIX}{}", B64.encode(key.as_bytes()))
}

/// Reads a private key file's text (`ed25519:BASE64` of the 32-byte seed).
pub fn parse_signing_key(text: &str) -> Result<SigningKey, KeyError> {
    let b64 = text.trim().strip_prefix(KEY_PREFIX).ok_or(KeyError::NotAKeyLine)?;
    let bytes = B64.decode(b64.trim()).map_err(|_| KeyError::Base64)?;
    let seed: [u8; 32] = bytes.as_slice().try_into().map_err(|_| KeyError::Length(bytes.len()))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// A private key file's text for `seed` (32 random bytes from the caller).
pub fn signing_key_text(seed: [u8; 32]) -> (String, VerifyingKey) {
    let key = SigningKey::from_bytes(&seed);
    (format!("{KEY_PREFIX}{}\n", B64.encode(seed)), key.verifying_key())
}

impl SignedOrder {
    pub fn sign(order: &ClockOrder, key: &SigningKey) -> SignedOrder {
        // Serializing a struct of strings and integers cannot fail.
        let text = serde_json::to_string(order).unwrap_or_default();
        let signature = B64.encode(key.sign(text.as_bytes()).to_bytes());
        SignedOrder { order: text, signature }
    }

    /// Checks the signature, then reads the order.
    pub fn verify(&self, key: &VerifyingKey) -> Result<ClockOrder, VerifyError> {
        let sig = B64.decode(&self.signature).map_err(|_| VerifyError::BadSignatureEncoding)?;
        let sig = Signature::from_slice(&sig).map_err(|_| VerifyError::BadSignatureEncoding)?;
        key.verify(self.order.as_bytes(), &sig).map_err(|_| VerifyError::BadSignature)?;
        serde_json::from_str(&self.order).map_err(|e| VerifyError::BadOrder(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order() -> ClockOrder {
        ClockOrder {
            server: "mail-01".into(),
            correction_us: -45_000_000,
            poller_time: Utc::now(),
            nonce: "00ff".into(),
        }
    }

    #[test]
    fn signed_orders_verify_and_survive_the_wire() {
        let (text, public) = signing_key_text([7; 32]);
        let key = parse_signing_key(&text).unwrap();
        let line = public_key_line(&public);
        assert!(line.starts_with("ed25519:"));
        let signed = SignedOrder::sign(&order(), &key);
        let wire: SignedOrder = serde_json::from_str(&serde_json::to_string(&signed).unwrap()).unwrap();
        let got = wire.verify(&parse_public_key(&line).unwrap()).unwrap();
        assert_eq!(got.correction_us, -45_000_000);
    }

    #[test]
    fn another_key_or_a_changed_order_is_rejected() {
        let a = SigningKey::from_bytes(&[1; 32]);
        let b = SigningKey::from_bytes(&[2; 32]);
        let signed = SignedOrder::sign(&order(), &b);
        assert_eq!(signed.verify(&a.verifying_key()), Err(VerifyError::BadSignature));
        let mut tampered = SignedOrder::sign(&order(), &a);
        tampered.order = tampered.order.replace("-45000000", "-4500000000");
        assert_eq!(tampered.verify(&a.verifying_key()), Err(VerifyError::BadSignature));
        let garbage = SignedOrder { order: "{}".into(), signature: "!!".into() };
        assert_eq!(garbage.verify(&a.verifying_key()), Err(VerifyError::BadSignatureEncoding));
    }

    #[test]
    fn key_lines_fail_clearly() {
        assert_eq!(parse_public_key("ssh-ed25519 AAAA"), Err(KeyError::NotAKeyLine));
        assert_eq!(parse_public_key("ed25519:***"), Err(KeyError::Base64));
        assert_eq!(parse_public_key("ed25519:AAAA"), Err(KeyError::Length(3)));
    }

    #[test]
    fn unknown_order_fields_are_refused_even_when_signed() {
        let key = SigningKey::from_bytes(&[3; 32]);
        let text =
            r#"{"server":"a","correction_us":1,"poller_time":"2026-01-01T00:00:00Z","nonce":"n","exec":"rm -rf /"}"#;
        let signed = SignedOrder { order: text.into(), signature: B64.encode(key.sign(text.as_bytes()).to_bytes()) };
        assert!(matches!(signed.verify(&key.verifying_key()), Err(VerifyError::BadOrder(_))));
    }
}
