//! Server keys: `srv_` + 48 lowercase hex characters (192 random bits).
//!
//! Only a key's SHA-256 is stored. Lookup goes through the first 8 bytes of that hash (a
//! B-tree search on a hash prefix reveals nothing useful about the key), and the full hash is
//! then compared in constant time (`subtle`).

use crate::event::hex;
use ring::digest;

pub const PREFIX: &str = "srv_";
const HEX_LEN: usize = 48;

/// A freshly minted key: the plaintext (shown once) and what gets stored.
pub struct Minted {
    pub plaintext: String,
    pub hash: [u8; 32],
}

/// Makes a new random key.
pub fn mint() -> Minted {
    let mut bytes = [0u8; HEX_LEN / 2];
    rand::fill(&mut bytes[..]);
    let plaintext = format!("{PREFIX}{}", hex(&bytes));
    let hash = hash(&plaintext);
    Minted { plaintext, hash }
}

/// SHA-256 of the key text.
pub fn hash(key: &str) -> [u8; 32] {
    sha256(key.as_bytes())
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, bytes).as_ref());
    out
}

/// Whether `text` has the shape of a server key; anything else cannot match a stored key.
pub fn well_formed(text: &str) -> bool {
    text.len() == PREFIX.len() + HEX_LEN
        && text.starts_with(PREFIX)
        && text[PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The lookup index of a key hash: its first 8 bytes.
pub fn lookup_prefix(hash: &[u8; 32]) -> u64 {
    u64::from_be_bytes(hash[..8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_keys_have_the_documented_shape() {
        let m = mint();
        assert!(well_formed(&m.plaintext), "{}", m.plaintext);
        assert_eq!(m.plaintext.len(), 52);
        assert_eq!(m.hash, hash(&m.plaintext));
        assert_ne!(mint().plaintext, m.plaintext);
    }

    #[test]
    fn shape_check_rejects_lookalikes() {
        assert!(!well_formed("srv_"));
        assert!(!well_formed(&format!("srv_{}", "A".repeat(48))));
        assert!(!well_formed(&format!("key_{}", "a".repeat(48))));
        assert!(!well_formed(&format!("srv_{}", "a".repeat(49))));
    }
}
