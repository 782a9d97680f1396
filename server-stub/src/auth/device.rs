//! Device keys (issue 12 "a device key the SDK keeps in IndexedDB"; PROTOCOL.md §3.1, §13.15): an
//! ECDSA P-256 key pair a browser generates once (WebCrypto, private key non-extractable) and
//! proves by signing a server nonce. It identifies a device, not a person: it gives the music
//! room's DJ role and the `music-changes` `origin` something that survives reconnects and
//! server restarts in `open` rooms, where nobody signs in. It never admits to an
//! `authenticated` or `token` room ([`super::policy`]).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p3_lanes::core::auth::{device_auth_message, AuthReason, DeviceAuth};
use sha2::{Digest, Sha256};

/// The largest base64url field accepted before decoding (a SEC1 key is 88 characters, a
/// signature 86): bounds the work an attacker's `auth` costs.
const MAX_FIELD_CHARS: usize = 256;

/// The identity id of the SEC1 public key `key`: base64url (no padding) of the first 16 bytes
/// of its SHA-256 (22 characters, 128 bits: collisions need 2^64 work).
pub fn device_id(key: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(&Sha256::digest(key)[..16])
}

fn decode(field: &'static str, value: &str) -> Result<Vec<u8>, (AuthReason, String)> {
    if value.len() > MAX_FIELD_CHARS {
        return Err((AuthReason::Malformed, format!("device {field} too long")));
    }
    URL_SAFE_NO_PAD
        .decode(value.trim_end_matches('='))
        .map_err(|_| {
            (
                AuthReason::Malformed,
                format!("device {field} is not base64url"),
            )
        })
}

/// Checks `auth`'s signature over [`device_auth_message`] of its nonce; returns the device
/// id. The caller consumes the nonce afterwards (a bad signature does not burn it).
///
/// Errors: `malformed` (not base64url, not a P-256 point, not a 64-byte signature),
/// `bad_signature`.
pub fn verify(auth: &DeviceAuth) -> Result<String, (AuthReason, String)> {
    let key = decode("publicKey", &auth.public_key)?;
    let sig = decode("signature", &auth.signature)?;
    let vk = VerifyingKey::from_sec1_bytes(&key).map_err(|_| {
        (
            AuthReason::Malformed,
            "device publicKey is not a SEC1 P-256 point".to_owned(),
        )
    })?;
    let sig = Signature::from_slice(&sig).map_err(|_| {
        (
            AuthReason::Malformed,
            "device signature is not 64 bytes r ‖ s".to_owned(),
        )
    })?;
    vk.verify(device_auth_message(&auth.nonce).as_bytes(), &sig)
        .map_err(|_| {
            (
                AuthReason::BadSignature,
                "device signature does not verify".to_owned(),
            )
        })?;
    // One key, one id: hash the canonical uncompressed encoding whatever form was sent.
    Ok(device_id(vk.to_encoded_point(false).as_bytes()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use p256::ecdsa::signature::Signer;
    use p256::ecdsa::SigningKey;

    /// A device signing `nonce` with the fixed key `seed` (tests only).
    pub(crate) fn signed(seed: u8, nonce: &str) -> DeviceAuth {
        let sk = SigningKey::from_slice(&[seed; 32]).unwrap();
        let sig: Signature = sk.sign(device_auth_message(nonce).as_bytes());
        DeviceAuth {
            public_key: URL_SAFE_NO_PAD
                .encode(sk.verifying_key().to_encoded_point(false).as_bytes()),
            nonce: nonce.to_owned(),
            signature: URL_SAFE_NO_PAD.encode(sig.to_bytes()),
        }
    }

    #[test]
    fn a_signed_nonce_verifies_and_the_id_is_stable() {
        let a = signed(7, "abcdefghijklmnop");
        let id = verify(&a).unwrap();
        assert_eq!(id.len(), 22);
        assert_eq!(verify(&signed(7, "qrstuvwxyz012345")).unwrap(), id);
        assert_ne!(verify(&signed(8, "abcdefghijklmnop")).unwrap(), id);
    }

    #[test]
    fn another_nonce_or_key_or_garbage_is_refused() {
        let mut a = signed(7, "abcdefghijklmnop");
        a.nonce = "abcdefghijklmnoq".into();
        assert_eq!(verify(&a).unwrap_err().0, AuthReason::BadSignature);
        let mut b = signed(7, "abcdefghijklmnop");
        b.public_key = signed(9, "x").public_key;
        assert_eq!(verify(&b).unwrap_err().0, AuthReason::BadSignature);
        let mut c = signed(7, "abcdefghijklmnop");
        c.public_key = "AAAA".into();
        assert_eq!(verify(&c).unwrap_err().0, AuthReason::Malformed);
        c.public_key = "x".repeat(1000);
        assert_eq!(verify(&c).unwrap_err().0, AuthReason::Malformed);
    }
}
