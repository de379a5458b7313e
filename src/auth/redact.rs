//! Credentials out of everything inlet stores: a server key (`srv_` + 48 hex) or a signing
//! secret (`sk_` + 48 hex) found in a request is replaced by a marker before anything is
//! written (raw audit bodies, canonical events, per-event state).
//!
//! The marker says what was there and, when it is a credential of this server, which one:
//!
//! | found | stored as |
//! |---|---|
//! | a key of this server (also revoked) | `[redacted: key 12]` (the id of `inlet keys list`) |
//! | a key-shaped value that is no key of this server | `[redacted: key]` |
//! | an unrevoked signing secret of this server | `[redacted: secret 3]` (`inlet secrets list`) |
//! | any other secret-shaped value | `[redacted: secret]` |
//!
//! Only the credential's own characters are replaced, so the rest of a body stays as sent:
//! AppsFlyer's `"webDevKey": "srv_…"` is stored as `"webDevKey": "[redacted: key 12]"`,
//! `"note": "key srv_… leaked"` as `"note": "key [redacted: key 12] leaked"`.
//!
//! What is recognized: the credential's plain text anywhere in the bytes; in a JSON body also
//! a credential spelled with escapes inside a string (`"srv\u005f…"`, which a JSON reader
//! decodes to the key); in a form or query string (Adjust) also a percent-encoded one
//! (`srv%5F…`). There, the marker is form-encoded (`%5Bredacted%3A+key+12%5D`).
//!
//! Pure: the caller says which id a credential has ([`Namer`]).

use memchr::memmem;
use std::borrow::Cow;
use std::sync::LazyLock;

/// Hex characters after a credential's prefix (keys and secrets alike).
const HEX_LEN: usize = 48;

/// Which kind of credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A server key, `srv_…`.
    Key,
    /// A signing secret, `sk_…`.
    Secret,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Kind::Key => crate::auth::keys::PREFIX,
            Kind::Secret => crate::auth::secrets::PREFIX,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Key => "key",
            Kind::Secret => "secret",
        }
    }
}

/// The id of a credential found in a request, when it is one of this server's.
pub trait Namer: FnMut(Kind, &str) -> Option<u32> {}
impl<F: FnMut(Kind, &str) -> Option<u32>> Namer for F {}

/// What a credential is replaced with: `[redacted: key 12]`, `[redacted: secret]`, ...
pub fn marker(kind: Kind, id: Option<u32>) -> String {
    match id {
        Some(id) => format!("[redacted: {} {id}]", kind.name()),
        None => format!("[redacted: {}]", kind.name()),
    }
}

/// The searchers of the two prefixes, built once (every stored byte passes through them).
static FINDERS: LazyLock<[(memmem::Finder<'static>, Kind); 2]> = LazyLock::new(|| {
    [Kind::Key, Kind::Secret].map(|kind| (memmem::Finder::new(kind.prefix()), kind))
});

/// Where credentials are in `bytes`, in order: `(start, end, kind)`.
fn find(bytes: &[u8]) -> Vec<(usize, usize, Kind)> {
    let mut found = Vec::new();
    for (finder, kind) in FINDERS.iter() {
        let (prefix, kind) = (finder.needle(), *kind);
        for at in finder.find_iter(bytes) {
            let end = at + prefix.len() + HEX_LEN;
            let hex = bytes.get(at + prefix.len()..end);
            if hex.is_some_and(|h| h.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))) {
                found.push((at, end, kind));
            }
        }
    }
    // The two shapes cannot overlap: neither prefix is made of hex characters.
    found.sort_unstable_by_key(|f| f.0);
    found
}

/// Whether JSON text may spell a credential with escapes: only a `\u` escape can write a
/// credential's characters.
pub fn may_hide_escaped(bytes: &[u8]) -> bool {
    static ESCAPE: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new("\\u"));
    ESCAPE.find(bytes).is_some()
}

/// Whether `bytes` hold a credential in plain text.
pub fn contains(bytes: &[u8]) -> bool {
    !find(bytes).is_empty()
}

/// Replaces every credential in plain text; `encode` turns a marker into what is written.
fn replace<'a>(
    bytes: &'a [u8],
    namer: &mut impl Namer,
    encode: impl Fn(String) -> String,
) -> Cow<'a, [u8]> {
    let found = find(bytes);
    if found.is_empty() {
        return Cow::Borrowed(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut from = 0;
    for (start, end, kind) in found {
        out.extend_from_slice(&bytes[from..start]);
        // The matched bytes are ASCII.
        let credential = std::str::from_utf8(&bytes[start..end]).unwrap_or_default();
        out.extend_from_slice(encode(marker(kind, namer(kind, credential))).as_bytes());
        from = end;
    }
    out.extend_from_slice(&bytes[from..]);
    Cow::Owned(out)
}

/// Any text: every credential in plain text replaced by its marker.
pub fn text<'a>(bytes: &'a [u8], namer: &mut impl Namer) -> Cow<'a, [u8]> {
    replace(bytes, namer, |m| m)
}

