//! Configuration writes: tenants, apps, keys. Each function works inside a caller's write
//! transaction, so the same code runs in the server's writer thread and in a CLI process that
//! opened the database itself.

use super::codec::{App, Key, Tenant, decode_config, encode_config};
use super::tables::*;
use super::{Error, Result, find_app, find_tenant, next_id, now};
use crate::auth::keys;
use crate::event::hex;
use redb::{ReadableTable, WriteTransaction};

/// Longest tenant, app or key label name.
const MAX_NAME: usize = 64;

/// Tenant and app names: 1–64 of `A-Z a-z 0-9 _ . -`.
pub fn check_name(kind: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::Refused(format!(
            "{kind} name {name:?} must be 1-{MAX_NAME} characters of A-Z a-z 0-9 _ . -"
        )))
    }
}

pub fn add_tenant(txn: &WriteTransaction, name: &str, monthly_quota: u64) -> Result<Tenant> {
    check_name("tenant", name)?;
    let mut table = txn.open_table(TENANTS)?;
    if find_tenant(&table, name)?.is_some() {
        return Err(Error::Conflict(format!("tenant {name:?} already exists")));
    }
    let id = next_id(txn, &table, "tenant")?;
    let tenant = Tenant {
        name: name.to_owned(),
        monthly_quota,
        created_ms: now(),
        retention_days: None,
    };
    table.insert(id, encode_config(&tenant).as_slice())?;
    Ok(tenant)
}

pub fn set_quota(txn: &WriteTransaction, name: &str, monthly_quota: u64) -> Result<Tenant> {
    let mut table = txn.open_table(TENANTS)?;
    let (id, mut tenant) =
        find_tenant(&table, name)?.ok_or_else(|| Error::NotFound(format!("no tenant {name:?}")))?;
    tenant.monthly_quota = monthly_quota;
    table.insert(id, encode_config(&tenant).as_slice())?;
    Ok(tenant)
}

/// Longest retention accepted, in days (100 years).
pub const MAX_RETENTION_DAYS: u32 = 36_500;

/// Sets a tenant's retention: `Some(days)` (0 = forever) or `None` (the server default).
pub fn set_retention(txn: &WriteTransaction, name: &str, days: Option<u32>) -> Result<Tenant> {
    if let Some(d) = days
        && d > MAX_RETENTION_DAYS
    {
        return Err(Error::Refused(format!(
            "retention of {d} days is more than {}",
            MAX_RETENTION_DAYS
        )));
    }
    let mut table = txn.open_table(TENANTS)?;
    let (id, mut tenant) =
        find_tenant(&table, name)?.ok_or_else(|| Error::NotFound(format!("no tenant {name:?}")))?;
    tenant.retention_days = days;
    table.insert(id, encode_config(&tenant).as_slice())?;
    Ok(tenant)
}

pub fn add_app(txn: &WriteTransaction, name: &str, tenant: &str) -> Result<App> {
    check_name("app", name)?;
    let tenant_id = find_tenant(&txn.open_table(TENANTS)?, tenant)?
        .ok_or_else(|| Error::NotFound(format!("no tenant {tenant:?}")))?
        .0;
    let mut table = txn.open_table(APPS)?;
    if find_app(&table, name)?.is_some() {
        return Err(Error::Conflict(format!("app {name:?} already exists")));
    }
    let id = next_id(txn, &table, "app")?;
    let app = App {
        name: name.to_owned(),
        tenant_id,
        created_ms: now(),
        adjust_app_token: None,
        appsflyer_bundle_id: None,
        adjust_events: Default::default(),
        adjust_token_optional: false,
        adjust_skan: None,
    };
    table.insert(id, encode_config(&app).as_slice())?;
    Ok(app)
}

