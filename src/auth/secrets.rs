//! HMAC signing secrets (Datafly dialect): `sk_` + 48 lowercase hex characters (192 bits).
//!
//! The server must recompute each request's MAC, so a secret cannot be stored as a hash like
//! a server key. It is stored **sealed**: AES-256-GCM with a random 96-bit nonce per seal,
//! under a 256-bit key kept in the file [`KEY_FILE`] of the data dir (created owner-only,
//! `0600`, never inside the database). The secret's id is the AEAD's associated data, so a
//! sealed value copied onto another secret's record does not open. A copy of the database
//! alone reveals no secret; keep the key file with your backups.
//!
//! Request verification: `X-Signature: sha256=<hex>` is HMAC-SHA256(secret,
//! `X-Timestamp + "." + body`), computed over the parts and compared in constant time
//! (`subtle`, see [`crate::auth`]); the MAC of two secrets is compared by `ring::hmac::verify`.

use crate::event::hex;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hmac;
use std::io::{Read, Write};
use std::path::Path;
use subtle::ConstantTimeEq;

pub const PREFIX: &str = "sk_";
const HEX_LEN: usize = 48;
/// The sealing key's file inside the data dir.
pub const KEY_FILE: &str = "secrets.key";
const KEY_LEN: usize = 32;
pub use crate::dialect::datafly::WINDOW_MS;

/// Makes a new random secret.
pub fn mint() -> String {
    let mut bytes = [0u8; HEX_LEN / 2];
    rand::fill(&mut bytes[..]);
    format!("{PREFIX}{}", hex(&bytes))
}

/// Seals and opens secrets with the data dir's key.
#[derive(Clone)]
pub struct Sealer {
    key: LessSafeKey,
}

impl Sealer {
    /// Loads the key file of `data_dir`, creating it (mode 0600, exclusively) when absent.
    pub fn load_or_create(data_dir: &Path) -> std::io::Result<Sealer> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = data_dir.join(KEY_FILE);
        let mut key = [0u8; KEY_LEN];
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(mut f) => {
                rand::fill(&mut key[..]);
                f.write_all(&key)?;
                f.sync_all()?;
                // Minted by a command run as root: the service's user (the data dir's owner)
                // must still read it. Only root may give a file away.
                use std::os::unix::fs::MetadataExt;
                if let Ok(owner) = std::fs::metadata(data_dir) {
                    let _ = std::os::unix::fs::chown(&path, Some(owner.uid()), Some(owner.gid()));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Sealer::load(data_dir)?
                    .ok_or_else(|| std::io::Error::other(format!("{} vanished", path.display())));
            }
            Err(e) => return Err(e),
        }
        Ok(Sealer::from_key(&key))
    }

    /// Loads the key file of `data_dir`; `None` when there is none (no secret was minted).
    pub fn load(data_dir: &Path) -> std::io::Result<Option<Sealer>> {
        let path = data_dir.join(KEY_FILE);
        let mut f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut key = Vec::new();
        f.read_to_end(&mut key)?;
        if key.len() != KEY_LEN {
            return Err(std::io::Error::other(format!(
                "{} must hold {KEY_LEN} bytes, it holds {}",
                path.display(),
                key.len()
            )));
        }
        Ok(Some(Sealer::from_key(&key)))
    }

    fn from_key(key: &[u8]) -> Sealer {
        let unbound = UnboundKey::new(&AES_256_GCM, key).expect("32-byte AES-256 key");
        Sealer {
            key: LessSafeKey::new(unbound),
        }
    }

    /// Seals `secret` for the secret record `id`: nonce ++ ciphertext ++ tag.
    pub fn seal(&self, id: u32, secret: &str) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::fill(&mut nonce[..]);
        let mut buf = secret.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(id)),
                &mut buf,
            )
            .expect("sealing a short secret cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        out
    }

    /// Opens what [`Sealer::seal`] made for `id`; `None` if it was altered, sealed for
    /// another id, or with another key.
    pub fn open(&self, id: u32, sealed: &[u8]) -> Option<String> {
        if sealed.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = ct.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(aad(id)), &mut buf)
            .ok()?;
        String::from_utf8(plain.to_vec()).ok()
    }
}

fn aad(id: u32) -> [u8; 17] {
    let mut a = *b"inlet-secret:\0\0\0\0";
    a[13..].copy_from_slice(&id.to_be_bytes());
    a
}

pub use crate::dialect::datafly::parse_signature;

/// A secret ready to verify requests with.
pub struct Verifier(hmac::Key);

