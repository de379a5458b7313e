//! SKAdNetwork conversion values for Adjust S2S events of iOS 14+ apps: an app's rules, the
//! value an event earns, and how a device's stored value moves. Pure: no I/O, no clock.
//!
//! Adjust answers an S2S event of an iOS 14+ app with the conversion value its backend
//! computed, and the server hands it to the app (which calls SKAdNetwork's
//! `updatePostbackConversionValue`). The answer's fields are the ones Adjust's iOS SDK reads
//! from Adjust's responses (`ADJActivityHandler.m`, `checkConversionValue:`):
//! `skadn_conv_value` (fine value, 0–63), `skadn_coarse_value` (`low` / `medium` / `high`)
//! and `skadn_lock_window` (whether to end the conversion window now). A request is an
//! iOS 14+ one when it carries `skadn_registered_at`, the time the app registered for
//! SKAdNetwork attribution, which the SDK sends with its own requests.
//!
//! Rules, per app: an event name → a value, revenue buckets (revenue ≥ `min` → a value),
//! and a window after `skadn_registered_at` within which events may raise the value. An
//! event earns the highest value of the rules it matches. A device's value only goes up
//! (fine value, then coarse value), and stops moving once a matched rule locked the window.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Largest fine conversion value (6 bits).
pub const MAX_FINE: u8 = 63;
/// The window when none is set: Adjust's default conversion value window.
pub const DEFAULT_WINDOW_HOURS: u32 = 24;
/// Longest window: SKAdNetwork 4's last postback window ends 35 days after install.
pub const MAX_WINDOW_HOURS: u32 = 35 * 24;
/// Most event rules and most revenue buckets of an app.
pub const MAX_RULES: usize = 64;

/// SKAdNetwork 4's coarse conversion value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Coarse {
    Low,
    Medium,
    High,
}

impl Coarse {
    /// The coarse value of a rule that names none: thirds of the fine range.
    pub fn of_fine(fine: u8) -> Coarse {
        match fine {
            0..=20 => Coarse::Low,
            21..=41 => Coarse::Medium,
            _ => Coarse::High,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Coarse::Low => "low",
            Coarse::Medium => "medium",
            Coarse::High => "high",
        }
    }

    fn parse(s: &str) -> Option<Coarse> {
        match s {
            "low" => Some(Coarse::Low),
            "medium" => Some(Coarse::Medium),
            "high" => Some(Coarse::High),
            _ => None,
        }
    }
}

/// What matching a rule earns.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Fine conversion value, 0–63.
    pub fine: u8,
    /// Coarse conversion value; `None`: [`Coarse::of_fine`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coarse: Option<Coarse>,
    /// Whether reaching this rule ends the conversion window (`skadn_lock_window`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lock: bool,
}

/// A revenue bucket: an event with `revenue >= min` (in the event's own currency) earns
/// `rule`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bucket {
    pub min: f64,
    pub fine: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coarse: Option<Coarse>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lock: bool,
}

impl Bucket {
    pub fn rule(&self) -> Rule {
        Rule {
            fine: self.fine,
            coarse: self.coarse,
            lock: self.lock,
        }
    }
}

/// An app's conversion value rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    /// Event name (after the `event_token` mapping) → what the event earns.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub events: BTreeMap<String, Rule>,
    /// Revenue buckets; an event earns the highest one it reaches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revenue: Vec<Bucket>,
    /// Hours after `skadn_registered_at` in which events may raise the value.
    #[serde(default = "default_window")]
    pub window_hours: u32,
}

fn default_window() -> u32 {
    DEFAULT_WINDOW_HOURS
}

/// A device's conversion value: what an answer carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Value {
    pub fine: u8,
    pub coarse: Coarse,
    pub lock: bool,
}

impl Rule {
    fn value(self) -> Value {
        Value {
            fine: self.fine,
            coarse: self.coarse.unwrap_or(Coarse::of_fine(self.fine)),
            lock: self.lock,
        }
    }