/// Dialect settings of an app; `None` leaves a setting as it is, `Some("")` clears it.
/// A token or bundle id names at most one app.
pub fn configure_app(
    txn: &WriteTransaction,
    name: &str,
    adjust_app_token: Option<String>,
    appsflyer_bundle_id: Option<String>,
) -> Result<App> {
    let mut table = txn.open_table(APPS)?;
    let (id, mut app) =
        find_app(&table, name)?.ok_or_else(|| Error::NotFound(format!("no app {name:?}")))?;
    for (what, value) in [
        ("adjust app token", &adjust_app_token),
        ("appsflyer bundle id", &appsflyer_bundle_id),
    ] {
        if let Some(v) = value
            && (v.len() > 256 || v.chars().any(char::is_control))
        {
            return Err(Error::Refused(format!("{what} {v:?} is not valid")));
        }
    }
    let clash = |other: &App| {
        other.name != app.name
            && ((adjust_app_token.as_deref().is_some_and(|t| !t.is_empty())
                && other.adjust_app_token == adjust_app_token)
                || (appsflyer_bundle_id
                    .as_deref()
                    .is_some_and(|b| !b.is_empty())
                    && other.appsflyer_bundle_id == appsflyer_bundle_id))
    };
    for row in table.iter()? {
        let (_, bytes) = row?;
        let other: App = decode_config("app", bytes.value())?;
        if clash(&other) {
            return Err(Error::Conflict(format!(
                "app {:?} already uses that token or bundle id",
                other.name
            )));
        }
    }
    let set = |slot: &mut Option<String>, v: Option<String>| {
        if let Some(v) = v {
            *slot = (!v.is_empty()).then_some(v);
        }
    };
    set(&mut app.adjust_app_token, adjust_app_token);
    set(&mut app.appsflyer_bundle_id, appsflyer_bundle_id);
    table.insert(id, encode_config(&app).as_slice())?;
    Ok(app)
}

/// Maps an Adjust `event_token` to an event name for `app`; an empty `name` removes the
/// mapping. Tokens are 1–64 of `A-Z a-z 0-9 _ -` (Adjust's own are 6 alphanumerics).
pub fn map_adjust_event(txn: &WriteTransaction, app: &str, token: &str, name: &str) -> Result<App> {
    let token_ok = !token.is_empty()
        && token.len() <= 64
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b));
    if !token_ok {
        return Err(Error::Refused(format!(
            "adjust event token {token:?} must be 1-64 characters of A-Z a-z 0-9 _ -"
        )));
    }
    if name.chars().count() > crate::event::MAX_EVENT_NAME || name.chars().any(char::is_control) {
        return Err(Error::Refused(format!(
            "event name {name:?} is not a valid event name"
        )));
    }
    let mut table = txn.open_table(APPS)?;
    let (id, mut record) =
        find_app(&table, app)?.ok_or_else(|| Error::NotFound(format!("no app {app:?}")))?;
    if name.is_empty() {
        if record.adjust_events.remove(token).is_none() {
            return Err(Error::NotFound(format!(
                "app {app:?} has no adjust event token {token:?}"
            )));
        }
    } else {
        record
            .adjust_events
            .insert(token.to_owned(), name.to_owned());
    }
    table.insert(id, encode_config(&record).as_slice())?;
    Ok(record)
}

/// Whether Adjust requests for `app` must carry an `Authorization: Bearer` key of the app
/// (the default) or may come without one.
pub fn set_adjust_token_required(txn: &WriteTransaction, app: &str, required: bool) -> Result<App> {
    let mut table = txn.open_table(APPS)?;
    let (id, mut record) =
        find_app(&table, app)?.ok_or_else(|| Error::NotFound(format!("no app {app:?}")))?;
    record.adjust_token_optional = !required;
    table.insert(id, encode_config(&record).as_slice())?;
    Ok(record)
}

/// Sets (after checking them) or, with `None`, removes `app`'s SKAdNetwork conversion value
/// rules for Adjust iOS 14+ requests.
pub fn set_adjust_skan(
    txn: &WriteTransaction,
    app: &str,
    rules: Option<crate::skan::Rules>,
) -> Result<App> {
    if let Some(r) = &rules {
        r.check().map_err(Error::Refused)?;
    }
    let mut table = txn.open_table(APPS)?;
    let (id, mut record) =
        find_app(&table, app)?.ok_or_else(|| Error::NotFound(format!("no app {app:?}")))?;
    record.adjust_skan = rules;
    table.insert(id, encode_config(&record).as_slice())?;
    Ok(record)
}

