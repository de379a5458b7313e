//! TOTP second factor (RFC 6238 over RFC 4226 HOTP): HMAC-SHA-1, 6 digits, 30-second steps,
//! one step of clock drift either way. What authenticator apps expect by default.

use ring::hmac;
use subtle::ConstantTimeEq;

/// Bytes of a new secret (160 bits, RFC 4226's recommendation).
pub const SECRET_LEN: usize = 20;
const STEP_MS: u64 = 30_000;
const DIGITS: u32 = 6;

/// A new random secret.
pub fn new_secret() -> [u8; SECRET_LEN] {
    let mut s = [0u8; SECRET_LEN];
    rand::fill(&mut s[..]);
    s
}

/// RFC 4648 base32 without padding (what `otpauth://` URIs carry).
pub fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut buf, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buf = (buf << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buf >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buf << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// The `otpauth://` URI an authenticator app reads (as a QR code or pasted).
pub fn uri(account: &str, secret: &[u8]) -> String {
    let label: String = percent_encoding::utf8_percent_encode(
        &format!("inlet:{account}"),
        percent_encoding::NON_ALPHANUMERIC,
    )
    .collect();
    format!(
        "otpauth://totp/{label}?secret={}&issuer=inlet&algorithm=SHA1&digits={DIGITS}&period=30",
        base32(secret)
    )
}

/// The 30-second step of `now_ms`.
pub fn step_of(now_ms: u64) -> u64 {
    now_ms / STEP_MS
}

/// The HOTP code of `secret` at counter `step`.
pub fn code_at(secret: &[u8], step: u64) -> u32 {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let mac = hmac::sign(&key, &step.to_be_bytes());
    let m = mac.as_ref();
    let off = (m[m.len() - 1] & 0x0f) as usize;
    let bin = u32::from_be_bytes([m[off] & 0x7f, m[off + 1], m[off + 2], m[off + 3]]);
    bin % 10u32.pow(DIGITS)
}

/// Why a code was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not the code of the current step or a neighbour.
    Invalid,
    /// The code of a step already used (or older): a replay.
    Reused,
}

/// Checks `code` against the steps around `now_ms`; `Ok(step)` of the matching step, which
/// must be later than `last_step` (the last accepted one).
pub fn check(secret: &[u8], code: &str, now_ms: u64, last_step: u64) -> Result<u64, Refused> {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Refused::Invalid);
    }
    let now = step_of(now_ms);
    let mut found = None;
    for step in now.saturating_sub(1)..=now + 1 {
        let want = format!("{:06}", code_at(secret, step));
        if bool::from(want.as_bytes().ct_eq(code.as_bytes())) {
            found = Some(step);
        }
    }
    match found {
        None => Err(Refused::Invalid),
        Some(step) if step <= last_step => Err(Refused::Reused),
        Some(step) => Ok(step),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B (SHA-1 rows), cut to 6 digits.
    #[test]
    fn rfc_6238_vectors() {
        let secret = b"12345678901234567890";
        for (t, code) in [
            (59u64, 287_082),
            (1_111_111_109, 81_804),
            (1_111_111_111, 50_471),
            (1_234_567_890, 5_924),
            (2_000_000_000, 279_037),
        ] {
            assert_eq!(code_at(secret, t / 30), code, "t={t}");
        }
    }

    #[test]
    fn base32_of_known_strings() {
        assert_eq!(base32(b""), "");
        assert_eq!(base32(b"f"), "MY");
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(
            base32(b"12345678901234567890"),
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
        );
        let u = uri("ann@x", b"12345678901234567890");
        assert!(
            u.starts_with("otpauth://totp/inlet%3Aann%40x?secret=GEZDG"),
            "{u}"
        );
    }

    #[test]
    fn drift_of_one_step_and_no_replay() {
        let secret = b"12345678901234567890";
        let now = 1_111_111_109_000;
        let step = step_of(now);
        let code = |s| format!("{:06}", code_at(secret, s));
        assert_eq!(check(secret, &code(step), now, 0), Ok(step));
        assert_eq!(check(secret, &code(step - 1), now, 0), Ok(step - 1));
        assert_eq!(check(secret, &code(step + 1), now, 0), Ok(step + 1));
        assert_eq!(
            check(secret, &code(step - 2), now, 0),
            Err(Refused::Invalid)
        );
        assert_eq!(check(secret, &code(step), now, step), Err(Refused::Reused));
        assert_eq!(
            check(secret, &code(step - 1), now, step),
            Err(Refused::Reused)
        );
        assert_eq!(check(secret, "12345", now, 0), Err(Refused::Invalid));
        assert_eq!(check(secret, "abcdef", now, 0), Err(Refused::Invalid));
    }
}
