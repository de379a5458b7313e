//! Offline enrichment ([docs/enrichment.md](../../docs/enrichment.md)): where an event came
//! from (`context.geo`, `context.asn`, from `context.ip` through MaxMind-format databases)
//! and on what device (`context.device`, from `context.user_agent`), added to each event of
//! a submission before the app's IP policy truncates or drops the address
//! (`ingest::submit`). Every dialect puts the address and the user agent in those canonical
//! places; apps named in `peer_ip` also take the request's own address (the peer, or the
//! client a trusted proxy names in `X-Forwarded-For`) when an event carries none.
//!
//! Nothing here reads the clock or the store; without an `[enrich]` section none of it runs.

pub mod geo;
pub mod ua;

use crate::store::codec::Interned;
use crate::store::enrichments::Dictionary;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The address of the connection a request came on, put in the request's extensions by
/// the router.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub IpAddr);

/// `[enrich]` of the configuration file (flags and environment: `--enrich-*`,
/// `INLET_ENRICH_*`).
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEnrich {
    /// MaxMind-format database files (country, city, ASN), looked up in this order.
    pub geo_db: Option<Vec<PathBuf>>,
    /// Parse `context.user_agent` into `context.device` [default: false].
    pub user_agent: Option<bool>,
    /// Apps (by name; `"*"`: every app) whose events without `context.ip` take the
    /// request's address.
    pub peer_ip: Option<Vec<String>>,
    /// Proxies (addresses or CIDR blocks) whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Option<Vec<String>>,
    /// Seconds between checks of the database files for a change [default: 5].
    pub reload_secs: Option<u64>,
}

impl RawEnrich {
    /// `self` with every key that `over` sets replaced by `over`'s value.
    pub fn under(self, over: RawEnrich) -> RawEnrich {
        RawEnrich {
            geo_db: over.geo_db.or(self.geo_db),
            user_agent: over.user_agent.or(self.user_agent),
            peer_ip: over.peer_ip.or(self.peer_ip),
            trusted_proxies: over.trusted_proxies.or(self.trusted_proxies),
            reload_secs: over.reload_secs.or(self.reload_secs),
        }
    }

