//! SCRAM-SHA-256 (RFC 5802, RFC 7677) on the server side, over stored
//! verifiers in PostgreSQL's format:
//!
//! ```text
//! SCRAM-SHA-256$<iterations>:<salt, base64>$<StoredKey, base64>:<ServerKey, base64>
//! ```
//!
//! The gateway keeps only the verifier (what `pg_authid.rolpassword` holds in
//! PostgreSQL): StoredKey = H(ClientKey) lets it check a client's proof, and
//! ServerKey lets it prove itself to the client, but neither lets anyone log
//! in as the analyst. A verifier from PostgreSQL (`SELECT rolpassword FROM
//! pg_authid`) works unchanged, and `dpq analyst add` writes the same format.
//!
//! An unknown analyst goes through the same exchange, with a salt derived from
//! a per-process secret and the name (so it is stable across attempts, as a
//! real one is), and fails at the same step with the same message as a wrong
//! password: the gateway does not reveal who has an account.
//!
//! Channel binding (SCRAM-SHA-256-PLUS) is not offered: clients that insist
//! on it are refused; with TLS, the server's certificate authenticates it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::{digest, hmac, pbkdf2, rand::SecureRandom};

/// PostgreSQL's default iteration count.
pub const ITERATIONS: u32 = 4096;
pub const MECHANISM: &str = "SCRAM-SHA-256";

/// A stored SCRAM-SHA-256 verifier.
#[derive(Clone, PartialEq, Eq)]
pub struct Verifier {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("iterations", &self.iterations).finish_non_exhaustive()
    }
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut out = [0u8; 32];
    out.copy_from_slice(hmac::sign(&k, msg).as_ref());
    out
}

fn sha256(b: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, b).as_ref());
    out
}

/// SASLprep the password as PostgreSQL does: a password that is not valid
/// under SASLprep is used as its raw bytes.
fn prepared(password: &str) -> Vec<u8> {
    match stringprep::saslprep(password) {
        Ok(p) => p.as_bytes().to_vec(),
        Err(_) => password.as_bytes().to_vec(),
    }
}

impl Verifier {
    /// A verifier for `password` with a fresh random salt.
    pub fn new(password: &str) -> Verifier {
        let mut salt = vec![0u8; 16];
        ring::rand::SystemRandom::new().fill(&mut salt).expect("the system's random source");
        Verifier::with_salt(password, &salt, ITERATIONS)
    }

    pub fn with_salt(password: &str, salt: &[u8], iterations: u32) -> Verifier {
        let mut salted = [0u8; 32];
        pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, std::num::NonZeroU32::new(iterations.max(1)).unwrap(), salt, &prepared(password), &mut salted);
        let client_key = hmac_sha256(&salted, b"Client Key");
        Verifier { iterations, salt: salt.to_vec(), stored_key: sha256(&client_key), server_key: hmac_sha256(&salted, b"Server Key") }
    }

    /// PostgreSQL's text form.
    pub fn to_text(&self) -> String {
        format!("{MECHANISM}${}:{}${}:{}", self.iterations, B64.encode(&self.salt), B64.encode(self.stored_key), B64.encode(self.server_key))
    }

    pub fn parse(text: &str) -> Result<Verifier, String> {
        let bad = || format!("not a SCRAM-SHA-256 verifier (expected {MECHANISM}$<iterations>:<salt>$<StoredKey>:<ServerKey>)");
        let rest = text.strip_prefix(&format!("{MECHANISM}$")).ok_or_else(bad)?;
        let (params, keys) = rest.split_once('$').ok_or_else(bad)?;
        let (iter, salt) = params.split_once(':').ok_or_else(bad)?;
        let (stored, server) = keys.split_once(':').ok_or_else(bad)?;
        let iterations: u32 = iter.parse().map_err(|_| bad())?;
        if iterations == 0 {
            return Err(bad());
        }
        let salt = B64.decode(salt).map_err(|_| bad())?;
        let key = |s: &str| -> Result<[u8; 32], String> { B64.decode(s).ok().and_then(|v| <[u8; 32]>::try_from(v).ok()).ok_or_else(bad) };
        Ok(Verifier { iterations, salt, stored_key: key(stored)?, server_key: key(server)? })
    }
}

/// Why an exchange failed (the client only ever sees one message for all of these).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// A malformed or unsupported message (a protocol violation).
    Protocol(String),
    /// Unknown analyst or wrong password.
    Rejected,
}

/// The server's side of one exchange.
#[derive(Debug)]
pub struct Exchange {
    /// `None` for an unknown analyst: the exchange runs on a decoy and fails.
    verifier: Option<Verifier>,
    decoy: Verifier,
    client_first_bare: String,
    server_first: String,
    nonce: String,
    gs2_header: String,
}

fn attr(part: &str, name: char) -> Option<&str> {
    part.strip_prefix(name).and_then(|r| r.strip_prefix('='))
}