    /// Parses the CLI form `FINE[/COARSE][/lock]`, e.g. `20`, `20/medium`, `42/high/lock`.
    pub fn parse(spec: &str) -> Result<Rule, String> {
        let mut parts = spec.split('/');
        let fine = parts
            .next()
            .and_then(|f| f.parse::<u8>().ok())
            .ok_or_else(|| format!("{spec:?}: expected FINE[/COARSE][/lock], FINE 0-63"))?;
        let mut rule = Rule {
            fine,
            coarse: None,
            lock: false,
        };
        for part in parts {
            match part {
                "lock" if !rule.lock => rule.lock = true,
                c if rule.coarse.is_none() && !rule.lock => {
                    rule.coarse = Some(Coarse::parse(c).ok_or_else(|| {
                        format!("{spec:?}: coarse value {c:?} is not low, medium or high")
                    })?);
                }
                _ => return Err(format!("{spec:?}: expected FINE[/COARSE][/lock]")),
            }
        }
        Ok(rule)
    }
}

impl Rules {
    /// Parses the CLI's `--event NAME=RULE`, `--revenue MIN=RULE` and `--window-hours`.
    pub fn from_specs(
        events: &[String],
        revenue: &[String],
        window_hours: Option<u32>,
    ) -> Result<Rules, String> {
        let mut rules = Rules {
            events: BTreeMap::new(),
            revenue: Vec::new(),
            window_hours: window_hours.unwrap_or(DEFAULT_WINDOW_HOURS),
        };
        for spec in events {
            let (name, rule) = spec
                .rsplit_once('=')
                .ok_or_else(|| format!("--event {spec:?}: expected NAME=FINE[/COARSE][/lock]"))?;
            if rules
                .events
                .insert(name.to_owned(), Rule::parse(rule)?)
                .is_some()
            {
                return Err(format!("--event {name:?} is given twice"));
            }
        }
        for spec in revenue {
            let (min, rule) = spec
                .split_once('=')
                .ok_or_else(|| format!("--revenue {spec:?}: expected MIN=FINE[/COARSE][/lock]"))?;
            let min = min
                .parse::<f64>()
                .map_err(|_| format!("--revenue {spec:?}: {min:?} is not a number"))?;
            let rule = Rule::parse(rule)?;
            rules.revenue.push(Bucket {
                min,
                fine: rule.fine,
                coarse: rule.coarse,
                lock: rule.lock,
            });
        }
        rules.check()?;
        Ok(rules)
    }

    /// Checks what the wire and SKAdNetwork allow: fine values 0–63, at least one rule, at
    /// most [`MAX_RULES`] of each kind, event names as the event name rules, revenue
    /// thresholds finite and ≥ 0, a window of 1 to [`MAX_WINDOW_HOURS`] hours.
    pub fn check(&self) -> Result<(), String> {
        if self.events.is_empty() && self.revenue.is_empty() {
            return Err("no rules: give at least one event or revenue rule".into());
        }
        if self.events.len() > MAX_RULES || self.revenue.len() > MAX_RULES {
            return Err(format!(
                "at most {MAX_RULES} event rules and {MAX_RULES} revenue buckets"
            ));
        }
        for (name, rule) in &self.events {
            if name.is_empty()
                || name.chars().count() > crate::event::MAX_EVENT_NAME
                || name.chars().any(char::is_control)
            {
                return Err(format!("event name {name:?} is not a valid event name"));
            }
            check_fine(rule.fine)?;
        }
        for b in &self.revenue {
            if !b.min.is_finite() || b.min < 0.0 {
                return Err(format!("revenue threshold {} must be a number >= 0", b.min));
            }
            check_fine(b.fine)?;
        }
        if !(1..=MAX_WINDOW_HOURS).contains(&self.window_hours) {
            return Err(format!(
                "window of {} hours: must be 1-{MAX_WINDOW_HOURS}",
                self.window_hours
            ));
        }
        Ok(())
    }

    /// The value an event earns: the highest of its event rule and the highest revenue
    /// bucket it reaches; `None` when it matches none.
    pub fn value_of(&self, event_name: &str, revenue: Option<f64>) -> Option<Value> {
        let by_event = self.events.get(event_name).map(|r| r.value());
        let by_revenue = revenue.and_then(|r| {
            self.revenue
                .iter()
                .filter(|b| r >= b.min)
                .map(|b| b.rule().value())
                .max_by_key(|v| (v.fine, v.coarse))
        });
        match (by_event, by_revenue) {
            (Some(a), Some(b)) => Some(if (b.fine, b.coarse) > (a.fine, a.coarse) {
                Value {
                    lock: a.lock || b.lock,
                    ..b
                }
            } else {
                Value {
                    lock: a.lock || b.lock,
                    ..a
                }
            }),
            (a, b) => a.or(b),
        }
    }