    /// Checks every value and opens the databases; `None` when nothing is enabled.
    pub fn resolve(self) -> Result<Option<Enrich>, String> {
        let geo_db = self.geo_db.clone().unwrap_or_default();
        let user_agent = self.user_agent.unwrap_or(false);
        if geo_db.is_empty() && !user_agent {
            return Ok(None);
        }
        let reload_secs = self.reload_secs.unwrap_or(DEFAULT_RELOAD_SECS);
        if !(1..=86_400).contains(&reload_secs) {
            return Err(format!(
                "enrich.reload_secs: {reload_secs} is outside 1..=86400"
            ));
        }
        let proxies = self
            .trusted_proxies
            .iter()
            .flatten()
            .map(|p| {
                Cidr::parse(p).ok_or_else(|| {
                    format!("enrich.trusted_proxies: {p:?} is not an address or CIDR block")
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let peer_apps = match self.peer_ip.as_deref().unwrap_or_default() {
            [] => PeerApps::None,
            names if names.iter().any(|n| n == "*") => PeerApps::All,
            names => PeerApps::Some(names.to_vec()),
        };
        let geo = match geo_db.is_empty() {
            true => None,
            false => Some(geo::Geo::open(&geo_db).map_err(|e| format!("enrich.geo_db: {e}"))?),
        };
        Ok(Some(Enrich(Arc::new(Inner {
            geo,
            ua: user_agent.then(ua::Ua::default),
            peer_apps,
            proxies,
            reload: Duration::from_secs(reload_secs),
            raw: self,
        }))))
    }
}

pub const DEFAULT_RELOAD_SECS: u64 = 5;

/// Checked `[enrich]`: the open databases, the parser, where a request's address is taken.
#[derive(Clone)]
pub struct Enrich(Arc<Inner>);

struct Inner {
    geo: Option<geo::Geo>,
    ua: Option<ua::Ua>,
    peer_apps: PeerApps,
    proxies: Vec<Cidr>,
    reload: Duration,
    raw: RawEnrich,
}

enum PeerApps {
    None,
    All,
    Some(Vec<String>),
}

impl std::fmt::Debug for Enrich {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Enrich").field(&self.0.raw).finish()
    }
}

impl Enrich {
    /// The keys as configured (for `check-config`).
    pub fn raw(&self) -> RawEnrich {
        self.0.raw.clone()
    }

    pub fn geo(&self) -> Option<&geo::Geo> {
        self.0.geo.as_ref()
    }

    pub fn ua(&self) -> Option<&ua::Ua> {
        self.0.ua.as_ref()
    }

    /// How often the database files are checked for a change.
    pub fn reload_every(&self) -> Duration {
        self.0.reload
    }

    /// Whether `app`'s events take the request's address.
    fn takes_peer(&self, app: &str) -> bool {
        match &self.0.peer_apps {
            PeerApps::None => false,
            PeerApps::All => true,
            PeerApps::Some(names) => names.iter().any(|n| n == app),
        }
    }

    /// The client's address of a request, when some app takes it: the peer's, or, when the
    /// peer is a trusted proxy, the last address in `X-Forwarded-For` that is not one.
    pub fn client_ip<B>(&self, req: &hyper::Request<B>) -> Option<IpAddr> {
        if matches!(self.0.peer_apps, PeerApps::None) {
            return None;
        }
        let peer = req.extensions().get::<Peer>()?.0;
        let trusted = |ip: &IpAddr| self.0.proxies.iter().any(|c| c.contains(ip));
        if !trusted(&peer) {
            return Some(peer);
        }
        let mut client = peer;
        // The right-most entries were added by the proxies nearest to us.
        let hops: Vec<&str> = req
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        for hop in hops.iter().rev() {
            let Ok(ip) = hop.trim().parse::<IpAddr>() else {
                break; // garbage: trust nothing further left
            };
            client = ip;
            if !trusted(&ip) {
                break;
            }
        }
        Some(client)
    }

    /// Adds `context.geo`, `context.asn` and `context.device` to each event of `app` (their
    /// `context.ip` and `context.user_agent`, or `client` when the app takes the request's
    /// address and the event names none). Fields the sender set are kept as sent. With a
    /// `dict`, the added answers are kept there and the record holds their ids
    /// (`store::enrichments`); readers put them back where they would have been.
    pub fn apply(
        &self,
        app: &str,
        client: Option<IpAddr>,
        events: &mut [crate::store::writer::Pending],
        dict: Option<&Dictionary>,
    ) {
        let client = client.filter(|_| self.takes_peer(app));
        // The databases as they are now, for the whole submission.
        let geo = self.0.geo.as_ref().map(geo::Geo::current);
        let mut scratch = String::new();
        let (ip, agent) = (
            memchr::memmem::Finder::new(b"\"ip\""),
            memchr::memmem::Finder::new(b"\"user_agent\""),
        );
        for p in events {
            let mut interned = Interned::default();
            p.map_context(&mut scratch, |text, out| {
                // Most of a bulk load may carry neither: skip the parsing.
                if client.is_none()
                    && ip.find(text.as_bytes()).is_none()
                    && agent.find(text.as_bytes()).is_none()
                {
                    return false;
                }
                let Some(added) = self.context_into(geo.as_deref(), text, client, out, dict) else {
                    return false;
                };
                interned = added.interned;
                added.written
            });
            if !interned.is_none() {
                p.set_interned(interned);
            }
        }
    }

    /// The enriched `context` JSON text, or `None` when nothing is added (see
    /// [`Enrich::apply`]).
    pub fn context(&self, text: &str, client: Option<IpAddr>) -> Option<String> {
        let mut out = String::new();
        let geo = self.0.geo.as_ref().map(geo::Geo::current);
        self.context_into(geo.as_deref(), text, client, &mut out, None)
            .map(|_| out)
    }

    /// Writes the enriched `context` to `out`, when it changes, and says what was added
    /// (`None`: nothing). With a `dict`, the answers are kept there and their ids returned
    /// rather than written (one that finds it full is written). The sender's text is kept as
    /// sent and the new fields appended to it, copied only when a field is written: a bulk
    /// load pays for no tree of its context, only for the lookups (cached, with their ids).
    fn context_into(
        &self,
        geo: Option<&geo::State>,
        text: &str,
        client: Option<IpAddr>,
        out: &mut String,
        dict: Option<&Dictionary>,
    ) -> Option<Added> {
        let text = match text.trim() {
            "" => "{}",
            t => t,
        };
        let probe = serde_json::from_str::<Probe<'_>>(text).ok()?;
        let string = |raw: Option<&RawValue>| {
            raw.and_then(|r| serde_json::from_str::<std::borrow::Cow<'_, str>>(r.get()).ok())
        };
        // `{...}` parsed as an object above: its last byte is the closing brace.
        let body = text[1..text.len() - 1].trim();
        out.clear();
        let field = |out: &mut String, k: &str| {
            if out.is_empty() {
                out.reserve(text.len() + 256);
                out.push('{');
                out.push_str(body);
            }
            if out.len() > 1 {
                out.push(',');
            }
            out.push('"');
            out.push_str(k);
            out.push_str("\":");
        };
        let mut interned = Interned::default();
        let given_ip = string(probe.ip);
        let ip = match (&given_ip, probe.ip, client) {
            (Some(ip), _, _) => ip.trim().parse::<IpAddr>().ok(),
            (None, None, Some(client)) => {
                use std::fmt::Write;
                field(out, "ip");
                let _ = write!(out, "\"{client}\"");
                Some(client)
            }
            _ => None,
        };
        // A sender that set both keeps them: no lookup.
        if let Some(geo) = geo
            && (probe.geo.is_none() || probe.asn.is_none())
            && let Some(ip) = ip
        {
            // Read in the cache's entry, without taking a count of its owners.
            geo.render_with(ip, |place| {
                let Some(place) = place else { return };
                let g = place.geo.as_deref().filter(|_| probe.geo.is_none());
                let a = place.asn.as_deref().filter(|_| probe.asn.is_none());
                // `"geo":{..},"asn":{..}`, as they would be written.
                let members = || {
                    let mut m = String::new();
                    for (k, v) in [("geo", g), ("asn", a)] {
                        if let Some(v) = v {
                            if !m.is_empty() {
                                m.push(',');
                            }
                            let _ = std::fmt::Write::write_fmt(&mut m, format_args!("\"{k}\":{v}"));
                        }
                    }
                    m
                };
                if let Some(dict) = dict
                    && (g.is_some() || a.is_some())
                {
                    // Both as rendered: the entry remembers their id.
                    let id = if probe.geo.is_none() && probe.asn.is_none() {
                        dict.intern_memo(&place.memo, members)
                    } else {
                        dict.intern(&members())
                    };
                    if let Some(id) = id {
                        interned.geo = id;
                        return;
                    }
                }
                for (k, v) in [("geo", g), ("asn", a)] {
                    if let Some(v) = v {
                        field(out, k);
                        out.push_str(v);
                    }
                }
            });
        }
        if let Some(ua) = &self.0.ua
            && probe.device.is_none()
            && let Some(agent) = string(probe.user_agent)
            && !agent.trim().is_empty()
            && let Some(device) = ua.device(&agent)
        {
            let id = dict.and_then(|d| {
                d.intern_memo(&device.memo, || format!("\"device\":{}", device.text))
            });
            match id {
                Some(id) => interned.device = id,
                // A full dictionary: written, so a `geo` interned above reads back after it.
                None => {
                    field(out, "device");
                    out.push_str(&device.text);
                }
            }
        }
        let written = !out.is_empty();
        if written {
            out.push('}');
        }
        (written || !interned.is_none()).then_some(Added { written, interned })
    }
}

/// What [`Enrich::context_into`] added: fields written into the text, answers kept in the
/// dictionary.
struct Added {
    written: bool,
    interned: Interned,
}

/// A field that is present, `null` included (so that none is written twice).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue as serde::Deserialize>::deserialize(d).map(Some)
}

/// What enrichment reads of a `context`: the fields it uses and those it would add (kept
/// when the sender set them); the rest is skipped, not built.
#[derive(serde::Deserialize)]
struct Probe<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    ip: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    user_agent: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    geo: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    asn: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    device: Option<&'a RawValue>,
}

/// An address block: `10.0.0.0/8`, `2001:db8::/32`, or one address.
#[derive(Debug, Clone, Copy)]
struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl Cidr {
    fn parse(s: &str) -> Option<Cidr> {
        let (addr, bits) = match s.trim().split_once('/') {
            Some((a, b)) => (a.parse::<IpAddr>().ok()?, Some(b.parse::<u8>().ok()?)),
            None => (s.trim().parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = bits.unwrap_or(max);
        (bits <= max).then_some(Cidr { net: addr, bits })
    }

    fn contains(&self, ip: &IpAddr) -> bool {
        let ip = match (self.net, ip) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => return false,
            },
            _ => *ip,
        };
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.bits)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.bits))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, Value};

    #[test]
    fn cidr_blocks_contain_their_addresses_only() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains(&"10.1.200.3".parse().unwrap()));
        assert!(c.contains(&"::ffff:10.1.0.1".parse().unwrap()));
        assert!(!c.contains(&"10.2.0.1".parse().unwrap()));
        let one = Cidr::parse("127.0.0.1").unwrap();
        assert!(one.contains(&"127.0.0.1".parse().unwrap()));
        assert!(!one.contains(&"127.0.0.2".parse().unwrap()));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(&"2001:db8:1::1".parse().unwrap()));
        assert!(!v6.contains(&"2001:db9::1".parse().unwrap()));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains(&"8.8.8.8".parse().unwrap())
        );
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(Cidr::parse("nope").is_none());
    }

    fn with(peer: &str, proxies: &[&str], xff: &[&str]) -> Option<IpAddr> {
        let e = RawEnrich {
            user_agent: Some(true),
            peer_ip: Some(vec!["*".into()]),
            trusted_proxies: Some(proxies.iter().map(|s| s.to_string()).collect()),
            ..RawEnrich::default()
        }
        .resolve()
        .unwrap()
        .unwrap();
        let mut req = hyper::Request::builder();
        for v in xff {
            req = req.header("x-forwarded-for", *v);
        }
        let mut req = req.body(()).unwrap();
        req.extensions_mut().insert(Peer(peer.parse().unwrap()));
        e.client_ip(&req)
    }

    #[test]
    fn the_client_is_the_peer_unless_a_trusted_proxy_names_it() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        // An untrusted peer's header is ignored.
        assert_eq!(
            with("198.51.100.7", &[], &["203.0.113.9"]),
            ip("198.51.100.7")
        );
        // A trusted proxy: the right-most address that is not a trusted proxy.
        assert_eq!(
            with(
                "10.0.0.2",
                &["10.0.0.0/8"],
                &["1.2.3.4, 203.0.113.9, 10.0.0.1"]
            ),
            ip("203.0.113.9")
        );
        assert_eq!(
            with("10.0.0.2", &["10.0.0.0/8"], &["1.2.3.4", "10.0.0.1"]),
            ip("1.2.3.4")
        );
        // No header, or garbage: the proxy itself.
        assert_eq!(with("10.0.0.2", &["10.0.0.0/8"], &[]), ip("10.0.0.2"));
        assert_eq!(with("10.0.0.2", &["10.0.0.0/8"], &["junk"]), ip("10.0.0.2"));
    }

    #[test]
    fn nothing_enabled_is_no_enrichment_and_bad_values_name_their_key() {
        assert!(RawEnrich::default().resolve().unwrap().is_none());
        let e = RawEnrich {
            user_agent: Some(true),
            trusted_proxies: Some(vec!["10.0.0.0/99".into()]),
            ..RawEnrich::default()
        }
        .resolve()
        .unwrap_err();
        assert!(e.contains("enrich.trusted_proxies"), "{e}");
        let e = RawEnrich {
            geo_db: Some(vec!["/nonexistent/x.mmdb".into()]),
            ..RawEnrich::default()
        }
        .resolve()
        .unwrap_err();
        assert!(
            e.contains("enrich.geo_db") && e.contains("/nonexistent/x.mmdb"),
            "{e}"
        );
    }

    #[test]
    fn the_senders_context_is_kept_as_sent_and_nothing_written_twice() {
        let e = RawEnrich {
            user_agent: Some(true),
            ..RawEnrich::default()
        }
        .resolve()
        .unwrap()
        .unwrap();
        let client = Some("198.51.100.7".parse().unwrap());
        assert_eq!(
            e.context("", client).as_deref(),
            Some(r#"{"ip":"198.51.100.7"}"#)
        );
        assert_eq!(e.context(r#"{"ip":null}"#, client), None);
        assert_eq!(e.context(r#"{"ip":"203.0.113.1"}"#, client), None);
        let curl = r#"{"user_agent":"curl/8.5.0","device":null}"#;
        assert_eq!(e.context(curl, None), None);
        assert_eq!(e.context(r#"{"user_agent":7}"#, None), None);
        assert_eq!(e.context("not json", client), None);
        let out = e
            .context(
                r#"{ "a": {"b": [1, "}"]} , "user_agent":"curl/8.5.0" }"#,
                None,
            )
            .unwrap();
        let v: Map<String, Value> = serde_json::from_str(&out).unwrap();
        let keys: Vec<&str> = v.keys().map(String::as_str).collect();
        assert_eq!(keys, ["a", "user_agent", "device"], "{out}");
        assert_eq!(v["a"], serde_json::json!({"b": [1, "}"]}));
        assert_eq!(v["device"]["bot"], true, "{out}");
    }

    #[test]
    fn answers_kept_in_the_dictionary_read_back_as_stored_inline() {
        use crate::store::codec::{EventRecord, decode_event, encode_event};
        use crate::store::enrichments::{Dictionary, Expand};
        use crate::store::writer::Pending;
        use redb::ReadableDatabase;
        let e = RawEnrich {
            user_agent: Some(true),
            peer_ip: Some(vec!["*".into()]),
            ..RawEnrich::default()
        }
        .resolve()
        .unwrap()
        .unwrap();
        let iphone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Mobile/15E148 Safari/604.1";
        let contexts = [
            r#"{"user_agent":"curl/8.5.0"}"#.to_owned(),
            "{}".to_owned(),
            format!(r#"{{ "a" : 1, "user_agent":"{iphone}" }}"#),
            r#"{"ip":"203.0.113.9","user_agent":"curl/8.5.0"}"#.to_owned(),
            r#"{"user_agent":"curl/8.5.0","device":{"x":1}}"#.to_owned(),
            "not json".to_owned(),
        ];
        let events = || -> Vec<Pending> {
            contexts
                .iter()
                .map(|c| {
                    let r = EventRecord {
                        context: c.clone(),
                        ..EventRecord::for_test("e")
                    };
                    Pending::for_test("e", encode_event(&r))
                })
                .collect()
        };
        let client = Some("198.51.100.7".parse().unwrap());
        let mut inline = events();
        e.apply("app", client, &mut inline, None);

        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path()).unwrap();
        let db = store.db().unwrap();
        let dict = Dictionary::load(&db).unwrap();
        let mut kept = events();
        e.apply("app", client, &mut kept, Some(&dict));
        // Two devices (curl, the iPhone), each once.
        assert_eq!(dict.len(), 2);
        let txn = db.begin_write().unwrap();
        dict.store_new(&txn).unwrap();
        txn.commit().unwrap();

        let read = db.begin_read().unwrap();
        let mut expand = Expand::new(&read).unwrap();
        for (i, (a, b)) in inline.iter().zip(&kept).enumerate() {
            let want = decode_event(a.record()).unwrap();
            let mut got = decode_event(b.record()).unwrap();
            let answered = want.context.contains("\"device\":{\"type");
            assert_eq!(!got.interned.is_none(), answered, "{i}: {}", want.context);
            assert!(!answered || b.record().len() + 40 < a.record().len(), "{i}");
            expand.record(&mut got).unwrap();
            assert_eq!(got, want, "{i}");
        }
    }

    /// Real user agents: iOS (an app over CFNetwork, Safari), Android (Chrome, an app),
    /// desktop Chrome, Firefox and Safari, and bots.
    #[test]
    fn user_agents_name_their_device() {
        let ua = ua::Ua::default();
        let d = |s: &str| serde_json::from_str::<Value>(&ua.device(s).unwrap().text).unwrap();
        let cases: [(&str, &str, Option<&str>, Option<&str>); 10] = [
            (
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Mobile/15E148 Safari/604.1",
                "mobile",
                Some("iOS"),
                Some("Mobile Safari"),
            ),
            (
                "MyGame/2.3.1 CFNetwork/1490.0.4 Darwin/23.2.0",
                "mobile",
                Some("iOS"),
                None,
            ),
            (
                "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1",
                "tablet",
                Some("iOS"),
                Some("Mobile Safari"),
            ),
            (
                "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.144 Mobile Safari/537.36",
                "mobile",
                Some("Android"),
                Some("Chrome Mobile"),
            ),
            (
                "Dalvik/2.1.0 (Linux; U; Android 13; SM-S911B Build/TP1A.220624.014)",
                "mobile",
                Some("Android"),
                None,
            ),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
                "desktop",
                Some("Windows"),
                Some("Chrome"),
            ),
            (
                "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
                "desktop",
                Some("Ubuntu"),
                Some("Firefox"),
            ),
            (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Safari/605.1.15",
                "desktop",
                Some("Mac OS X"),
                Some("Safari"),
            ),
            (
                "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
                "bot",
                None,
                None,
            ),
            ("curl/8.5.0", "bot", None, None),
        ];
        for (agent, kind, os, browser) in cases {
            let v = d(agent);
            assert_eq!(v["type"], kind, "{agent}: {v}");
            assert_eq!(v["bot"], kind == "bot", "{agent}: {v}");
            if let Some(os) = os {
                assert_eq!(v["os"], os, "{agent}: {v}");
            }
            if let Some(b) = browser {
                assert_eq!(v["browser"], b, "{agent}: {v}");
            }
        }
        // Seen again: the cache's answer is the parser's.
        let agent = cases[0].0;
        assert_eq!(d(agent), d(agent));
    }
}