/// A string: as [`text`]; `None` when it holds no credential.
pub fn string(s: &str, namer: &mut impl Namer) -> Option<String> {
    match text(s.as_bytes(), namer) {
        Cow::Borrowed(_) => None,
        // ASCII credentials replaced by ASCII markers: still UTF-8 (lossy never applies).
        Cow::Owned(v) => Some(String::from_utf8_lossy(&v).into_owned()),
    }
}

/// JSON text (a body, or a canonical event's `props`/`context`): as [`text`], and a string
/// that spells a credential with escapes is written again, unescaped where it held one.
/// Text that is not JSON is handled as [`text`] only.
pub fn json<'a>(bytes: &'a [u8], namer: &mut impl Namer) -> Cow<'a, [u8]> {
    if !may_hide_escaped(bytes) {
        return text(bytes, namer);
    }
    let mut out: Option<Vec<u8>> = None;
    let mut from = 0;
    let mut i = 0;
    while let Some(open) = memchr::memchr(b'"', &bytes[i..]).map(|p| i + p) {
        // The closing quote: the first one not escaped.
        let mut j = open + 1;
        let mut escaped = false;
        while j < bytes.len() {
            match bytes[j] {
                b'\\' => {
                    escaped = true;
                    j += 2;
                }
                b'"' => break,
                _ => j += 1,
            }
        }
        if j >= bytes.len() {
            break; // unterminated: not JSON
        }
        let span = &bytes[open..=j];
        if escaped
            && let Ok(decoded) = serde_json::from_slice::<String>(span)
            && let Some(clean) = string(&decoded, namer)
        {
            let out = out.get_or_insert_with(|| Vec::with_capacity(bytes.len()));
            out.extend_from_slice(&bytes[from..open]);
            out.extend_from_slice(
                serde_json::to_string(&clean)
                    .expect("a string serializes")
                    .as_bytes(),
            );
            from = j + 1;
        }
        i = j + 1;
    }
    match out {
        None => text(bytes, namer),
        Some(mut out) => {
            out.extend_from_slice(&bytes[from..]);
            // Credentials in plain text (outside the rewritten strings) too.
            Cow::Owned(text(&out, namer).into_owned())
        }
    }
}

/// `application/x-www-form-urlencoded` text or a query string (`a=1&b=2`): each `name=value`
/// piece holding a credential in plain text has it replaced by the form-encoded marker; a
/// piece holding one only once percent-decoded is written again, decoded, redacted and
/// encoded.
pub fn form<'a>(bytes: &'a [u8], namer: &mut impl Namer) -> Cow<'a, [u8]> {
    let hides = |piece: &[u8]| memchr::memchr2(b'%', b'+', piece).is_some();
    if !bytes
        .split(|&b| b == b'&')
        .any(|p| contains(p) || (hides(p) && contains(&crate::dialect::form::decode_bytes(p))))
    {
        return Cow::Borrowed(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len());
    for (n, piece) in bytes.split(|&b| b == b'&').enumerate() {
        if n > 0 {
            out.push(b'&');
        }
        let piece = replace(piece, namer, |m| form_encode(m.as_bytes()));
        if hides(&piece) && contains(&crate::dialect::form::decode_bytes(&piece)) {
            let mut parts = piece.splitn(2, |&b| b == b'=');
            let name = crate::dialect::form::decode_bytes(parts.next().unwrap_or_default());
            out.extend_from_slice(form_encode(&text(&name, namer)).as_bytes());
            if let Some(value) = parts.next() {
                out.push(b'=');
                let value = crate::dialect::form::decode_bytes(value);
                out.extend_from_slice(form_encode(&text(&value, namer)).as_bytes());
            }
        } else {
            out.extend_from_slice(&piece);
        }
    }
    Cow::Owned(out)
}