    /// Whether an event at `event_ms` falls in the window of an app registered for
    /// SKAdNetwork at `registered_ms`.
    pub fn in_window(&self, registered_ms: i64, event_ms: i64) -> bool {
        let window = i64::from(self.window_hours) * 3_600_000;
        event_ms >= registered_ms && event_ms - registered_ms <= window
    }
}

fn check_fine(fine: u8) -> Result<(), String> {
    if fine > MAX_FINE {
        return Err(format!("fine value {fine} is more than {MAX_FINE}"));
    }
    Ok(())
}

/// A device's value after an event earned `new`: it only goes up, and not at all once locked.
pub fn merge(stored: Option<Value>, new: Value) -> Value {
    match stored {
        None => new,
        Some(old) if old.lock => old,
        Some(old) => Value {
            fine: old.fine.max(new.fine),
            coarse: old.coarse.max(new.coarse),
            lock: new.lock,
        },
    }
}

/// Version byte of a stored device value.
const VALUE_V1: u8 = 1;

/// A device's value as stored: version byte, fine value, coarse (0 low, 1 medium, 2 high),
/// lock (0/1).
pub fn encode(v: Value) -> [u8; 4] {
    let coarse = match v.coarse {
        Coarse::Low => 0,
        Coarse::Medium => 1,
        Coarse::High => 2,
    };
    [VALUE_V1, v.fine, coarse, u8::from(v.lock)]
}

/// A stored device value; `None` when the bytes are not one.
pub fn decode(bytes: &[u8]) -> Option<Value> {
    match *bytes {
        [VALUE_V1, fine, coarse, lock] if fine <= MAX_FINE && lock <= 1 => Some(Value {
            fine,
            coarse: match coarse {
                0 => Coarse::Low,
                1 => Coarse::Medium,
                2 => Coarse::High,
                _ => return None,
            },
            lock: lock == 1,
        }),
        _ => None,
    }
}

