//! Device from a user agent: the ua-parser project's parser (`ua-parser`, uap-rust) with the
//! uap-core rules vendored in `vendor/uap-core/` (converted once from its `regexes.yaml` to
//! JSON), compiled on first use, results cached per user-agent string.

use serde_json::{Map, Value};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// uap-core's rules as JSON (see `vendor/uap-core/README.md` for the version and how the
/// file was made).
const RULES: &str = include_str!("../../vendor/uap-core/regexes.json");

/// Distinct user agents remembered per generation; two generations are kept.
const CACHE: usize = 4096;

/// Longer user agents are not remembered (they would make the caches' memory the senders').
const KEY_MAX: usize = 512;

/// Distinct user agents remembered per generation in each thread, in front of the shared
/// cache (a hit takes no lock); two generations are kept. What a user agent renders to
/// depends on it and on the vendored rules only, so the parsers of every configuration
/// share these.
const NEAR: usize = 1024;

thread_local! {
    static NEAR_CACHE: RefCell<Cache> = RefCell::new(Cache::default());
}

/// The user-agent parser and its cache.
#[derive(Default)]
pub struct Ua {
    parser: OnceLock<Result<ua_parser::Extractor<'static>, String>>,
    cache: Mutex<Cache>,
}

/// A bounded cache: a user agent is looked up in the current generation, then in the old one
/// (and moved back); when the current one is full it becomes the old one.
#[derive(Default)]
struct Cache {
    now: HashMap<Box<str>, Arc<Device>>,
    old: HashMap<Box<str>, Arc<Device>>,
}

/// `context.device` of a user agent as JSON text, and its enrichment dictionary id
/// (`store::enrichments`).
#[derive(Debug)]
pub struct Device {
    pub text: Box<str>,
    pub memo: crate::store::enrichments::Memo,
}

impl Ua {
    /// Compiles the rules now (the server does it at start, off the request path); an
    /// error is the rules' (vendored, tested), logged once.
    pub fn warm(&self) -> Result<(), String> {
        self.parser().map(|_| ())
    }

