//! `application/x-www-form-urlencoded` components (form bodies and query strings): `+` is a
//! space and `%XY` a byte; a `%` not followed by two hex digits is kept as it is. The escapes
//! are decoded by `percent-encoding` (rust-url's), the one decoder inlet uses.

use std::borrow::Cow;

/// One component's bytes, decoded.
pub fn decode_bytes(raw: &[u8]) -> Vec<u8> {
    percent_encoding::percent_decode(&plus_as_space(raw)).collect()
}

/// One component as text; `None` when the decoded bytes are not UTF-8.
pub fn decode_text(raw: &[u8]) -> Option<String> {
    String::from_utf8(decode_bytes(raw)).ok()
}

fn plus_as_space(raw: &[u8]) -> Cow<'_, [u8]> {
    if raw.contains(&b'+') {
        Cow::Owned(
            raw.iter()
                .map(|&b| if b == b'+' { b' ' } else { b })
                .collect(),
        )
    } else {
        Cow::Borrowed(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_plus_and_stray_percents() {
        assert_eq!(decode_text(b"a+b%2Bc%20d").as_deref(), Some("a b+c d"));
        assert_eq!(decode_text(b"100%").as_deref(), Some("100%"));
        assert_eq!(decode_text(b"%zz%4").as_deref(), Some("%zz%4"));
        assert_eq!(decode_text(b"%C3%A9").as_deref(), Some("é"));
        assert_eq!(decode_text(b"%ff"), None);
        assert_eq!(decode_bytes(b"%ff%00"), vec![0xff, 0]);
    }
}
