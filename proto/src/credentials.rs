//! Long-term TURN credentials in the TURN REST API convention shared by standard servers and
//! clients: the username is `"<expiry-unix>:<id>"`, and the password is
//! `base64(HMAC-SHA1(shared secret, username))`, so a relay can check any username without a
//! user database, and a username stops working at its expiry time.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// A username and its password, as a client uses them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("username `{0}` is not `<expiry-unix>:<id>`")]
    Malformed(String),
    #[error("username `{username}` expired at {expiry} (now {now})")]
    Expired {
        username: String,
        expiry: u64,
        now: u64,
    },
}

/// The password for `username` under `shared_secret`.
pub fn rest_api_password(shared_secret: &[u8], username: &str) -> String {
    // HMAC accepts keys of any length; `new_from_slice` only fails for fixed-size-key MACs.
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(shared_secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Credentials for `id`, valid until `expiry_unix`.
pub fn rest_api_credentials(shared_secret: &[u8], expiry_unix: u64, id: &str) -> Credentials {
    let username = format!("{expiry_unix}:{id}");
    let password = rest_api_password(shared_secret, &username);
    Credentials { username, password }
}

/// The expiry time (Unix seconds) a username carries.
pub fn username_expiry(username: &str) -> Result<u64, CredentialError> {
    let (expiry, _id) = username
        .split_once(':')
        .ok_or_else(|| CredentialError::Malformed(username.to_owned()))?;
    expiry
        .parse()
        .map_err(|_| CredentialError::Malformed(username.to_owned()))
}

/// Checks that `username` is well formed and not expired at `now_unix`, and returns the
/// password the relay expects for it.
pub fn expected_password(
    shared_secret: &[u8],
    username: &str,
    now_unix: u64,
) -> Result<String, CredentialError> {
    let expiry = username_expiry(username)?;
    if expiry <= now_unix {
        return Err(CredentialError::Expired {
            username: username.to_owned(),
            expiry,
            now: now_unix,
        });
    }
    Ok(rest_api_password(shared_secret, username))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_matches_an_independent_hmac_sha1() {
        // HMAC-SHA1(key="key", "The quick brown fox jumps over the lazy dog") from RFC 2104's
        // widely published example: de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9.
        let expected = base64::engine::general_purpose::STANDARD.encode([
            0xde, 0x7c, 0x9b, 0x85, 0xb8, 0xb7, 0x8a, 0xa6, 0xbc, 0x8a, 0x7a, 0x36, 0xf7, 0x0a,
            0x90, 0x70, 0x1c, 0x9d, 0xb4, 0xd9,
        ]);
        assert_eq!(
            rest_api_password(b"key", "The quick brown fox jumps over the lazy dog"),
            expected
        );
    }

    #[test]
    fn expiry_is_enforced_and_malformed_names_rejected() {
        let creds = rest_api_credentials(b"secret", 1_000, "client-1");
        assert_eq!(creds.username, "1000:client-1");
        assert_eq!(
            expected_password(b"secret", &creds.username, 999).as_deref(),
            Ok(creds.password.as_str())
        );
        assert!(matches!(
            expected_password(b"secret", &creds.username, 1_000),
            Err(CredentialError::Expired { expiry: 1_000, .. })
        ));
        assert!(matches!(
            expected_password(b"secret", "client-1", 0),
            Err(CredentialError::Malformed(_))
        ));
        assert!(matches!(
            expected_password(b"secret", "soon:client-1", 0),
            Err(CredentialError::Malformed(_))
        ));
    }
}