    fn parser(&self) -> Result<&ua_parser::Extractor<'static>, String> {
        self.parser
            .get_or_init(|| {
                let started = std::time::Instant::now();
                let regexes: ua_parser::Regexes<'static> =
                    serde_json::from_str(RULES).map_err(|e| format!("user-agent rules: {e}"))?;
                let parser = ua_parser::Extractor::try_from(regexes)
                    .map_err(|e| format!("user-agent rules: {e}"));
                tracing::info!(
                    ms = started.elapsed().as_millis() as u64,
                    "user-agent rules compiled"
                );
                parser
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// `context.device` of a user agent (see [`device`]) as JSON text, from this thread's
    /// cache or the shared one when seen lately.
    pub fn device(&self, ua: &str) -> Option<Arc<Device>> {
        NEAR_CACHE.with(|near| {
            let mut near = near.borrow_mut();
            if let Some(v) = near.get(ua) {
                return Some(v);
            }
            let v = self.device_shared(ua)?;
            near.put(ua, v.clone(), NEAR);
            Some(v)
        })
    }

    fn device_shared(&self, ua: &str) -> Option<Arc<Device>> {
        if let Some(v) = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(ua) {
            return Some(v);
        }
        let parser = match self.parser() {
            Ok(p) => p,
            Err(_) => return None,
        };
        let v = Arc::new(Device {
            text: device(parser, ua).to_string().into(),
            memo: Default::default(),
        });
        let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        c.put(ua, v.clone(), CACHE);
        Some(v)
    }
}

impl Cache {
    fn get(&mut self, ua: &str) -> Option<Arc<Device>> {
        if let Some(v) = self.now.get(ua) {
            return Some(v.clone());
        }
        let (k, v) = self.old.remove_entry(ua)?;
        self.now.insert(k, v.clone());
        Some(v)
    }

    fn put(&mut self, ua: &str, v: Arc<Device>, cap: usize) {
        if ua.len() > KEY_MAX {
            return;
        }
        if self.now.len() >= cap {
            self.old = std::mem::take(&mut self.now);
        }
        self.now.insert(ua.into(), v);
    }
}

/// What a user agent says of the device: `{"type", "bot", "os", "os_version", "browser",
/// "browser_version", "brand", "model"}`, absent ones left out. `type` is `bot`, `tablet`,
/// `mobile`, `desktop` or `other`.
pub fn device(parser: &ua_parser::Extractor<'_>, ua: &str) -> Value {
    let (agent, os, dev) = parser.extract(ua);
    let family = |f: &str| Some(f).filter(|f| *f != "Other").map(str::to_owned);
    let version = |parts: [Option<&str>; 3]| {
        let parts: Vec<&str> = parts.into_iter().map_while(|p| p).collect();
        Some(parts.join(".")).filter(|v| !v.is_empty())
    };
    let os_name = os.as_ref().and_then(|o| family(&o.os));
    let os_version = os
        .as_ref()
        .and_then(|o| version([o.major.as_deref(), o.minor.as_deref(), o.patch.as_deref()]));
    let browser = agent.as_ref().and_then(|a| family(&a.family));
    let browser_version = agent
        .as_ref()
        .and_then(|a| version([a.major, a.minor, a.patch]));
    let dev_family = dev.as_ref().map(|d| d.device.as_ref()).unwrap_or("Other");
    let brand = dev
        .as_ref()
        .and_then(|d| d.brand.as_deref())
        .map(str::to_owned);
    let model = dev
        .as_ref()
        .and_then(|d| d.model.as_deref())
        .map(str::to_owned);
    let kind = kind(ua, os_name.as_deref(), dev_family, browser.as_deref());
    let mut m = Map::new();
    m.insert("type".into(), Value::from(kind));
    m.insert("bot".into(), Value::from(kind == "bot"));
    for (k, v) in [
        ("os", os_name),
        ("os_version", os_version),
        ("browser", browser),
        ("browser_version", browser_version),
        ("brand", brand),
        ("model", model),
    ] {
        if let Some(v) = v {
            m.insert(k.into(), Value::from(v));
        }
    }
    Value::Object(m)
}

/// The device type: uap-core names crawlers' device `Spider`; tablets and phones by their
/// device family and OS; the desktop systems by name.
fn kind(ua: &str, os: Option<&str>, device: &str, browser: Option<&str>) -> &'static str {
    let low = ua.to_ascii_lowercase();
    // HTTP libraries and command-line clients are not people either.
    const CLIENTS: [&str; 8] = [
        "curl/",
        "wget/",
        "python-requests",
        "python-urllib",
        "go-http-client",
        "okhttp/",
        "libwww-perl",
        "httpclient",
    ];
    if device == "Spider"
        || matches!(browser, Some(b) if b.ends_with("bot") || b.ends_with("Bot") || b == "curl" || b == "Wget")
        || CLIENTS.iter().any(|c| low.starts_with(c))
        || low.contains("bot/")
        || low.contains("crawler")
        || low.contains("spider")
    {
        return "bot";
    }
    let tablet_family = ["iPad", "Tablet", "Kindle", "Nexus 7", "Nexus 9", "Nexus 10"];
    if tablet_family.iter().any(|t| device.contains(t))
        // A browser on Android says `Mobile` on a phone; an app's `Dalvik/` agent says nothing.
        || (os == Some("Android") && low.starts_with("mozilla/") && !low.contains("mobile"))
    {
        return "tablet";
    }
    match os {
        Some("iOS" | "Android" | "Windows Phone" | "BlackBerry OS" | "KaiOS" | "HarmonyOS") => {
            "mobile"
        }
        _ if matches!(device, "iPhone" | "iPod" | "iPod Touch")
            || device.starts_with("Generic Smartphone") =>
        {
            "mobile"
        }
        Some(
            "Windows" | "Mac OS X" | "macOS" | "Linux" | "Ubuntu" | "Fedora" | "Chrome OS"
            | "FreeBSD" | "OpenBSD" | "Debian",
        ) => "desktop",
        _ if device == "Mac" => "desktop",
        _ => "other",
    }
}
