//! Long-term credential checks (RFC 8489 §9.2) with TURN REST API usernames, and stateless
//! nonces.
//!
//! A nonce is `<issue second, hex><tag, hex>` where the tag is an HMAC of the issue second and
//! the client's 5-tuple (its address and the relay address it sent to) under a key derived
//! from the relay's seed and secret. Checking one needs no table (so a flood of
//! unauthenticated requests costs no memory), is deterministic for a seed, a nonce older than
//! the configured lifetime is stale (438), and so is a nonce issued to another 5-tuple: one
//! sniffed off the wire is worth nothing from elsewhere.

use std::{net::SocketAddr, time::Duration};

use hmac::{Hmac, Mac};
use proto::{
    credentials::{self, CredentialError},
    stun::{LongTermKey, Message, MessageIntegrity, Nonce, Realm, Username},
};
use sha1::Sha1;

const TAG_HEX_LEN: usize = 16;
const SECOND_HEX_LEN: usize = 16;

#[derive(Debug, Clone)]
pub(crate) struct NonceKey {
    key: [u8; 20],
    lifetime: Duration,
}

fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> [u8; 20] {
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

impl NonceKey {
    pub(crate) fn new(seed: u64, shared_secret: &[u8], lifetime: Duration) -> Self {
        Self {
            key: hmac_sha1(shared_secret, &[b"nonce", &seed.to_be_bytes()]),
            lifetime,
        }
    }

    fn tag(&self, second: u64, client: SocketAddr, server: SocketAddr) -> u64 {
        let digest = hmac_sha1(
            &self.key,
            &[
                &second.to_be_bytes(),
                client.to_string().as_bytes(),
                b"/",
                server.to_string().as_bytes(),
            ],
        );
        u64::from_be_bytes(digest[..8].try_into().unwrap_or([0; 8]))
    }

    /// A nonce issued at `second` (seconds since the relay started) to the 5-tuple of
    /// `client` and `server`.
    pub(crate) fn issue(&self, second: u64, client: SocketAddr, server: SocketAddr) -> String {
        format!("{second:016x}{:016x}", self.tag(second, client, server))
    }

    /// Whether `nonce` was issued by this relay to this 5-tuple no longer than the nonce
    /// lifetime ago.
    pub(crate) fn is_fresh(
        &self,
        nonce: &str,
        now_second: u64,
        (client, server): (SocketAddr, SocketAddr),
    ) -> bool {
        if nonce.len() != SECOND_HEX_LEN + TAG_HEX_LEN || !nonce.is_ascii() {
            return false;
        }
        let (second, tag) = nonce.split_at(SECOND_HEX_LEN);
        let (Ok(second), Ok(tag)) = (
            u64::from_str_radix(second, 16),
            u64::from_str_radix(tag, 16),
        ) else {
            return false;
        };
        tag == self.tag(second, client, server)
            && second <= now_second
            && now_second - second < self.lifetime.as_secs()
    }
}

/// Why a request's credentials were not accepted, mapped to the RFC error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AuthFailure {
    /// No MESSAGE-INTEGRITY: the first request of every client (401 with realm and nonce).
    Challenge,
    /// MESSAGE-INTEGRITY without USERNAME, REALM or NONCE (400).
    MissingAttributes,
    /// Unknown or expired nonce (438 with a fresh nonce).
    StaleNonce,
    /// Malformed or expired username, or a wrong password (401).
    BadCredentials(String),
}

/// Checks the long-term credentials of `request`, returning the key to sign the response with.
pub(crate) fn authenticate(
    (request, datagram): (&Message, &[u8]),
    realm: &str,
    shared_secret: &[u8],
    (nonces, client, server): (&NonceKey, SocketAddr, SocketAddr),
    now_second: u64,
    now_unix: u64,
) -> Result<LongTermKey, AuthFailure> {
    if request.get_attribute::<MessageIntegrity>().is_none() {
        return Err(AuthFailure::Challenge);
    }
    let (Some(username), Some(request_realm), Some(nonce)) = (
        request.get_attribute::<Username>(),
        request.get_attribute::<Realm>(),
        request.get_attribute::<Nonce>(),
    ) else {
        return Err(AuthFailure::MissingAttributes);
    };
    if !nonces.is_fresh(nonce.value(), now_second, (client, server)) {
        return Err(AuthFailure::StaleNonce);
    }
    if request_realm.text() != realm {
        return Err(AuthFailure::BadCredentials(format!(
            "realm `{}` is not `{realm}`",
            request_realm.text()
        )));
    }
    let password = credentials::expected_password(shared_secret, username.name(), now_unix)
        .map_err(|error: CredentialError| AuthFailure::BadCredentials(error.to_string()))?;
    let key = LongTermKey {
        username: username.clone(),
        realm: request_realm.clone(),
        password,
    };
    if !key.verifies_datagram(datagram) {
        return Err(AuthFailure::BadCredentials(format!(
            "MESSAGE-INTEGRITY does not match the password of `{}`",
            username.name()
        )));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_are_fresh_for_their_lifetime_their_5_tuple_and_unforgeable() {
        let client: SocketAddr = "198.51.100.7:40000".parse().unwrap();
        let server: SocketAddr = "203.0.113.1:3478".parse().unwrap();
        let path = (client, server);
        let key = NonceKey::new(7, b"secret", Duration::from_secs(3600));
        let nonce = key.issue(100, client, server);
        assert!(key.is_fresh(&nonce, 100, path));
        assert!(key.is_fresh(&nonce, 3699, path));
        assert!(
            !key.is_fresh(&nonce, 3700, path),
            "stale after the lifetime"
        );
        assert!(!key.is_fresh(&nonce, 99, path), "not issued in the future");
        let elsewhere: SocketAddr = "198.51.100.7:40001".parse().unwrap();
        assert!(
            !key.is_fresh(&nonce, 100, (elsewhere, server)),
            "another client port"
        );
        let other_server: SocketAddr = "[2001:db8::1]:3478".parse().unwrap();
        assert!(
            !key.is_fresh(&nonce, 100, (client, other_server)),
            "another relay address"
        );
        let mut forged = nonce.clone().into_bytes();
        forged[31] = if forged[31] == b'0' { b'1' } else { b'0' };
        assert!(!key.is_fresh(&String::from_utf8(forged).expect("hex"), 100, path));
        let other_relay = NonceKey::new(8, b"secret", Duration::from_secs(3600));
        assert!(!other_relay.is_fresh(&nonce, 100, path));
        assert!(!key.is_fresh("short", 100, path));
        assert!(!key.is_fresh("ééééééééééééééé", 100, path));
    }
}