impl Exchange {
    /// Begin with the client's first message; returns the exchange and the
    /// server-first message. `decoy_salt` must be stable per name (the gateway
    /// derives it from a secret and the name).
    pub fn start(verifier: Option<Verifier>, decoy_salt: &[u8], client_first: &[u8]) -> Result<(Exchange, String), Failure> {
        let text = std::str::from_utf8(client_first).map_err(|_| Failure::Protocol("the SCRAM message is not UTF-8".into()))?;
        // gs2-header: cbind-flag "," [authzid] ","
        let mut it = text.splitn(3, ',');
        let (flag, authzid, bare) = match (it.next(), it.next(), it.next()) {
            (Some(f), Some(a), Some(b)) => (f, a, b),
            _ => return Err(Failure::Protocol("malformed SCRAM client-first message".into())),
        };
        match flag {
            "n" | "y" => {}
            f if f.starts_with("p=") => return Err(Failure::Protocol("channel binding (SCRAM-SHA-256-PLUS) is not offered by this server".into())),
            _ => return Err(Failure::Protocol("malformed SCRAM client-first message".into())),
        }
        if !authzid.is_empty() {
            return Err(Failure::Protocol("SCRAM authorization identities are not supported".into()));
        }
        let mut client_nonce = None;
        for part in bare.split(',') {
            if part.as_bytes().get(1) != Some(&b'=') {
                return Err(Failure::Protocol("malformed SCRAM client-first message".into()));
            }
            if let Some(r) = attr(part, 'r') {
                client_nonce = Some(r);
            } else if part.starts_with("m=") {
                return Err(Failure::Protocol("SCRAM extensions are not supported".into()));
            }
        }
        let client_nonce = client_nonce.filter(|n| !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b','));
        let client_nonce = client_nonce.ok_or_else(|| Failure::Protocol("the SCRAM client nonce is missing or malformed".into()))?;
        let mut server_nonce = [0u8; 18];
        ring::rand::SystemRandom::new().fill(&mut server_nonce).map_err(|_| Failure::Protocol("no randomness".into()))?;
        let nonce = format!("{client_nonce}{}", B64.encode(server_nonce));
        let decoy = Verifier { iterations: ITERATIONS, salt: decoy_salt.to_vec(), stored_key: [0; 32], server_key: [0; 32] };
        let shown = verifier.as_ref().unwrap_or(&decoy);
        let server_first = format!("r={nonce},s={},i={}", B64.encode(&shown.salt), shown.iterations);
        let gs2_header = format!("{flag},{authzid},");
        Ok((Exchange { verifier, decoy, client_first_bare: bare.to_string(), server_first: server_first.clone(), nonce, gs2_header }, server_first))
    }

    /// Check the client's final message; on success returns the server-final
    /// message (`v=…`) proving the server knew the verifier.
    pub fn finish(&self, client_final: &[u8]) -> Result<String, Failure> {
        let text = std::str::from_utf8(client_final).map_err(|_| Failure::Protocol("the SCRAM message is not UTF-8".into()))?;
        let (without_proof, proof) = text.rsplit_once(",p=").ok_or_else(|| Failure::Protocol("the SCRAM client proof is missing".into()))?;
        let mut binding = None;
        let mut nonce = None;
        for part in without_proof.split(',') {
            if let Some(c) = attr(part, 'c') {
                binding = Some(c);
            } else if let Some(r) = attr(part, 'r') {
                nonce = Some(r);
            }
        }
        if binding != Some(B64.encode(self.gs2_header.as_bytes()).as_str()) {
            return Err(Failure::Protocol("SCRAM channel binding does not match".into()));
        }
        if nonce != Some(self.nonce.as_str()) {
            return Err(Failure::Protocol("the SCRAM nonce does not match".into()));
        }
        let proof = B64.decode(proof).map_err(|_| Failure::Protocol("the SCRAM client proof is not base64".into()))?;
        let auth_message = format!("{},{},{without_proof}", self.client_first_bare, self.server_first);
        let v = self.verifier.as_ref().unwrap_or(&self.decoy);
        let signature = hmac_sha256(&v.stored_key, auth_message.as_bytes());
        let ok = proof.len() == 32 && {
            let client_key: Vec<u8> = proof.iter().zip(signature.iter()).map(|(a, b)| a ^ b).collect();
            // constant time: the comparison does not reveal how much matched
            constant_time_eq(&sha256(&client_key), &v.stored_key)
        };
        if !ok || self.verifier.is_none() {
            return Err(Failure::Rejected);
        }
        Ok(format!("v={}", B64.encode(hmac_sha256(&v.server_key, auth_message.as_bytes()))))
    }
}

/// Equality that reads every byte whatever differs.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut d = 0u8;
    for i in 0..32 {
        d |= a[i] ^ b[i];
    }
    std::hint::black_box(d) == 0
}

/// The decoy salt for an unknown name: stable per (secret, name), like a real one.
pub fn decoy_salt(secret: &[u8; 32], name: &str) -> Vec<u8> {
    hmac_sha256(secret, name.as_bytes())[..16].to_vec()
}