/// The body of the answer that carries a value, with the field names Adjust's SDK reads.
pub fn answer(v: Value) -> serde_json::Value {
    serde_json::json!({
        "skadn_conv_value": v.fine,
        "skadn_coarse_value": v.coarse.name(),
        "skadn_lock_window": v.lock,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules::from_specs(
            &[
                "tutorial_done=3".into(),
                "purchase=20/medium".into(),
                "vip=50/high/lock".into(),
            ],
            &[
                "0.99=10".into(),
                "9.99=40/high".into(),
                "99=63/high/lock".into(),
            ],
            None,
        )
        .unwrap()
    }

    fn v(fine: u8, coarse: Coarse, lock: bool) -> Value {
        Value { fine, coarse, lock }
    }

    #[test]
    fn an_event_earns_the_highest_rule_it_matches() {
        let r = rules();
        assert_eq!(
            r.value_of("tutorial_done", None),
            Some(v(3, Coarse::Low, false))
        );
        assert_eq!(
            r.value_of("purchase", None),
            Some(v(20, Coarse::Medium, false))
        );
        assert_eq!(
            r.value_of("purchase", Some(0.5)),
            Some(v(20, Coarse::Medium, false))
        );
        assert_eq!(
            r.value_of("purchase", Some(12.0)),
            Some(v(40, Coarse::High, false))
        );
        assert_eq!(
            r.value_of("other", Some(0.99)),
            Some(v(10, Coarse::Low, false))
        );
        assert_eq!(
            r.value_of("other", Some(150.0)),
            Some(v(63, Coarse::High, true))
        );
        // A lock of the lower rule still locks.
        assert_eq!(
            r.value_of("vip", Some(99.0)),
            Some(v(63, Coarse::High, true))
        );
        assert_eq!(
            r.value_of("vip", Some(1.0)),
            Some(v(50, Coarse::High, true))
        );
        assert_eq!(r.value_of("other", None), None);
        assert_eq!(r.value_of("other", Some(0.5)), None);
        assert_eq!(r.window_hours, DEFAULT_WINDOW_HOURS);
        assert!(r.in_window(1_000, 1_000 + 24 * 3_600_000));
        assert!(!r.in_window(1_000, 1_001 + 24 * 3_600_000));
        assert!(!r.in_window(1_000, 999));
    }

    #[test]
    fn values_only_go_up_until_locked() {
        let low = v(3, Coarse::Low, false);
        assert_eq!(merge(None, low), low);
        assert_eq!(
            merge(Some(v(20, Coarse::Medium, false)), low),
            v(20, Coarse::Medium, false)
        );
        assert_eq!(
            merge(Some(low), v(10, Coarse::High, true)),
            v(10, Coarse::High, true)
        );
        let locked = v(10, Coarse::Medium, true);
        assert_eq!(merge(Some(locked), v(63, Coarse::High, false)), locked);
        for value in [low, locked, v(63, Coarse::High, true)] {
            assert_eq!(decode(&encode(value)), Some(value));
        }
        // Bytes this version writes: if this fails, add a version and keep decoding these.
        assert_eq!(decode(&[1, 42, 2, 1]), Some(v(42, Coarse::High, true)));
        for bad in [
            &[2, 1, 0, 0][..],
            &[1, 64, 0, 0],
            &[1, 1, 3, 0],
            &[1, 1, 0, 2],
            &[1, 1, 0],
        ] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
        assert_eq!(
            answer(v(42, Coarse::High, true)),
            serde_json::json!({"skadn_conv_value": 42, "skadn_coarse_value": "high", "skadn_lock_window": true})
        );
    }

    #[test]
    fn specs_and_limits() {
        for (spec, want) in [
            (
                "0",
                Rule {
                    fine: 0,
                    coarse: None,
                    lock: false,
                },
            ),
            (
                "63/lock",
                Rule {
                    fine: 63,
                    coarse: None,
                    lock: true,
                },
            ),
            (
                "5/high/lock",
                Rule {
                    fine: 5,
                    coarse: Some(Coarse::High),
                    lock: true,
                },
            ),
        ] {
            assert_eq!(Rule::parse(spec), Ok(want), "{spec}");
        }
        for bad in [
            "",
            "x",
            "-1",
            "256",
            "5/huge",
            "5/lock/high",
            "5/low/low",
            "5/lock/lock",
        ] {
            assert!(Rule::parse(bad).is_err(), "{bad}");
        }
        let specs = |e: &[&str], r: &[&str], w| {
            let e: Vec<String> = e.iter().map(|s| s.to_string()).collect();
            let r: Vec<String> = r.iter().map(|s| s.to_string()).collect();
            Rules::from_specs(&e, &r, w)
        };
        assert!(specs(&[], &[], None).is_err(), "no rules");
        assert!(specs(&["a=64"], &[], None).is_err());
        assert!(specs(&["a=1", "a=2"], &[], None).is_err());
        assert!(specs(&["=1"], &[], None).is_err());
        assert!(specs(&[], &["-1=5"], None).is_err());
        assert!(specs(&[], &["NaN=5"], None).is_err());
        assert!(specs(&[], &["1=5"], Some(0)).is_err());
        assert!(specs(&[], &["1=5"], Some(MAX_WINDOW_HOURS + 1)).is_err());
        assert!(
            specs(&["level=up=5"], &[], Some(48)).is_ok(),
            "the last = splits"
        );
        // The JSON form (admin API, stored record) round-trips and refuses unknown fields.
        let r = rules();
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Rules>(&text).unwrap(), r);
        assert!(serde_json::from_str::<Rules>(r#"{"events":{},"windows":3}"#).is_err());
        let j: Rules = serde_json::from_str(
            r#"{"events":{"purchase":{"fine":20,"coarse":"medium"}},"revenue":[{"min":9.99,"fine":40,"lock":true}]}"#,
        )
        .unwrap();
        assert_eq!(j.window_hours, DEFAULT_WINDOW_HOURS);
        assert_eq!(
            j.revenue[0].rule(),
            Rule {
                fine: 40,
                coarse: None,
                lock: true
            }
        );
    }
}