/// What minting returns: the key id and the plaintext, which is never stored.
pub struct MintedKey {
    pub id: u32,
    pub plaintext: String,
}

pub fn mint_key(
    txn: &WriteTransaction,
    app: &str,
    label: &str,
    allowed_events: Vec<String>,
    rate_limit: Option<u32>,
) -> Result<MintedKey> {
    if label.is_empty() || label.chars().count() > MAX_NAME {
        return Err(Error::Refused(format!(
            "key label must be 1-{MAX_NAME} characters"
        )));
    }
    if let Some(bad) = allowed_events
        .iter()
        .find(|e| e.is_empty() || e.chars().count() > crate::event::MAX_EVENT_NAME)
    {
        return Err(Error::Refused(format!(
            "allowed event {bad:?} is not a valid event name"
        )));
    }
    let app_id = find_app(&txn.open_table(APPS)?, app)?
        .ok_or_else(|| Error::NotFound(format!("no app {app:?}")))?
        .0;
    let mut lookup = txn.open_table(KEY_LOOKUP)?;
    // Re-draw on the (2^-64-unlikely) event that the lookup prefix is taken.
    let minted = loop {
        let m = keys::mint();
        if lookup.get(keys::lookup_prefix(&m.hash))?.is_none() {
            break m;
        }
    };
    let mut table = txn.open_table(KEYS)?;
    let id = next_id(txn, &table, "key")?;
    let key = Key {
        app_id,
        label: label.to_owned(),
        sha256: hex(&minted.hash),
        allowed_events,
        created_ms: now(),
        revoked_ms: None,
        rate_limit,
    };
    table.insert(id, encode_config(&key).as_slice())?;
    lookup.insert(keys::lookup_prefix(&minted.hash), id)?;
    Ok(MintedKey {
        id,
        plaintext: minted.plaintext,
    })
}

/// Revokes a key; revoking a revoked key is not an error (the first revocation time stays).
pub fn revoke_key(txn: &WriteTransaction, id: u32) -> Result<Key> {
    let mut table = txn.open_table(KEYS)?;
    let mut key: Key = match table.get(id)? {
        Some(bytes) => decode_config("key", bytes.value())?,
        None => return Err(Error::NotFound(format!("no key {id}"))),
    };
    if key.revoked_ms.is_none() {
        key.revoked_ms = Some(now());
        table.insert(id, encode_config(&key).as_slice())?;
    }
    Ok(key)
}

/// Most names one key's list of allowed events may hold.
pub const MAX_ALLOWED_EVENTS: usize = 1000;

/// The names of `events`, trimmed, each once, in the order given; a refusal for an invalid
/// one. The API and the CLI both set a key's list through [`set_allowed_events`], so both
/// are checked here.
fn allowed_event_names(events: Vec<String>) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::with_capacity(events.len());
    for e in events {
        let e = e.trim();
        if e.is_empty() {
            continue;
        }
        if e.chars().count() > crate::event::MAX_EVENT_NAME {
            return Err(Error::Refused(format!(
                "allowed event {e:?} is longer than {} characters",
                crate::event::MAX_EVENT_NAME
            )));
        }
        if !out.iter().any(|o| o == e) {
            out.push(e.to_owned());
        }
    }
    if out.len() > MAX_ALLOWED_EVENTS {
        return Err(Error::Refused(format!(
            "at most {MAX_ALLOWED_EVENTS} allowed events"
        )));
    }
    Ok(out)
}

/// Sets the event names key `id` may send (empty: all); a revoked key stays revoked.
/// Quarantine: "allow the event", then replay.
pub fn set_allowed_events(txn: &WriteTransaction, id: u32, events: Vec<String>) -> Result<Key> {
    let events = allowed_event_names(events)?;
    let mut table = txn.open_table(KEYS)?;
    let mut key: Key = match table.get(id)? {
        Some(bytes) => decode_config("key", bytes.value())?,
        None => return Err(Error::NotFound(format!("no key {id}"))),
    };
    key.allowed_events = events;
    table.insert(id, encode_config(&key).as_slice())?;
    Ok(key)
}