/// The client's side (for tests): the messages a client sends for `password`.
#[cfg(test)]
pub mod client {
    use super::*;

    pub struct Client {
        pub password: String,
        pub nonce: String,
        pub first_bare: String,
    }

    impl Client {
        pub fn new(password: &str) -> Client {
            let nonce = "rOprNGfwEbeRWgbNEkqO".to_string();
            Client { password: password.into(), first_bare: format!("n=,r={nonce}"), nonce }
        }
        pub fn first(&self) -> String {
            format!("n,,{}", self.first_bare)
        }
        /// The final message and the expected server signature.
        pub fn final_message(&self, server_first: &str) -> (String, String) {
            let get = |k: char| server_first.split(',').find_map(|p| attr(p, k)).unwrap().to_string();
            let (r, s, i) = (get('r'), get('s'), get('i'));
            let v = Verifier::with_salt(&self.password, &B64.decode(s).unwrap(), i.parse().unwrap());
            let without_proof = format!("c={},r={r}", B64.encode("n,,"));
            let auth = format!("{},{server_first},{without_proof}", self.first_bare);
            let mut salted = [0u8; 32];
            pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, std::num::NonZeroU32::new(i.parse().unwrap()).unwrap(), &v.salt, &prepared(&self.password), &mut salted);
            let client_key = hmac_sha256(&salted, b"Client Key");
            let sig = hmac_sha256(&sha256(&client_key), auth.as_bytes());
            let proof: Vec<u8> = client_key.iter().zip(sig.iter()).map(|(a, b)| a ^ b).collect();
            let server_sig = hmac_sha256(&v.server_key, auth.as_bytes());
            (format!("{without_proof},p={}", B64.encode(proof)), format!("v={}", B64.encode(server_sig)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::client::Client;
    use super::*;

    /// RFC 7677's test vector: user "user", password "pencil", 4096 iterations.
    #[test]
    fn rfc7677_vector() {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let v = Verifier::with_salt("pencil", &salt, 4096);
        let client_first_bare = "n=user,r=rOprNGfwEbeRWgbNEkqO";
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let without_proof = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let ex = Exchange {
            verifier: Some(v.clone()),
            decoy: v.clone(),
            client_first_bare: client_first_bare.into(),
            server_first: server_first.into(),
            nonce: "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into(),
            gs2_header: "n,,".into(),
        };
        let fin = ex.finish(format!("{without_proof},p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=").as_bytes()).unwrap();
        assert_eq!(fin, "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
        // the text form round-trips
        assert_eq!(Verifier::parse(&v.to_text()).unwrap(), v);
    }

    #[test]
    fn right_password_passes_and_wrong_or_unknown_fail_alike() {
        let v = Verifier::new("correct horse");
        let secret = [7u8; 32];
        for (verifier, password, ok) in [(Some(v.clone()), "correct horse", true), (Some(v.clone()), "wrong", false), (None, "correct horse", false)] {
            let c = Client::new(password);
            let (ex, server_first) = Exchange::start(verifier.clone(), &decoy_salt(&secret, "x"), c.first().as_bytes()).unwrap();
            assert!(server_first.contains(",i=4096"), "{server_first}");
            let (fin, expected) = c.final_message(&server_first);
            match ex.finish(fin.as_bytes()) {
                Ok(sig) => {
                    assert!(ok);
                    assert_eq!(sig, expected, "the server proves it knows the verifier");
                }
                Err(e) => {
                    assert!(!ok);
                    assert_eq!(e, Failure::Rejected, "wrong password and unknown name fail the same way");
                }
            }
        }
        // an unknown name's salt is stable per name, as a real one is
        assert_eq!(decoy_salt(&secret, "x"), decoy_salt(&secret, "x"));
        assert_ne!(decoy_salt(&secret, "x"), decoy_salt(&secret, "y"));
    }

    #[test]
    fn malformed_messages_are_protocol_errors() {
        let v = Verifier::new("pw");
        for first in ["", "x,,n=,r=abc", "p=tls-server-end-point,,n=,r=abc", "n,a=bob,n=,r=abc", "n,,n=", "n,,n=,r=a,b"] {
            assert!(matches!(Exchange::start(Some(v.clone()), &[0; 16], first.as_bytes()), Err(Failure::Protocol(_))), "{first}");
        }
        let c = Client::new("pw");
        let (ex, sf) = Exchange::start(Some(v.clone()), &[0; 16], c.first().as_bytes()).unwrap();
        let (fin, _) = c.final_message(&sf);
        assert!(matches!(ex.finish(fin.replace("r=", "r=X").as_bytes()), Err(Failure::Protocol(_))), "a changed nonce");
        assert!(matches!(ex.finish(b"c=biws,r=x"), Err(Failure::Protocol(_))));
        assert!(Verifier::parse("md5abc").is_err());
        assert!(Verifier::parse("SCRAM-SHA-256$0:AAAA$AAAA:AAAA").is_err());
    }
}
