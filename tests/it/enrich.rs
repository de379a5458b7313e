//! Offline enrichment against a running server: geo databases the tests write themselves (a
//! small MaxMind DB writer below, after the format's specification), real user agents, every
//! dialect that carries an address or a user agent, the request's own address through a
//! trusted proxy, reloads, the IP policy applied after the lookup, and no change without
//! the configuration.

use crate::support::*;
use inlet::auth::secrets::sign;
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Stdio};

/// A value of the MaxMind DB data section.
enum V {
    Str(&'static str),
    U32(u32),
    U16(u16),
    U64(u64),
    Map(Vec<(&'static str, V)>),
    Arr(Vec<V>),
}

fn control(out: &mut Vec<u8>, kind: u8, size: usize) {
    let (bits, extended) = if kind <= 7 {
        (kind, None)
    } else {
        (0, Some(kind - 7))
    };
    let (small, extra): (u8, Vec<u8>) = match size {
        0..29 => (size as u8, vec![]),
        29..285 => (29, vec![(size - 29) as u8]),
        285..65_821 => (30, ((size - 285) as u16).to_be_bytes().to_vec()),
        _ => (31, ((size - 65_821) as u32).to_be_bytes()[1..].to_vec()),
    };
    out.push(bits << 5 | small);
    out.extend(extended);
    out.extend(extra);
}

fn uint(out: &mut Vec<u8>, kind: u8, v: u64) {
    let bytes = v.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    control(out, kind, 8 - skip);
    out.extend_from_slice(&bytes[skip..]);
}

fn encode(v: &V, out: &mut Vec<u8>) {
    match v {
        V::Str(s) => {
            control(out, 2, s.len());
            out.extend_from_slice(s.as_bytes());
        }
        V::U16(n) => uint(out, 5, u64::from(*n)),
        V::U32(n) => uint(out, 6, u64::from(*n)),
        V::U64(n) => uint(out, 9, *n),
        V::Map(pairs) => {
            control(out, 7, pairs.len());
            for (k, v) in pairs {
                encode(&V::Str(k), out);
                encode(v, out);
            }
        }
        V::Arr(items) => {
            control(out, 11, items.len());
            for v in items {
                encode(v, out);
            }
        }
    }
}

/// A MaxMind DB file (IPv6 tree, 24-bit records; IPv4 networks under `::/96`) mapping each
/// network (`"81.2.69.128/25"`, `"2001:db8:abcd:1000::/52"`) to its record.
fn mmdb(networks: Vec<(&str, V)>) -> Vec<u8> {
    #[derive(Clone, Copy)]
    enum Rec {
        Empty,
        Node(usize),
        Data(usize),
    }
    let mut nodes: Vec<[Rec; 2]> = vec![[Rec::Empty; 2]];
    let mut data = Vec::new();
    for (net, value) in networks {
        let (addr, len) = net.split_once('/').unwrap();
        let len: usize = len.parse().unwrap();
        let (bits, len) = match addr.parse::<std::net::IpAddr>().unwrap() {
            std::net::IpAddr::V4(v4) => (u128::from(u32::from(v4)), len + 96),
            std::net::IpAddr::V6(v6) => (u128::from(v6), len),
        };
        let offset = data.len();
        encode(&value, &mut data);
        let mut node = 0;
        for depth in 0..len {
            let bit = (bits >> (127 - depth) & 1) as usize;
            if depth == len - 1 {
                nodes[node][bit] = Rec::Data(offset);
                break;
            }
            node = match nodes[node][bit] {
                Rec::Node(n) => n,
                _ => {
                    nodes.push([Rec::Empty; 2]);
                    nodes[node][bit] = Rec::Node(nodes.len() - 1);
                    nodes.len() - 1
                }
            };
        }
    }
    let count = nodes.len();
    let mut out = Vec::new();
    for pair in &nodes {
        for rec in pair {
            let n = match *rec {
                Rec::Empty => count,
                Rec::Node(n) => n,
                Rec::Data(off) => count + 16 + off,
            } as u32;
            out.extend_from_slice(&n.to_be_bytes()[1..]);
        }
    }
    out.extend_from_slice(&[0; 16]);
    out.extend_from_slice(&data);
    out.extend_from_slice(b"\xAB\xCD\xEFMaxMind.com");
    encode(
        &V::Map(vec![
            ("node_count", V::U32(count as u32)),
            ("record_size", V::U16(24)),
            ("ip_version", V::U16(6)),
            ("database_type", V::Str("inlet-test")),
            ("languages", V::Arr(vec![V::Str("en")])),
            ("binary_format_major_version", V::U16(2)),
            ("binary_format_minor_version", V::U16(0)),
            ("build_epoch", V::U64(1_700_000_000)),
            ("description", V::Map(vec![("en", V::Str("inlet test"))])),
        ]),
        &mut out,
    );
    out
}

fn country(code: &'static str) -> V {
    V::Map(vec![("country", V::Map(vec![("iso_code", V::Str(code))]))])
}

/// A city database: London for 81.2.69.128/25, Germany for 2001:db8:abcd:1000::/52,
/// Antarctica for loopback (the tests' own peer address); `london`'s country code is given.
/// Narrower than the IP policy's truncation (/24, /48), so that a lookup of a truncated
/// address finds nothing.
fn city_db(london: &'static str) -> Vec<u8> {
    mmdb(vec![
        (
            "81.2.69.128/25",
            V::Map(vec![
                (
                    "city",
                    V::Map(vec![("names", V::Map(vec![("en", V::Str("London"))]))]),
                ),
                ("country", V::Map(vec![("iso_code", V::Str(london))])),
                (
                    "subdivisions",
                    V::Arr(vec![V::Map(vec![
                        ("iso_code", V::Str("ENG")),
                        ("names", V::Map(vec![("en", V::Str("England"))])),
                    ])]),
                ),
            ]),
        ),
        ("2001:db8:abcd:1000::/52", country("DE")),
        ("127.0.0.0/8", country("AQ")),
    ])
}

fn asn_db() -> Vec<u8> {
    mmdb(vec![(
        "81.2.69.128/25",
        V::Map(vec![
            ("autonomous_system_number", V::U32(20712)),
            (
                "autonomous_system_organization",
                V::Str("Andrews & Arnold Ltd"),
            ),
        ]),
    )])
}

const IPHONE_SAFARI: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Mobile/15E148 Safari/604.1";
const IOS_APP: &str = "MyGame/2.3.1 CFNetwork/1490.0.4 Darwin/23.2.0";
const ANDROID_CHROME: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.144 Mobile Safari/537.36";
const DESKTOP_CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
const DESKTOP_FIREFOX: &str =
    "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0";
const DESKTOP_SAFARI: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Safari/605.1.15";
const GOOGLEBOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

/// A server with both databases and user agents on; `default` takes all five dialects.
fn server(dbs: &Path, extra: &[&str]) -> (Inlet, String, String) {
    let city = dbs.join("city.mmdb");
    let asn = dbs.join("asn.mmdb");
    if !city.exists() {
        std::fs::write(&city, city_db("GB")).unwrap();
    }
    std::fs::write(&asn, asn_db()).unwrap();
    let geo = format!("{},{}", city.display(), asn.display());
    let mut args = vec!["--enrich-geo-db", &geo, "--enrich-user-agent"];
    args.extend_from_slice(extra);
    let inlet = Inlet::start_with(&args);
    let (key, secret) = inlet.every_dialect();
    (inlet, key, secret)
}

fn ok(r: std::io::Result<Resp>) -> Resp {
    let r = r.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    r
}

fn native(c: &mut Client, key: &str, id: &str, context: Value) {
    let mut e = event(id);
    e["context"] = context;
    assert_eq!(c.post_json("/s2s/event", key, &e).status, 200);
}

fn datafly(c: &mut Client, secret: &str, body: Value) {
    let body = body.to_string();
    let ts = now_ms().to_string();
    let sig = sign(secret, &ts, body.as_bytes());
    ok(c.post(
        "/v1/events",
        &[("X-Signature", &sig), ("X-Timestamp", &ts)],
        body.as_bytes(),
    ));
}

fn adjust(c: &mut Client, key: &str, device: &str, ip: &str, ua: &str) {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    let auth = format!("Bearer {key}");
    let query = format!(
        "s2s=1&app_token=4w565xzmb54d&event_token=f0ob4r&adid={device}&ip_address={ip}&user_agent={}",
        enc(ua)
    );
    ok(c.request(
        "POST",
        &format!("/event?{query}"),
        &[("Authorization", &auth)],
        b"",
    ));
}

fn appsflyer(c: &mut Client, key: &str, id: &str, ip: &str, ua: &str) {
    ok(c.post(
        "/v1/web.bundle/event",
        &[("Content-Type", "application/json")],
        json!({"afUserId": id, "webDevKey": key, "eventType": "EVENT", "eventName": "visit",
               "ip": ip, "userAgent": ua})
        .to_string()
        .as_bytes(),
    ));
}

/// The exported event whose id or identifiers mention `mark`.
fn find<'a>(events: &'a [Value], mark: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e.to_string().contains(mark))
        .unwrap_or_else(|| panic!("no event with {mark}: {events:?}"))
}

#[test]
fn every_dialect_carrying_an_address_or_user_agent_is_enriched() {
    let dbs = tempfile::tempdir().unwrap();
    let (inlet, key, secret) = server(dbs.path(), &[]);
    let mut c = inlet.client();
    native(
        &mut c,
        &key,
        "ev-native-1",
        json!({"ip": "81.2.69.160", "user_agent": IPHONE_SAFARI}),
    );
    // The bulk endpoint, one event with each desktop browser.
    let bulk: Vec<Value> = [
        ("ev-bulk-chrome", DESKTOP_CHROME),
        ("ev-bulk-firefox", DESKTOP_FIREFOX),
        ("ev-bulk-safari", DESKTOP_SAFARI),
    ]
    .iter()
    .map(|(id, ua)| {
        let mut e = event(id);
        e["context"] = json!({"user_agent": ua});
        e
    })
    .collect();
    let r = c.post_json("/s2s/events/bulk", &key, &json!({ "events": bulk }));
    assert_eq!(r.status, 200, "{}", r.text());
    datafly(
        &mut c,
        &secret,
        json!({"type": "track", "event": "Viewed", "anonymousId": "anon-df-1",
               "context": {"ip": "2001:db8:abcd:1012::9", "userAgent": ANDROID_CHROME}}),
    );
    adjust(&mut c, &key, "adid-adj-1", "81.2.69.161", IOS_APP);
    appsflyer(&mut c, &key, "af-enrich-1", "81.2.69.162", GOOGLEBOT);
    let events = inlet.export();

    let e = find(&events, "ev-native-1");
    let ctx = &e["context"];
    assert_eq!(ctx["ip"], "81.2.69.160", "{e}");
    assert_eq!(
        ctx["geo"],
        json!({"country": "GB", "region": "ENG", "city": "London"}),
        "{e}"
    );
    assert_eq!(
        ctx["asn"],
        json!({"number": 20712, "org": "Andrews & Arnold Ltd"}),
        "{e}"
    );
    assert_eq!(ctx["device"]["type"], "mobile", "{e}");
    assert_eq!(ctx["device"]["os"], "iOS", "{e}");
    assert_eq!(ctx["device"]["os_version"], "17.2", "{e}");
    assert_eq!(ctx["device"]["browser"], "Mobile Safari", "{e}");
    assert_eq!(ctx["device"]["bot"], false, "{e}");

    for (id, os, browser) in [
        ("ev-bulk-chrome", "Windows", "Chrome"),
        ("ev-bulk-firefox", "Ubuntu", "Firefox"),
        ("ev-bulk-safari", "Mac OS X", "Safari"),
    ] {
        let e = find(&events, id);
        let d = &e["context"]["device"];
        assert_eq!(
            (&d["type"], &d["os"], &d["browser"]),
            (&json!("desktop"), &json!(os), &json!(browser)),
            "{e}"
        );
        // No address, no geo.
        assert!(e["context"].get("geo").is_none(), "{e}");
    }

    let e = find(&events, "anon-df-1");
    assert_eq!(e["context"]["geo"], json!({"country": "DE"}), "{e}");
    assert!(e["context"].get("asn").is_none(), "{e}");
    assert_eq!(e["context"]["device"]["os"], "Android", "{e}");
    assert_eq!(e["context"]["device"]["browser"], "Chrome Mobile", "{e}");
    assert_eq!(e["context"]["device"]["type"], "mobile", "{e}");

    let e = find(&events, "adid-adj-1");
    assert_eq!(e["context"]["geo"]["country"], "GB", "{e}");
    assert_eq!(e["context"]["device"]["os"], "iOS", "{e}");
    assert_eq!(e["context"]["device"]["type"], "mobile", "{e}");

    let e = find(&events, "af-enrich-1");
    assert_eq!(e["context"]["geo"]["city"], "London", "{e}");
    assert_eq!(e["context"]["device"]["type"], "bot", "{e}");
    assert_eq!(e["context"]["device"]["bot"], true, "{e}");

    // An address no database knows, and one that is no address: nothing added, nothing lost.
    native(
        &mut c,
        &key,
        "ev-native-unknown",
        json!({"ip": "192.0.2.1", "user_agent": "curl/8.5.0", "geo": {"country": "sender's"}}),
    );
    native(&mut c, &key, "ev-native-junk", json!({"ip": "not-an-ip"}));
    let events = inlet.export();
    let e = find(&events, "ev-native-unknown");
    assert_eq!(e["context"]["geo"], json!({"country": "sender's"}), "{e}");
    assert!(e["context"].get("asn").is_none(), "{e}");
    assert_eq!(e["context"]["device"]["bot"], true, "{e}");
    let e = find(&events, "ev-native-junk");
    assert_eq!(e["context"], json!({"ip": "not-an-ip"}), "{e}");
}

/// The answers are kept once, in the database's dictionary, not in every event: the file
/// holds an organisation's name a few times however many events name it, and every event
/// reads back with its answers after a restart and from a restored backup.
#[test]
fn answers_are_stored_once_and_read_back_after_a_restart_and_from_a_backup() {
    let dbs = tempfile::tempdir().unwrap();
    let (mut inlet, key, _) = server(dbs.path(), &[]);
    let mut c = inlet.client();
    let home = json!({"ip": "81.2.69.160", "user_agent": IPHONE_SAFARI});
    for i in 0..40 {
        native(&mut c, &key, &format!("ev-once-{i}"), home.clone());
    }
    inlet.kill();
    inlet.restart();
    let mut c = inlet.client();
    native(&mut c, &key, "ev-once-after", home.clone());
    native(
        &mut c,
        &key,
        "ev-once-new",
        json!({"user_agent": DESKTOP_FIREFOX}),
    );
    // London's geo and network, the iPhone (both read back from the file), and Firefox.
    assert_eq!(metric(&inlet, "inlet_enrich_dictionary_entries"), Some(3.0));
    assert_eq!(
        metric(&inlet, "inlet_enrich_dictionary_full_total"),
        Some(0.0)
    );
    let backup_dir = tempfile::tempdir().unwrap();
    let backup = backup_dir.path().join("b.redb");
    inlet.cli_ok(&["backup", backup.to_str().unwrap()]);
    let restored = tempfile::tempdir().unwrap();
    cli_ok(restored.path(), &["restore", backup.to_str().unwrap()]);

    for events in [
        inlet.export(),
        parse_ndjson(&cli_ok(restored.path(), &["export"])),
    ] {
        assert_eq!(events.len(), 42);
        for e in &events {
            let ctx = &e["context"];
            if e["event_id"] == "ev-once-new" {
                assert_eq!(ctx["device"]["browser"], "Firefox", "{e}");
                assert!(ctx.get("geo").is_none(), "{e}");
                continue;
            }
            // Where the fields were added, after the sender's.
            let keys: Vec<&str> = ctx
                .as_object()
                .unwrap()
                .keys()
                .map(|k| k.as_str())
                .collect();
            assert_eq!(keys, ["ip", "user_agent", "geo", "asn", "device"], "{e}");
            assert_eq!(ctx["geo"]["city"], "London", "{e}");
            assert_eq!(ctx["asn"]["org"], "Andrews & Arnold Ltd", "{e}");
            assert_eq!(ctx["device"]["browser"], "Mobile Safari", "{e}");
        }
    }
    inlet.kill();
    let file = std::fs::read(inlet.data().join("inlet.redb")).unwrap();
    let copies = file
        .windows(b"Andrews & Arnold Ltd".len())
        .filter(|w| *w == b"Andrews & Arnold Ltd")
        .count();
    assert!(
        (1..10).contains(&copies),
        "the organisation's name is in the file {copies} times for 41 events"
    );
}

/// GameRebellion carries no address: an app that takes the request's address gets the
/// client's, named by a trusted proxy's `X-Forwarded-For` (the tests' peer is loopback).
#[test]
fn the_request_address_is_taken_per_app_through_a_trusted_proxy() {
    let dbs = tempfile::tempdir().unwrap();
    let (inlet, key, _) = server(
        dbs.path(),
        &[
            "--enrich-peer-ip",
            "default",
            "--enrich-trusted-proxies",
            "127.0.0.0/8",
        ],
    );
    inlet.cli_ok(&["apps", "add", "other", "--tenant", "default"]);
    let other = inlet.mint("other");
    let mut c = inlet.client();
    let send = |c: &mut Client, key: &str, id: &str, xff: Option<&str>| {
        let mut headers = vec![("X-API-Key", key), ("Content-Type", "application/json")];
        if let Some(x) = xff {
            headers.push(("X-Forwarded-For", x));
        }
        let body = json!({"event_type": "level_up", "event_id": id,
                          "identifiers": {"player_id": "p-1"}});
        ok(c.post("/api/v1/event", &headers, body.to_string().as_bytes()));
    };
    send(&mut c, &key, "gr-xff", Some("10.9.9.9, 81.2.69.170"));
    send(&mut c, &key, "gr-peer", None);
    send(&mut c, &other, "gr-other", Some("81.2.69.171"));
    let events = inlet.export();
    let e = find(&events, "gr-xff");
    assert_eq!(e["context"]["ip"], "81.2.69.170", "{e}");
    assert_eq!(e["context"]["geo"]["city"], "London", "{e}");
    let e = find(&events, "gr-peer");
    assert_eq!(e["context"]["ip"], "127.0.0.1", "{e}");
    assert_eq!(e["context"]["geo"], json!({"country": "AQ"}), "{e}");
    // An app not named takes nothing from the request.
    let e = find(&events, "gr-other");
    assert!(e["context"].get("ip").is_none(), "{e}");
    assert!(e["context"].get("geo").is_none(), "{e}");
}

/// Privacy first: the lookup reads the full address, the app's policy then truncates or drops
/// it; the country stays and the full address is in no file of the data dir.
#[test]
fn the_ip_policy_applies_after_the_lookup() {
    let dbs = tempfile::tempdir().unwrap();
    let (inlet, key, secret) = server(dbs.path(), &[]);
    inlet.cli_ok(&["apps", "store-less", "default", "--ip", "truncate"]);
    let mut c = inlet.client();
    native(
        &mut c,
        &key,
        "ev-priv-1",
        json!({"ip": "81.2.69.187", "user_agent": ANDROID_CHROME}),
    );
    datafly(
        &mut c,
        &secret,
        json!({"type": "track", "event": "Viewed", "anonymousId": "anon-priv-1",
               "context": {"ip": "2001:db8:abcd:1077:1:2:3:4"}}),
    );
    appsflyer(&mut c, &key, "af-priv-1", "81.2.69.188", DESKTOP_CHROME);
    let events = inlet.export();
    let e = find(&events, "ev-priv-1");
    assert_eq!(e["context"]["ip"], "81.2.69.0", "{e}");
    assert_eq!(e["context"]["geo"]["country"], "GB", "{e}");
    assert_eq!(e["context"]["asn"]["number"], 20712, "{e}");
    let e = find(&events, "anon-priv-1");
    assert_eq!(e["context"]["ip"], "2001:db8:abcd::", "{e}");
    assert_eq!(e["context"]["geo"]["country"], "DE", "{e}");
    let e = find(&events, "af-priv-1");
    assert_eq!(e["context"]["geo"]["city"], "London", "{e}");
    inlet.cli_ok(&["apps", "store-less", "default", "--ip", "drop"]);
    native(&mut c, &key, "ev-priv-2", json!({"ip": "81.2.69.199"}));
    let events = inlet.export();
    let e = find(&events, "ev-priv-2");
    assert!(e["context"].get("ip").is_none(), "{e}");
    assert_eq!(e["context"]["geo"]["country"], "GB", "{e}");
    for needle in [
        "81.2.69.187",
        "81.2.69.188",
        "81.2.69.199",
        "2001:db8:abcd:1077",
    ] {
        assert_eq!(
            files_contain(inlet.data(), needle.as_bytes()),
            None,
            "{needle}"
        );
    }
}

fn metric(inlet: &Inlet, name: &str) -> Option<f64> {
    let text = inlet.client().get("/metrics").ok()?.text();
    text.lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// A changed file is read again without a restart; a broken one is logged and counted, and
/// the one read before stays in use; SIGHUP reads the files again, changed or not.
#[test]
fn geo_databases_reload_on_change_and_on_sighup_and_keep_the_old_one_when_broken() {
    let dbs = tempfile::tempdir().unwrap();
    let city = dbs.path().join("city.mmdb");
    std::fs::write(&city, city_db("GB")).unwrap();
    let (inlet, key, _) = server(dbs.path(), &[]);
    let mut c = inlet.client();
    let mut n = 0;
    let mut country_now = |c: &mut Client| {
        n += 1;
        let id = format!("ev-reload-{n}");
        native(c, &key, &id, json!({"ip": "81.2.69.160"}));
        let events = inlet.export();
        find(&events, &id)["context"]["geo"]["country"].clone()
    };
    assert_eq!(country_now(&mut c), "GB");
    // Replaced as a deployment would: a new file renamed over the old one.
    let write = |bytes: Vec<u8>| {
        let tmp = dbs.path().join("city.mmdb.new");
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, &city).unwrap();
    };
    write(city_db("FR"));
    wait_for("the changed database in use", || {
        country_now(&mut c) == "FR"
    });
    assert_eq!(
        metric(&inlet, "inlet_enrich_geo_reload_failures"),
        Some(0.0)
    );
    // Same length and modification time as the file read before: only SIGHUP notices.
    let good = city_db("NL");
    assert_eq!(good.len(), city_db("FR").len());
    let then = std::fs::metadata(&city).unwrap().modified().unwrap();
    let tmp = dbs.path().join("city.mmdb.new");
    std::fs::write(&tmp, good).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&tmp)
        .unwrap()
        .set_modified(then)
        .unwrap();
    std::fs::rename(&tmp, &city).unwrap();
    let reloads = metric(&inlet, "inlet_enrich_geo_reloads").unwrap();
    let status = Command::new("kill")
        .args(["-HUP", &inlet.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_for("SIGHUP's reload", || {
        metric(&inlet, "inlet_enrich_geo_reloads").unwrap_or(0.0) > reloads
    });
    assert_eq!(country_now(&mut c), "NL");
    write(b"not a database at all".to_vec());
    wait_for("the failed reload counted", || {
        metric(&inlet, "inlet_enrich_geo_reload_failures") == Some(1.0)
    });
    assert!(
        inlet
            .log
            .lock()
            .unwrap()
            .contains("geo database reload failed")
    );
    assert_eq!(country_now(&mut c), "NL");
}

/// The flat layouts of IPinfo's lite file and the ip-location-db packages are read too.
#[test]
fn flat_database_layouts_are_read_too() {
    let dbs = tempfile::tempdir().unwrap();
    let flat = dbs.path().join("flat.mmdb");
    std::fs::write(
        &flat,
        mmdb(vec![(
            "81.2.69.128/25",
            V::Map(vec![
                ("country_code", V::Str("JP")),
                ("state1", V::Str("Tokyo")),
                ("city", V::Str("Shinjuku")),
            ]),
        )]),
    )
    .unwrap();
    let ipinfo = dbs.path().join("ipinfo.mmdb");
    std::fs::write(
        &ipinfo,
        mmdb(vec![(
            "81.2.69.128/25",
            V::Map(vec![
                ("asn", V::Str("AS2516")),
                ("as_name", V::Str("KDDI CORPORATION")),
                ("country_code", V::Str("US")),
            ]),
        )]),
    )
    .unwrap();
    let geo = format!("{},{}", flat.display(), ipinfo.display());
    let inlet = Inlet::start_with(&["--enrich-geo-db", &geo]);
    let key = inlet.mint("default");
    native(
        &mut inlet.client(),
        &key,
        "ev-flat",
        json!({"ip": "81.2.69.130"}),
    );
    let events = inlet.export();
    let e = find(&events, "ev-flat");
    // The first file that has a field gives it.
    assert_eq!(
        e["context"]["geo"],
        json!({"country": "JP", "region": "Tokyo", "city": "Shinjuku"}),
        "{e}"
    );
    assert_eq!(
        e["context"]["asn"],
        json!({"number": 2516, "org": "KDDI CORPORATION"}),
        "{e}"
    );
}

/// Answers are cached by address, or by /24 only where every file's network covers the
/// whole /24: a neighbour of a cached address inside a narrower network gets its own answer.
#[test]
fn cached_answers_hold_only_for_the_network_they_were_found_in() {
    let dbs = tempfile::tempdir().unwrap();
    let city = dbs.path().join("city.mmdb");
    std::fs::write(
        &city,
        mmdb(vec![
            ("81.2.69.128/25", country("GB")),
            ("10.1.0.0/16", country("FR")),
            ("10.2.3.0/24", country("NL")),
            ("10.2.4.0/24", country("BE")),
        ]),
    )
    .unwrap();
    let asn = dbs.path().join("asn.mmdb");
    // Narrower than /24 in the second file only: 10.1.7.x is not one block.
    std::fs::write(
        &asn,
        mmdb(vec![(
            "10.1.7.0/25",
            V::Map(vec![("autonomous_system_number", V::U32(64500))]),
        )]),
    )
    .unwrap();
    let geo = format!("{},{}", city.display(), asn.display());
    let inlet = Inlet::start_with(&["--enrich-geo-db", &geo]);
    let key = inlet.mint("default");
    let mut c = inlet.client();
    // Each address twice, in an order that would hand a neighbour a cached answer.
    let cases: [(&str, Value, Value); 8] = [
        ("81.2.69.200", json!({"country": "GB"}), Value::Null),
        ("81.2.69.5", Value::Null, Value::Null),
        ("81.2.69.201", json!({"country": "GB"}), Value::Null),
        ("10.1.2.3", json!({"country": "FR"}), Value::Null),
        (
            "10.1.7.9",
            json!({"country": "FR"}),
            json!({"number": 64500}),
        ),
        ("10.1.7.200", json!({"country": "FR"}), Value::Null),
        ("10.2.3.250", json!({"country": "NL"}), Value::Null),
        ("10.2.4.1", json!({"country": "BE"}), Value::Null),
    ];
    for round in 0..2 {
        for (i, (ip, _, _)) in cases.iter().enumerate() {
            native(
                &mut c,
                &key,
                &format!("ev-near-{round}-{i}-"),
                json!({"ip": ip}),
            );
        }
    }
    let events = inlet.export();
    for round in 0..2 {
        for (i, (ip, geo, asn)) in cases.iter().enumerate() {
            let e = find(&events, &format!("ev-near-{round}-{i}-"));
            assert_eq!(e["context"]["geo"], *geo, "{ip}: {e}");
            assert_eq!(e["context"]["asn"], *asn, "{ip}: {e}");
        }
    }
}

#[test]
fn without_the_configuration_events_are_stored_as_sent() {
    let inlet = Inlet::start();
    let key = inlet.mint("default");
    let mut c = inlet.client();
    let context = json!({"ip": "81.2.69.160", "user_agent": IPHONE_SAFARI});
    native(&mut c, &key, "ev-plain", context.clone());
    let events = inlet.export();
    assert_eq!(find(&events, "ev-plain")["context"], context);
}

#[test]
fn a_missing_or_broken_database_is_a_clear_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.mmdb");
    std::fs::write(&broken, b"\x00\x01 definitely not mmdb").unwrap();
    let missing = dir.path().join("missing.mmdb");
    for (path, says) in [
        (&missing, "No such file"),
        (&broken, "not a MaxMind DB file"),
    ] {
        let out = Command::new(BIN)
            .env("INLET_DEFAULT_CONFIG", NO_DEFAULT_CONFIG)
            .env_remove("INLET_CONFIG")
            .arg("--data")
            .arg(dir.path().join("data"))
            .args(["serve", "--listen", "127.0.0.1:0", "--enrich-geo-db"])
            .arg(path)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("enrich.geo_db") && err.contains(&*path.to_string_lossy()),
            "{err}"
        );
        assert!(err.contains(says), "{err}");
    }
    // check-config shows the section.
    let good = dir.path().join("good.mmdb");
    std::fs::write(&good, city_db("GB")).unwrap();
    let out = Command::new(BIN)
        .env("INLET_DEFAULT_CONFIG", NO_DEFAULT_CONFIG)
        .env_remove("INLET_CONFIG")
        .args(["check-config", "--enrich-user-agent", "--enrich-geo-db"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let parsed: toml::Table = toml::from_str(&text).unwrap();
    assert_eq!(
        parsed["enrich"]["user_agent"].as_bool(),
        Some(true),
        "{text}"
    );
    assert_eq!(
        parsed["enrich"]["geo_db"][0].as_str(),
        Some(&*good.to_string_lossy()),
        "{text}"
    );
}