/// What deleting an app or a tenant removes (or, asked first, would remove).
#[derive(Debug, Default, serde::Serialize)]
pub struct Removal {
    pub tenants: Vec<String>,
    pub apps: Vec<String>,
    /// Keys of those apps (revoked ones included).
    pub keys: u32,
    /// Signing secrets of those apps.
    pub secrets: u32,
}

/// Events an app has accepted (its day counters), retention-removed ones included.
fn events_received(txn: &WriteTransaction, app_id: u32) -> Result<u64> {
    let days = txn.open_table(APP_DAYS)?;
    let mut n = 0u64;
    for r in days.range(app_period_key(app_id, 0)..=app_period_key(app_id, u32::MAX))? {
        n = n.saturating_add(r?.1.value());
    }
    Ok(n)
}

/// Refuses to change app `name` (`id`) once it has received events: each stored event
/// carries the app's and tenant's names as they were, and the filters, exports and profiles
/// find events by name.
fn refuse_if_received(txn: &WriteTransaction, id: u32, name: &str, doing: &str) -> Result<()> {
    match events_received(txn, id)? {
        0 => Ok(()),
        n => Err(Error::Conflict(format!(
            "app {name:?} has received {n} events: it cannot be {doing} (stored events keep \
             the names they arrived under)"
        ))),
    }
}

/// Apps of tenant `tenant_id`: (id, app), by id.
fn apps_of(txn: &WriteTransaction, tenant_id: u32) -> Result<Vec<(u32, App)>> {
    let mut out = Vec::new();
    for row in txn.open_table(APPS)?.iter()? {
        let (id, bytes) = row?;
        let a: App = decode_config("app", bytes.value())?;
        if a.tenant_id == tenant_id {
            out.push((id.value(), a));
        }
    }
    Ok(out)
}

/// Renames a tenant that none of whose apps has received events.
pub fn rename_tenant(txn: &WriteTransaction, name: &str, new_name: &str) -> Result<Tenant> {
    check_name("tenant", new_name)?;
    let mut table = txn.open_table(TENANTS)?;
    let (id, mut tenant) =
        find_tenant(&table, name)?.ok_or_else(|| Error::NotFound(format!("no tenant {name:?}")))?;
    if name == new_name {
        return Ok(tenant);
    }
    if find_tenant(&table, new_name)?.is_some() {
        return Err(Error::Conflict(format!(
            "tenant {new_name:?} already exists"
        )));
    }
    for (app_id, app) in apps_of(txn, id)? {
        refuse_if_received(txn, app_id, &app.name, "renamed, nor its tenant")?;
    }
    tenant.name = new_name.to_owned();
    table.insert(id, encode_config(&tenant).as_slice())?;
    Ok(tenant)
}

/// Renames an app that has received no events.
pub fn rename_app(txn: &WriteTransaction, name: &str, new_name: &str) -> Result<App> {
    check_name("app", new_name)?;
    let mut table = txn.open_table(APPS)?;
    let (id, mut app) =
        find_app(&table, name)?.ok_or_else(|| Error::NotFound(format!("no app {name:?}")))?;
    if name == new_name {
        return Ok(app);
    }
    if find_app(&table, new_name)?.is_some() {
        return Err(Error::Conflict(format!("app {new_name:?} already exists")));
    }
    refuse_if_received(txn, id, name, "renamed")?;
    app.name = new_name.to_owned();
    table.insert(id, encode_config(&app).as_slice())?;
    Ok(app)
}

