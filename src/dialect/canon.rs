//! Strict JSON without a tree: the same checks as [`json::parse`](super::json::parse)
//! (duplicate keys refused at every depth, serde_json's nesting limit, no trailing garbage
//! when the caller checks the end) while writing a value straight out as the compact JSON
//! text that `serde_json::Value::to_string` would give for the tree `json::parse` builds.
//!
//! The hot native path uses it to turn `props`/`context` (and unknown top-level fields) into
//! their stored text in one pass, with no `Value`, no `Map`, and no per-string allocation
//! (keys and unescaped strings are borrowed from the body). Scalars are written by
//! serde_json's own serializer, so numbers and string escapes come out byte for byte as
//! `Value` would print them.

use serde::Serializer as _;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

/// Objects with at most this many keys are checked for duplicates by a linear scan.
const LINEAR_KEYS: usize = 16;

/// The keys of one JSON object seen so far.
#[derive(Debug, Default)]
pub enum KeySet<'de> {
    #[default]
    Empty,
    Small(Vec<Cow<'de, str>>),
    /// Past [`LINEAR_KEYS`], a hash set, so that a hostile object of many keys stays linear.
    Big(Box<HashSet<Cow<'de, str>>>),
}

impl<'de> KeySet<'de> {
    /// Adds `key`; false when it was already there.
    pub fn insert(&mut self, key: Cow<'de, str>) -> bool {
        match self {
            KeySet::Empty => *self = KeySet::Small(vec![key]),
            KeySet::Small(keys) => {
                if keys.contains(&key) {
                    return false;
                }
                if keys.len() < LINEAR_KEYS {
                    keys.push(key);
                } else {
                    let mut set: HashSet<_> = keys.drain(..).collect();
                    set.insert(key);
                    *self = KeySet::Big(Box::new(set));
                }
            }
            KeySet::Big(set) => return set.insert(key),
        }
        true
    }

    pub fn contains(&self, key: &str) -> bool {
        match self {
            KeySet::Empty => false,
            KeySet::Small(keys) => keys.iter().any(|k| k == key),
            KeySet::Big(set) => set.contains(key),
        }
    }
}

/// An object key, borrowed from the body unless it had escapes.
pub struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// Writes the next value to `out` as compact JSON text, refusing duplicate keys at any depth.
/// With `comma`, a `,` is written first (only when there is a value).
pub struct Canon<'o> {
    pub out: &'o mut Vec<u8>,
    pub comma: bool,
}

impl<'o> Canon<'o> {
    pub fn new(out: &'o mut Vec<u8>) -> Self {
        Canon { out, comma: false }
    }
}

impl<'de> DeserializeSeed<'de> for Canon<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if self.comma {
            self.out.push(b',');
        }
        d.deserialize_any(self)
    }
}

/// Writes `s` as a JSON string, escaped as serde_json escapes it.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    serde_json::Serializer::new(out)
        .serialize_str(s)
        .expect("writing to a Vec cannot fail");
}

impl<'de> Visitor<'de> for Canon<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.out
            .extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }

    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        serde_json::Serializer::new(self.out)
            .serialize_i64(v)
            .expect("writing to a Vec cannot fail");
        Ok(())
    }

    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        serde_json::Serializer::new(self.out)
            .serialize_u64(v)
            .expect("writing to a Vec cannot fail");
        Ok(())
    }

    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        // `json::parse` keeps a non-finite float as `null`; serde_json writes it so too.
        serde_json::Serializer::new(self.out)
            .serialize_f64(v)
            .expect("writing to a Vec cannot fail");
        Ok(())
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        write_str(self.out, v);
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }

    fn visit_none<E>(self) -> Result<(), E> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        canon_seq(seq, self.out)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        canon_map(map, self.out).map(drop)
    }
}

/// Writes the rest of an array to `out`.
pub fn canon_seq<'de, A: SeqAccess<'de>>(mut seq: A, out: &mut Vec<u8>) -> Result<(), A::Error> {
    out.push(b'[');
    let mut comma = false;
    while seq.next_element_seed(Canon { out, comma })?.is_some() {
        comma = true;
    }
    out.push(b']');
    Ok(())
}

/// Writes the rest of an object to `out`, refusing a duplicate key; returns its keys.
pub fn canon_map<'de, A: MapAccess<'de>>(
    mut map: A,
    out: &mut Vec<u8>,
) -> Result<KeySet<'de>, A::Error> {
    let mut keys = KeySet::default();
    out.push(b'{');
    while let Some(key) = map.next_key_seed(Key)? {
        if !matches!(keys, KeySet::Empty) {
            out.push(b',');
        }
        write_str(out, &key);
        out.push(b':');
        map.next_value_seed(Canon::new(out))?;
        if !keys.insert(key) {
            return Err(duplicate());
        }
    }
    out.push(b'}');
    Ok(keys)
}

/// Checks the rest of an array without keeping it.
pub fn skip_seq<'de, A: SeqAccess<'de>>(seq: A) -> Result<(), A::Error> {
    canon_seq(seq, &mut Vec::new())
}

/// Checks the rest of an object without keeping it.
pub fn skip_map<'de, A: MapAccess<'de>>(map: A) -> Result<(), A::Error> {
    canon_map(map, &mut Vec::new()).map(drop)
}

pub fn duplicate<E: de::Error>() -> E {
    E::custom("duplicate key")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialect::json;

    fn canon(text: &str) -> Result<String, serde_json::Error> {
        let mut out = Vec::new();
        let mut de = serde_json::Deserializer::from_str(text);
        Canon::new(&mut out).deserialize(&mut de)?;
        de.end()?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn writes_what_the_tree_would_print() {
        for text in [
            r#"{"a":[1,-2,3.5,"x",null,true,{"b":{}}],"c":18446744073709551615}"#,
            r#" { "z" : 1 , "a" : [ ] , "m" : { "k" : "v\u00e9\ud83d\ude00\n\"\\\/" } } "#,
            r#"[1e3, 1E-7, -0, -0.0, 123456789012345678901234567890, 0.1, 2.5e300, 5e-324]"#,
            r#"{"\u0061b":"\u001f\u007f"}"#,
            r#""plain""#,
            "17",
        ] {
            assert_eq!(
                canon(text).unwrap(),
                json::parse(text.as_bytes()).unwrap().to_string(),
                "{text}"
            );
        }
    }

    #[test]
    fn refuses_what_the_strict_parser_refuses() {
        for text in [
            r#"{"a":1,"a":2}"#,
            r#"{"x":[{"a":1,"\u0061":2}]}"#,
            r#"{"a":1} x"#,
            r#"{"a":"\ud800"}"#,
            r#"[1,]"#,
        ] {
            assert!(canon(text).is_err(), "{text}");
            assert!(json::parse(text.as_bytes()).is_err(), "{text}");
        }
        assert!(canon(&"[".repeat(10_000)).is_err(), "recursion limit holds");
        let many: Vec<String> = (0..40).map(|i| format!(r#""k{i}":{i}"#)).collect();
        let ok = format!("{{{}}}", many.join(","));
        assert_eq!(
            canon(&ok).unwrap(),
            json::parse(ok.as_bytes()).unwrap().to_string()
        );
        let dup = format!(r#"{{{},"k3":0}}"#, many.join(","));
        assert!(
            canon(&dup).is_err(),
            "duplicates found past the linear scan"
        );
    }
}