impl Verifier {
    pub fn new(secret: &str) -> Verifier {
        Verifier(hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()))
    }

    /// Whether `mac` is the HMAC-SHA256 of `timestamp + "." + body` (constant-time).
    pub fn verify(&self, timestamp: &str, body: &[u8], mac: &[u8]) -> bool {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(timestamp.as_bytes());
        ctx.update(b".");
        ctx.update(body);
        let expected = ctx.sign();
        bool::from(expected.as_ref().ct_eq(mac))
    }

    /// Whether `secret` is this verifier's secret (compared through a MAC of a fixed text,
    /// in constant time).
    pub fn is(&self, secret: &str) -> bool {
        const PROBE: &[u8] = b"inlet: which secret is this";
        let theirs = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()), PROBE);
        hmac::verify(&self.0, PROBE, theirs.as_ref()).is_ok()
    }
}

/// The header value a client sends: `sha256=` + hex HMAC-SHA256(secret, `ts.body`).
pub fn sign(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(timestamp.as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("sha256={}", hex(ctx.sign().as_ref()))
}

/// Parses a grace period: a number with a unit `s`, `m`, `h` or `d` (`24h`, `90s`, `0s`),
/// or a plain number of seconds. Returns milliseconds.
pub fn parse_duration_ms(text: &str) -> Option<u64> {
    let t = text.trim();
    let (num, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: u64 = num.parse().ok()?;
    let factor = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_secrets_have_the_documented_shape() {
        let s = mint();
        assert_eq!(s.len(), 51);
        assert!(s.starts_with("sk_"));
        assert!(
            s[3..]
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_ne!(mint(), s);
    }

    #[test]
    fn seals_and_opens_only_with_the_same_key_and_id() {
        let dir = tempfile::tempdir().unwrap();
        let sealer = Sealer::load_or_create(dir.path()).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let secret = mint();
        let sealed = sealer.seal(7, &secret);
        assert!(!sealed.windows(secret.len()).any(|w| w == secret.as_bytes()));
        assert_ne!(sealer.seal(7, &secret), sealed, "random nonces");
        assert_eq!(sealer.open(7, &sealed).as_deref(), Some(secret.as_str()));
        assert_eq!(sealer.open(8, &sealed), None, "bound to its id");
        let mut tampered = sealed.clone();
        tampered[20] ^= 1;
        assert_eq!(sealer.open(7, &tampered), None);
        assert_eq!(sealer.open(7, &sealed[..5]), None);
        // The same file opens it again; another key does not.
        let again = Sealer::load_or_create(dir.path()).unwrap();
        assert_eq!(again.open(7, &sealed).as_deref(), Some(secret.as_str()));
        let other = tempfile::tempdir().unwrap();
        let stranger = Sealer::load_or_create(other.path()).unwrap();
        assert_eq!(stranger.open(7, &sealed), None);
        assert!(
            Sealer::load(tempfile::tempdir().unwrap().path())
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn signatures() {
        // printf '%s.%s' 1700000000000 '{"a":1}' | openssl dgst -sha256 -hmac sk_test
        let sig = sign("sk_test", "1700000000000", br#"{"a":1}"#);
        let mac = parse_signature(&sig).unwrap();
        let v = Verifier::new("sk_test");
        assert!(v.verify("1700000000000", br#"{"a":1}"#, &mac));
        assert!(!v.verify("1700000000001", br#"{"a":1}"#, &mac));
        assert!(!v.verify("1700000000000", br#"{"a":2}"#, &mac));
        assert!(!Verifier::new("sk_other").verify("1700000000000", br#"{"a":1}"#, &mac));
        assert!(!v.verify("1700000000000", br#"{"a":1}"#, &mac[..31]));
        assert_eq!(parse_signature("sha256=abc"), None);
        assert_eq!(parse_signature(&format!("sha1={}", "0".repeat(64))), None);
        assert_eq!(parse_signature(&format!("sha256={}", "g".repeat(64))), None);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("24h"), Some(86_400_000));
        assert_eq!(parse_duration_ms("1s"), Some(1000));
        assert_eq!(parse_duration_ms("90"), Some(90_000));
        assert_eq!(parse_duration_ms("30m"), Some(1_800_000));
        assert_eq!(parse_duration_ms("2d"), Some(172_800_000));
        assert_eq!(parse_duration_ms("0s"), Some(0));
        assert_eq!(parse_duration_ms("1w"), None);
        assert_eq!(parse_duration_ms("h"), None);
        assert_eq!(parse_duration_ms(""), None);
    }
}