/// Deletes app `id` with its keys and signing secrets (or, `dry_run`, only counts them into
/// `removal`). The caller checked that it received no events, so no event, counter, dedupe
/// entry or dialect state names it.
fn remove_app(
    txn: &WriteTransaction,
    id: u32,
    app: &App,
    dry_run: bool,
    removal: &mut Removal,
) -> Result<()> {
    let mut keys_table = txn.open_table(KEYS)?;
    let mut key_ids = Vec::new();
    for row in keys_table.iter()? {
        let (key_id, bytes) = row?;
        let k: Key = decode_config("key", bytes.value())?;
        if k.app_id == id {
            key_ids.push((key_id.value(), k.sha256));
        }
    }
    removal.keys += key_ids.len() as u32;
    removal.secrets += super::secrets::remove_of_app(txn, id, dry_run)?;
    removal.apps.push(app.name.clone());
    if dry_run {
        return Ok(());
    }
    let mut lookup = txn.open_table(KEY_LOOKUP)?;
    let mut used = txn.open_table(KEY_USED)?;
    for (key_id, sha) in key_ids {
        keys_table.remove(key_id)?;
        used.remove(key_id)?;
        let hash: Option<[u8; 32]> = crate::event::unhex(&sha).and_then(|h| h.try_into().ok());
        if let Some(hash) = hash {
            let prefix = keys::lookup_prefix(&hash);
            if lookup.get(prefix)?.is_some_and(|v| v.value() == key_id) {
                lookup.remove(prefix)?;
            }
        }
    }
    txn.open_table(APPS)?.remove(id)?;
    Ok(())
}

/// Deletes an app that has received no events, with its keys and signing secrets; with
/// `dry_run`, only says what it would remove.
pub fn delete_app(txn: &WriteTransaction, name: &str, dry_run: bool) -> Result<Removal> {
    let (id, app) = find_app(&txn.open_table(APPS)?, name)?
        .ok_or_else(|| Error::NotFound(format!("no app {name:?}")))?;
    refuse_if_received(txn, id, name, "deleted")?;
    let mut removal = Removal::default();
    remove_app(txn, id, &app, dry_run, &mut removal)?;
    Ok(removal)
}

/// Deletes a tenant with its apps (none of which may have received events), their keys and
/// signing secrets; with `dry_run`, only says what it would remove.
pub fn delete_tenant(txn: &WriteTransaction, name: &str, dry_run: bool) -> Result<Removal> {
    let (id, _) = find_tenant(&txn.open_table(TENANTS)?, name)?
        .ok_or_else(|| Error::NotFound(format!("no tenant {name:?}")))?;
    let apps = apps_of(txn, id)?;
    for (app_id, app) in &apps {
        refuse_if_received(txn, *app_id, &app.name, "deleted, nor its tenant")?;
    }
    let mut removal = Removal {
        tenants: vec![name.to_owned()],
        ..Removal::default()
    };
    for (app_id, app) in &apps {
        remove_app(txn, *app_id, app, dry_run, &mut removal)?;
    }
    if !dry_run {
        txn.open_table(TENANTS)?.remove(id)?;
    }
    Ok(removal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_event_names_are_trimmed_kept_once_and_checked() {
        let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            allowed_event_names(v(&[" purchase", "level_up ", "", "purchase"])).unwrap(),
            v(&["purchase", "level_up"])
        );
        assert!(allowed_event_names(v(&[])).unwrap().is_empty());
        let long = "x".repeat(crate::event::MAX_EVENT_NAME + 1);
        assert!(matches!(
            allowed_event_names(vec![long]),
            Err(Error::Refused(_))
        ));
        let many = (0..=MAX_ALLOWED_EVENTS).map(|i| format!("e{i}")).collect();
        assert!(matches!(allowed_event_names(many), Err(Error::Refused(_))));
    }

    #[test]
    fn a_deleted_apps_id_is_never_given_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path()).unwrap();
        let write = |f: &dyn Fn(&WriteTransaction) -> Result<u32>| {
            let txn = store.db().unwrap().begin_write().unwrap();
            let id = f(&txn).unwrap();
            txn.commit().unwrap();
            id
        };
        let app_id = |t: &WriteTransaction, name: &str| {
            add_app(t, name, "default")?;
            Ok(find_app(&t.open_table(APPS)?, name)?.expect("added").0)
        };
        let first = write(&|t| app_id(t, "scratch"));
        let key = write(&|t| mint_key(t, "scratch", "k", Vec::new(), None).map(|k| k.id));
        write(&|t| delete_app(t, "scratch", false).map(|_| 0));
        // The highest ids were freed; the next app and key get new ones all the same.
        let again = write(&|t| app_id(t, "again"));
        let key_again = write(&|t| mint_key(t, "again", "k", Vec::new(), None).map(|k| k.id));
        assert_eq!((again, key_again), (first + 1, key + 1));
    }
}
