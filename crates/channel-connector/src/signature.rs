//! `X-Hub-Signature-256`: HMAC-SHA256 of the raw request body with the app secret.

use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::Sha256;

/// Why a signature was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No header.
    #[error("missing X-Hub-Signature-256 header")]
    Missing,
    /// Not `sha256=<64 hex>`.
    #[error("malformed X-Hub-Signature-256 header")]
    Malformed,
    /// The HMAC does not match.
    #[error("signature does not match")]
    Mismatch,
}

/// `sha256=<hex>` for `body` under `secret` (what the provider sends; used by the simulator).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256>>::new_from_slice(secret).unwrap_or_else(|_| {
        // HMAC accepts keys of any length; this cannot happen.
        <Hmac<Sha256>>::new_from_slice(b"").unwrap_or_else(|_| unreachable!())
    });
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Whether `a` and `b` are equal, in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0_u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Check `header` against the raw `body`, in constant time.
pub fn verify(secret: &[u8], body: &[u8], header: Option<&str>) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let hex_sig = header
        .trim()
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Malformed)?;
    let given = hex::decode(hex_sig).map_err(|_| SignatureError::Malformed)?;
    if given.len() != 32 {
        return Err(SignatureError::Malformed);
    }
    let mut mac = <Hmac<Sha256>>::new_from_slice(secret).map_err(|_| SignatureError::Mismatch)?;
    mac.update(body);
    mac.verify_slice(&given)
        .map_err(|_| SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_signature_verifies_and_a_changed_byte_does_not() {
        let body = br#"{"object":"whatsapp_business_account","entry":[]}"#;
        let sig = sign(b"app-secret", body);
        assert_eq!(verify(b"app-secret", body, Some(&sig)), Ok(()));
        let mut changed = body.to_vec();
        changed[5] ^= 1;
        assert_eq!(
            verify(b"app-secret", &changed, Some(&sig)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"other", body, Some(&sig)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"app-secret", body, None),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify(b"app-secret", body, Some("sha1=abc")),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(b"app-secret", body, Some("sha256=zz")),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn known_vector() {
        // echo -n 'hello' | openssl dgst -sha256 -hmac 'key'
        assert_eq!(
            sign(b"key", b"hello"),
            "sha256=9307b3b915efb5171ff14d8cb55fbcc798c6c0ef1456d66ded1a6aa723a58b7b"
        );
    }

    proptest! {
        #[test]
        fn verify_never_panics(header in "\\PC{0,100}", body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = verify(b"s", &body, Some(&header));
        }
    }
}