/// Form encoding: unreserved characters as is, a space as `+`, every other byte `%XY`.
fn form_encode(bytes: &[u8]) -> String {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_encode};
    const ESCAPED: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encode(bytes, ESCAPED)
        .map(|piece| if piece == "%20" { "+" } else { piece })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "srv_0123456789abcdef0123456789abcdef0123456789abcdef";
    const SECRET: &str = "sk_fedcba9876543210fedcba9876543210fedcba9876543210";

    fn ids(kind: Kind, credential: &str) -> Option<u32> {
        match kind {
            Kind::Key if credential == KEY => Some(12),
            Kind::Secret if credential == SECRET => Some(3),
            _ => None,
        }
    }

    fn s(c: Cow<[u8]>) -> String {
        String::from_utf8(c.into_owned()).unwrap()
    }

    #[test]
    fn plain_text_credentials_are_replaced_and_named() {
        let body = format!(r#"{{"webDevKey" : "{KEY}", "note": "x{SECRET}y", "n": 1}}"#);
        assert_eq!(
            s(json(body.as_bytes(), &mut ids)),
            r#"{"webDevKey" : "[redacted: key 12]", "note": "x[redacted: secret 3]y", "n": 1}"#
        );
        let other = KEY.replace('0', "1");
        assert_eq!(
            s(text(format!("a {other} b").as_bytes(), &mut ids)),
            "a [redacted: key] b"
        );
        // Not a credential: too short, upper case, another prefix.
        for near in [
            &KEY[..KEY.len() - 1],
            &KEY.to_uppercase(),
            &KEY.replace("srv_", "srv-"),
        ] {
            assert!(matches!(text(near.as_bytes(), &mut ids), Cow::Borrowed(_)));
        }
        // Longer runs of hex: the credential in them still goes.
        assert_eq!(
            s(text(format!("{KEY}ff").as_bytes(), &mut ids)),
            "[redacted: key 12]ff"
        );
    }

    #[test]
    fn escaped_json_strings_are_decoded_and_written_again() {
        let escaped = format!(
            r#"{{"a":"q\"","webDevKey":"srv\u005f{}","b":"\n"}}"#,
            &KEY[4..]
        );
        let out = s(json(escaped.as_bytes(), &mut ids));
        assert_eq!(
            out,
            r#"{"a":"q\"","webDevKey":"[redacted: key 12]","b":"\n"}"#
        );
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["webDevKey"], "[redacted: key 12]");
        // Escapes elsewhere, nothing to redact: unchanged.
        let plain = r#"{"a":"q\"\u00e9"}"#;
        assert!(matches!(json(plain.as_bytes(), &mut ids), Cow::Borrowed(_)));
    }

    #[test]
    fn form_encoding_keeps_unreserved_bytes_and_writes_a_space_as_plus() {
        assert_eq!(
            form_encode("aZ9-._~ *%+é".as_bytes()),
            "aZ9-._~+%2A%25%2B%C3%A9"
        );
    }

    #[test]
    fn form_pieces_are_redacted_and_stay_form_encoded() {
        let raw = format!("s2s=1&token={KEY}&callback_params=%7B%22k%22%3A%22{SECRET}%22%7D&x=%2C");
        assert_eq!(
            s(form(raw.as_bytes(), &mut ids)),
            "s2s=1&token=%5Bredacted%3A+key+12%5D\
             &callback_params=%7B%22k%22%3A%22%5Bredacted%3A+secret+3%5D%22%7D&x=%2C"
        );
        // Percent-encoded: decoded, redacted, encoded again.
        let hidden = format!("a=b&t=srv%5F{}&c=d", &KEY[4..]);
        let out = s(form(hidden.as_bytes(), &mut ids));
        assert_eq!(out, "a=b&t=%5Bredacted%3A+key+12%5D&c=d");
        assert!(matches!(form(b"a=%2C&b=c+d", &mut ids), Cow::Borrowed(_)));
        // Both in one piece.
        let both = format!("t={KEY},srv%5F{}", &KEY[4..]);
        assert_eq!(
            s(form(both.as_bytes(), &mut ids)),
            "t=%5Bredacted%3A+key+12%5D%2C%5Bredacted%3A+key+12%5D"
        );
    }

    #[test]
    fn no_output_holds_a_credential_whatever_the_input() {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, TestRunner};
        // Pieces that make credentials, their escaped and encoded spellings, and the syntax
        // around them, in any order.
        let escaped_key = format!("srv\\u005f{}", &KEY[4..]);
        let encoded_secret = format!("sk%5F{}", &SECRET[3..]);
        let pieces: Vec<String> = [
            KEY,
            SECRET,
            &escaped_key,
            &encoded_secret,
            "srv_",
            "sk_",
            "srv",
            "_",
            "0123456789abcdef",
            "ff",
            "\\u005f",
            "\\u0073",
            "\\",
            "\"",
            "%5F",
            "%73",
            "%",
            "+",
            "&",
            "=",
            "{",
            "}",
            ":",
            ",",
            "a",
            "é",
        ]
        .map(str::to_owned)
        .to_vec();
        let input = proptest::collection::vec(proptest::sample::select(pieces), 0..32)
            .prop_map(|p| p.concat());
        let mut runner = TestRunner::new(Config {
            cases: 2000,
            failure_persistence: None,
            ..Config::default()
        });
        runner
            .run(&input, |x| {
                let b = x.as_bytes();
                prop_assert!(!contains(&text(b, &mut ids)));
                let j = json(b, &mut ids);
                prop_assert!(!contains(&j));
                // Inside a JSON document: what a JSON reader gets holds no credential either.
                let doc = format!(r#"{{"k": "{x}", "n": 1}}"#);
                let j = json(doc.as_bytes(), &mut ids);
                prop_assert!(!contains(&j));
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&j) {
                    let k = v["k"].as_str().unwrap_or_default();
                    prop_assert!(!contains(k.as_bytes()), "{x:?} → {k:?}");
                    prop_assert_eq!(&v["n"], 1);
                }
                let f = form(b, &mut ids);
                prop_assert!(!contains(&f));
                for piece in f.split(|&c| c == b'&') {
                    prop_assert!(
                        !contains(&crate::dialect::form::decode_bytes(piece)),
                        "{x:?}"
                    );
                }
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn markers_hold_no_credential_and_need_no_escaping() {
        for m in [marker(Kind::Key, Some(7)), marker(Kind::Secret, None)] {
            assert!(!contains(m.as_bytes()));
            assert_eq!(serde_json::to_string(&m).unwrap(), format!("\"{m}\""));
        }
    }
}
