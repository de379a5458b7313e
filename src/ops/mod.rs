//! Admin operations of the CLI, run the same way whether this process opened the database
//! itself or a serving process runs them for it over the control socket, and the operations
//! on the whole database they use: backup and restore ([`backup`]), verify ([`verify`]) and
//! retention ([`retention`]).

pub mod backup;
pub mod retention;
pub mod verify;

use crate::auth::password::PasswordHash;
use crate::auth::secrets::Sealer;
use crate::clock::{now_ms, rfc3339_ms};
use crate::identity::Identity;
use crate::store::quarantine::Selection;
use crate::store::read::ExportFilter;
use crate::store::secrets;
use crate::store::writer::Writer;
use crate::store::{self, Store, accounts, admin};
use redb::WriteTransaction;
use serde::{Deserialize, Serialize};
use std::io::Write;

/// One admin operation, as sent over the control socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    TenantsAdd {
        name: String,
        monthly_quota: u64,
    },
    TenantsList {
        json: bool,
    },
    TenantsSetQuota {
        name: String,
        monthly_quota: u64,
    },
    AppsAdd {
        name: String,
        tenant: String,
    },
    AppsList {
        json: bool,
    },
    AppsConfigure {
        name: String,
        adjust_app_token: Option<String>,
        appsflyer_bundle_id: Option<String>,
        #[serde(default)]
        adjust_require_token: Option<bool>,
    },
    AppsAdjustEvent {
        name: String,
        token: String,
        event: String,
    },
    /// `None` removes the rules.
    AppsAdjustSkan {
        name: String,
        rules: Option<crate::skan::Rules>,
    },
    KeysMint {
        app: String,
        label: String,
        events: Vec<String>,
        rate_limit: Option<u32>,
    },
    KeysList {
        app: Option<String>,
        json: bool,
    },
    KeysRevoke {
        id: u32,
    },
    KeysAllow {
        id: u32,
        events: Vec<String>,
    },
    Export {
        app: Option<String>,
        after: u64,
        limit: Option<u64>,
        #[serde(default)]
        since_ms: Option<u64>,
        #[serde(default)]
        until_ms: Option<u64>,
        #[serde(default)]
        source: Option<String>,
        #[serde(default)]
        event: Option<String>,
    },
    TenantsSetRetention {
        name: String,
        /// `None`: the server's default.
        days: Option<u32>,
    },
    /// One retention pass as of `at_ms` (default now). A serving process uses its own
    /// configured default retention instead of `default_days`.
    RetentionRun {
        at_ms: Option<u64>,
        default_days: u32,
    },
    /// The database copy, written to the output.
    Backup,
    AuditGet {
        key: String,
    },
    /// Hashed by the CLI process, so the password itself never leaves it.
    AdminSetPassword {
        hash: PasswordHash,
        /// The account (default `admin`); created when absent.
        #[serde(default)]
        name: Option<String>,
    },
    /// A one-time link that creates admin account `name`; `base_url` is the panel's origin.
    AdminInvite {
        name: String,
        base_url: String,
    },
    AdminRemove {
        name: String,
    },
    AdminResetTotp {
        name: String,
    },
    AdminList,
    /// The audit log of admin actions, newest first.
    AdminAudit {
        limit: usize,
        json: bool,
    },
    SecretsMint {
        app: String,
        label: String,
    },
    SecretsList {
        app: Option<String>,
        json: bool,
    },
    SecretsRevoke {
        id: u32,
    },
    SecretsRotate {
        id: u32,
        grace_ms: u64,
    },
    Receipt {
        app: String,
        event_id: String,
        json: bool,
    },
    /// Erase the linked profile of `kind=value` (`privacy::erase`); prints the receipt.
    Erase {
        app: String,
        kind: String,
        value: String,
        suppress: bool,
    },
    ErasuresList {
        json: bool,
    },
    AppsStoreLess {
        name: String,
        policy: crate::store::privacy::StoreLess,
    },
    /// Business-key dedupe on or off (`store::bizkey`).
    AppsBusinessKey {
        name: String,
        on: bool,
    },
    /// An app's rules: business key, drop rules.
    AppsRules {
        name: String,
        json: bool,
    },
    AppsDropRuleAdd {
        name: String,
        rule: crate::store::bizkey::NewDropRule,
    },
    AppsDropRuleRemove {
        name: String,
        id: u32,
    },
    /// Everything stored about the linked profile of `kind=value` (`privacy::export`).
    ExportSubject {
        app: String,
        kind: String,
        value: String,
    },
    ErasuresUnsuppress {
        id: String,
    },
    /// `inlet quarantine list|replay|drop` (a replay runs in the server: `server::control`).
    Quarantine {
        action: QuarantineAction,
        app: String,
        #[serde(default)]
        reason: Option<String>,
        #[serde(default)]
        ids: Vec<String>,
        #[serde(default)]
        json: bool,
    },
    Profile {
        app: String,
        id: String,
        #[serde(default)]
        kind: Option<String>,
        limit: usize,
        json: bool,
    },
    /// Alert rules (`watch::alerts`).
    AlertsList {
        json: bool,
    },
    AlertsAdd {
        rule: crate::watch::alerts::NewRule,
    },
    AlertsRemove {
        id: u32,
    },
    /// One signed `alert.test` POST to the rule's webhook, from this process.
    AlertsTest {
        id: u32,
        /// `[alerts] webhook_ca` (the serving process uses its own).
        #[serde(default)]
        webhook_ca: Option<std::path::PathBuf>,
    },
}

/// Where writes go: straight into the database this process holds, or through the serving
/// process's writer thread (which owns every write transaction while it runs).
pub enum Exec<'a> {
    /// The store this process holds, and its identity graph.
    Direct(&'a Store, &'a Identity),
    /// The serving process's store, writer and identity graph (absent when no indexer runs),
    /// and its cluster (cluster mode: admin data changes go through the engine).
    Server(
        &'a Store,
        &'a Writer,
        Option<&'a Identity>,
        Option<&'a crate::cluster::Cluster>,
    ),
}

impl Exec<'_> {
    fn store(&self) -> &Store {
        match self {
            Exec::Direct(s, _) | Exec::Server(s, ..) => s,
        }
    }

    /// The identity graph and the way writes go, for `privacy`.
    fn privacy(&self) -> store::Result<(Identity, crate::privacy::Via<'_>)> {
        let via = match self {
            Exec::Direct(..) => crate::privacy::Via::Direct,
            Exec::Server(_, w, ..) => crate::privacy::Via::Writer(w),
        };
        Ok((self.identity()?, via))
    }

    /// The identity graph: opened for this process, or the serving process's.
    fn identity(&self) -> store::Result<Identity> {
        match self {
            Exec::Direct(_, i) => Ok((*i).clone()),
            Exec::Server(_, _, Some(i), _) => Ok((*i).clone()),
            Exec::Server(_, _, None, _) => Err(store::Error::Internal(
                "this server keeps no identity graph".into(),
            )),
        }
    }

    fn write<R: Send + 'static>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> store::Result<R> + Clone + Send + 'static,
    ) -> store::Result<R> {
        // Cluster mode: admin data changes go through the engine (src/cluster/admin.rs); a
        // cluster node's database without its server refuses them.
        match self {
            Exec::Server(_, w, _, Some(c)) => c.admin_write_blocking(w, f),
            Exec::Direct(s, _) => crate::cluster::admin::direct_write(&*s.db()?, f),
            Exec::Server(_, w, _, None) => w.run_blocking(move |db| -> store::Result<R> {
                let txn = crate::store::begin_write(db)?;
                let r = f(&txn)?;
                txn.commit()?;
                Ok(r)
            })?,
        }
    }
}

/// Runs `op`, writing what is meant for stdout to `out`.
pub fn execute(exec: &Exec, op: Op, out: &mut dyn Write) -> store::Result<()> {
    let store = exec.store();
    match op {
        Op::TenantsAdd {
            name,
            monthly_quota,
        } => {
            let t = exec.write(move |txn| admin::add_tenant(txn, &name, monthly_quota))?;
            writeln!(
                out,
                "tenant {} added (monthly quota: {})",
                t.name,
                quota(t.monthly_quota)
            )?;
        }
        Op::TenantsSetQuota {
            name,
            monthly_quota,
        } => {
            let t = exec.write(move |txn| admin::set_quota(txn, &name, monthly_quota))?;
            writeln!(
                out,
                "tenant {} monthly quota: {}",
                t.name,
                quota(t.monthly_quota)
            )?;
        }
        Op::TenantsList { json } => {
            let rows = store.tenants(now_ms())?;
            if json {
                return json_lines(out, &rows);
            }
            table(
                out,
                &["ID", "NAME", "MONTHLY_QUOTA", "USED_THIS_MONTH", "CREATED"],
                rows.iter().map(|t| {
                    vec![
                        t.id.to_string(),
                        t.name.clone(),
                        quota(t.monthly_quota),
                        t.used_this_month.to_string(),
                        rfc3339_ms(t.created_ms),
                    ]
                }),
            )?;
        }
        Op::AppsAdd { name, tenant } => {
            let a = exec.write(move |txn| admin::add_app(txn, &name, &tenant))?;
            writeln!(out, "app {} added", a.name)?;
        }
        Op::AppsList { json } => {
            let rows = store.apps()?;
            if json {
                return json_lines(out, &rows);
            }
            table(
                out,
                &["ID", "NAME", "TENANT", "CREATED"],
                rows.iter().map(|a| {
                    vec![
                        a.id.to_string(),
                        a.name.clone(),
                        a.tenant.clone(),
                        rfc3339_ms(a.created_ms),
                    ]
                }),
            )?;
        }
        Op::AppsConfigure {
            name,
            adjust_app_token,
            appsflyer_bundle_id,
            adjust_require_token,
        } => {
            let a = exec.write(move |txn| {
                let a = admin::configure_app(txn, &name, adjust_app_token, appsflyer_bundle_id)?;
                match adjust_require_token {
                    Some(required) => admin::set_adjust_token_required(txn, &name, required),
                    None => Ok(a),
                }
            })?;
            let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
            writeln!(
                out,
                "app {}: adjust app token {}, appsflyer bundle id {}",
                a.name,
                show(&a.adjust_app_token),
                show(&a.appsflyer_bundle_id)
            )?;
        }
        Op::AppsAdjustEvent { name, token, event } => {
            let (t, e) = (token.clone(), event.clone());
            let a = exec.write(move |txn| admin::map_adjust_event(txn, &name, &t, &e))?;
            if event.is_empty() {
                writeln!(out, "app {}: adjust event token {token} removed", a.name)?;
            } else {
                writeln!(out, "app {}: adjust event token {token} -> {event}", a.name)?;
            }
        }
        Op::AppsAdjustSkan { name, rules } => {
            let a = exec.write(move |txn| admin::set_adjust_skan(txn, &name, rules))?;
            match &a.adjust_skan {
                Some(r) => writeln!(
                    out,
                    "app {}: adjust skan rules {}",
                    a.name,
                    serde_json::to_string(r).expect("rules serialize")
                )?,
                None => writeln!(out, "app {}: adjust skan rules removed", a.name)?,
            }
        }
        Op::KeysMint {
            app,
            label,
            events,
            rate_limit,
        } => {
            let k =
                exec.write(move |txn| admin::mint_key(txn, &app, &label, events, rate_limit))?;
            // Only the key goes to stdout, so `KEY=$(inlet keys mint ...)` works.
            writeln!(out, "{}", k.plaintext)?;
        }
        Op::KeysList { app, json } => {
            let rows = store.keys(app.as_deref())?;
            if json {
                return json_lines(out, &rows);
            }
            let when = |t: Option<u64>| t.map_or_else(|| "-".to_owned(), rfc3339_ms);
            table(
                out,
                &[
                    "ID",
                    "APP",
                    "LABEL",
                    "EVENTS",
                    "RATE_LIMIT",
                    "CREATED",
                    "LAST_USED",
                    "REVOKED",
                ],
                rows.iter().map(|k| {
                    vec![
                        k.id.to_string(),
                        k.app.clone(),
                        k.label.clone(),
                        if k.allowed_events.is_empty() {
                            "*".to_owned()
                        } else {
                            k.allowed_events.join(",")
                        },
                        k.rate_limit
                            .map_or_else(|| "-".to_owned(), |r| r.to_string()),
                        rfc3339_ms(k.created_ms),
                        when(k.last_used_ms),
                        when(k.revoked_ms),
                    ]
                }),
            )?;
        }
        Op::KeysAllow { id, events } => {
            let k = exec.write(move |txn| admin::set_allowed_events(txn, id, events))?;
            match k.allowed_events.is_empty() {
                true => writeln!(out, "key {id} may send every event")?,
                false => writeln!(out, "key {id} may send {}", k.allowed_events.join(","))?,
            }
        }
        Op::KeysRevoke { id } => {
            exec.write(move |txn| admin::revoke_key(txn, id))?;
            writeln!(out, "key {id} revoked")?;
        }
        Op::Export {
            app,
            after,
            limit,
            since_ms,
            until_ms,
            source,
            event,
        } => {
            if let Some(name) = &app
                && !store.apps()?.iter().any(|a| &a.name == name)
            {
                return Err(store::Error::NotFound(format!("no app {name:?}")));
            }
            let filter = ExportFilter {
                app,
                after,
                limit,
                since_ms,
                until_ms,
                source,
                event,
            };
            store.export(&filter, out)?;
        }
        Op::TenantsSetRetention { name, days } => {
            let t = exec.write(move |txn| admin::set_retention(txn, &name, days))?;
            let days = match t.retention_days {
                None => "server default".to_owned(),
                Some(0) => "forever".to_owned(),
                Some(d) => format!("{d} days"),
            };
            writeln!(out, "tenant {} retention: {days}", t.name)?;
        }
        Op::RetentionRun {
            at_ms,
            default_days,
        } => {
            let at = at_ms.unwrap_or_else(now_ms);
            let removed = match exec {
                Exec::Direct(s, _) => retention::run_direct(s, default_days, at)?,
                Exec::Server(s, w, ..) => retention::run_with_writer(s, w, default_days, at)?,
            };
            let (identity, via) = exec.privacy()?;
            let fields = crate::privacy::field_retention(&identity, via, at)?;
            writeln!(out, "retention removed {removed} events")?;
            if fields > 0 {
                writeln!(
                    out,
                    "retention removed client fields and device ids of {fields} events"
                )?;
            }
        }
        Op::Backup => {
            backup::backup(store, out)?;
        }
        Op::AuditGet { key } => match store.audit(&key)? {
            Some(body) => out.write_all(&body)?,
            None => return Err(store::Error::NotFound(format!("no audit body {key:?}"))),
        },
        Op::AdminSetPassword { hash, name } => {
            use crate::admin::accounts::{CLI_ACTOR, entry};
            let name = name.unwrap_or_else(|| accounts::FIRST_ACCOUNT.to_owned());
            let n = name.clone();
            exec.write(move |txn| {
                accounts::set_password(txn, &n, hash, now_ms())?;
                accounts::audit(txn, entry(CLI_ACTOR, "set_password", &n))
            })?;
            writeln!(
                out,
                "admin password of {name} set; every admin session of {name} ended"
            )?;
        }
        Op::AdminInvite { name, base_url } => {
            use crate::admin::accounts::{CLI_ACTOR, INVITE_TTL_MS, invite, invite_path};
            let n = name.clone();
            let (token, expires_ms) =
                exec.write(move |txn| invite(txn, &n, CLI_ACTOR, now_ms(), INVITE_TTL_MS))?;
            writeln!(out, "{base_url}{}", invite_path(&token))?;
            writeln!(
                out,
                "(one use, for {name}, until {}: whoever opens it chooses the password)",
                rfc3339_ms(expires_ms)
            )?;
        }
        Op::AdminRemove { name } => {
            use crate::admin::accounts::{CLI_ACTOR, entry};
            let n = name.clone();
            exec.write(move |txn| {
                accounts::remove(txn, &n)?;
                accounts::audit(txn, entry(CLI_ACTOR, "remove_account", &n))
            })?;
            writeln!(out, "admin account {name} removed; its sessions ended")?;
        }
        Op::AdminResetTotp { name } => {
            use crate::admin::accounts::{CLI_ACTOR, entry};
            let n = name.clone();
            exec.write(move |txn| {
                accounts::reset_totp(txn, &n)?;
                accounts::audit(txn, entry(CLI_ACTOR, "reset_totp", &n))
            })?;
            writeln!(
                out,
                "admin account {name}: TOTP off, its sessions ended; it logs in with the password alone"
            )?;
        }
        Op::AdminList => {
            let rows = store.admin_accounts()?;
            table(
                out,
                &["NAME", "TOTP", "CREATED"],
                rows.iter().map(|a| {
                    vec![
                        a.name.clone(),
                        if a.totp.is_some() { "yes" } else { "no" }.to_owned(),
                        rfc3339_ms(a.created_ms),
                    ]
                }),
            )?;
        }
        Op::AdminAudit { limit, json } => {
            let rows = store.admin_audit(None, limit)?;
            if json {
                return json_lines(out, &rows);
            }
            table(
                out,
                &["SEQ", "AT", "ACTOR", "ACTION", "TARGET"],
                rows.iter().map(|e| {
                    vec![
                        e.seq.to_string(),
                        rfc3339_ms(e.at_ms),
                        e.actor.clone(),
                        e.action.clone(),
                        e.target.clone(),
                    ]
                }),
            )?;
        }
        Op::SecretsMint { app, label } => {
            let sealer = Sealer::load_or_create(store.data_dir())?;
            let now = now_ms();
            let m = exec.write(move |txn| secrets::mint_secret(txn, &sealer, &app, &label, now))?;
            // Only the secret goes to stdout, so `SECRET=$(inlet secrets mint ...)` works.
            writeln!(out, "{}", m.plaintext)?;
        }
        Op::SecretsRotate { id, grace_ms } => {
            let sealer = Sealer::load_or_create(store.data_dir())?;
            let now = now_ms();
            let m =
                exec.write(move |txn| secrets::rotate_secret(txn, &sealer, id, grace_ms, now))?;
            writeln!(out, "{}", m.plaintext)?;
        }
        Op::SecretsRevoke { id } => {
            let now = now_ms();
            exec.write(move |txn| secrets::revoke_secret(txn, id, now))?;
            writeln!(out, "secret {id} revoked")?;
        }
        Op::SecretsList { app, json } => list_secrets(store, app.as_deref(), json, out)?,
        Op::Quarantine {
            action,
            app,
            reason,
            ids,
            json,
        } => quarantine(exec, action, &app, Selection { reason, ids }, json, out)?,
        Op::AlertsList { json } => crate::watch::alerts::print(store, json, out)?,
        Op::AlertsAdd { rule } => {
            let (rule, sealed) = crate::watch::alerts::prepare(store, rule)?;
            let now = now_ms();
            let secret = sealed.as_ref().map(|(s, _)| s.clone());
            let r = exec.write(move |txn| crate::watch::alerts::insert(txn, rule, sealed, now))?;
            writeln!(out, "alert rule {} added: {}", r.id, r.condition.describe())?;
            if let Some(s) = secret {
                writeln!(out, "webhook signing secret (shown once): {s}")?;
            }
        }
        Op::AlertsRemove { id } => {
            exec.write(move |txn| crate::watch::alerts::remove(txn, id))?;
            writeln!(out, "alert rule {id} removed")?;
        }
        Op::AlertsTest { id, webhook_ca } => {
            let answer =
                crate::watch::alerts::test_now(store, id, webhook_ca.as_deref(), now_ms())?;
            writeln!(out, "alert rule {id}: webhook answered {answer}")?;
        }
        Op::Receipt {
            app,
            event_id,
            json,
        } => {
            let r = store
                .receipt(&app, &event_id)?
                .ok_or_else(|| store::Error::NotFound(format!("no app {app:?}")))?;
            receipt(&r, json, out)?;
        }
        Op::Erase {
            app,
            kind,
            value,
            suppress,
        } => {
            let (identity, via) = exec.privacy()?;
            let req = crate::privacy::Request {
                app,
                kind,
                value,
                suppress,
            };
            // Cluster mode: run by the owner of the app's partition (cluster::erase).
            let receipt = match exec {
                Exec::Server(_, w, _, Some(c)) => c.erase(&identity, w, req)?,
                _ => crate::privacy::erase(&identity, via, req)?,
            };
            serde_json::to_writer_pretty(&mut *out, &receipt).map_err(std::io::Error::from)?;
            writeln!(out)?;
        }
        Op::AppsBusinessKey { name, on } => {
            let n = name.clone();
            exec.write(move |txn| crate::store::bizkey::set_business_key(txn, &n, on))?;
            let state = if on { "on" } else { "off" };
            writeln!(out, "app {name}: business-key dedupe {state}")?;
        }
        Op::AppsRules { name, json } => {
            let (_, rules) = crate::store::bizkey::of_app(store, &name)?
                .ok_or_else(|| store::Error::NotFound(format!("no app {name:?}")))?;
            app_rules(&rules, json, out)?;
        }
        Op::AppsDropRuleAdd { name, rule } => {
            let n = name.clone();
            let id = exec.write(move |txn| crate::store::bizkey::add_drop_rule(txn, &n, rule))?;
            writeln!(out, "{id}")?;
        }
        Op::AppsDropRuleRemove { name, id } => {
            let n = name.clone();
            exec.write(move |txn| crate::store::bizkey::remove_drop_rule(txn, &n, id))?;
            writeln!(out, "app {name}: drop rule {id} removed")?;
        }
        Op::AppsStoreLess { name, policy } => {
            let n = name.clone();
            let p =
                exec.write(move |txn| crate::store::privacy::set_store_less(txn, &n, policy))?;
            writeln!(
                out,
                "app {name}: ip {}, user agent {}, client fields and device ids kept {}",
                serde_json::to_value(p.ip)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                if p.drop_user_agent { "dropped" } else { "kept" },
                p.fields_days.map_or_else(
                    || "as long as the event".to_owned(),
                    |d| format!("{d} days")
                )
            )?;
        }
        Op::ExportSubject { app, kind, value } => {
            crate::privacy::export(&exec.identity()?, &app, &kind, &value, out)?;
        }
        Op::ErasuresList { json } => {
            let rows: Vec<crate::privacy::Listed> = crate::privacy::list(store)?
                .iter()
                .map(Into::into)
                .collect();
            if json {
                return json_lines(out, &rows);
            }
            table(
                out,
                &[
                    "ERASURE_ID",
                    "AT",
                    "APP",
                    "KINDS",
                    "EVENTS",
                    "SUPPRESSED",
                    "APPLIED",
                    "DIGEST",
                ],
                rows.iter().map(|r| {
                    vec![
                        r.erasure_id.clone(),
                        r.at.clone(),
                        r.app.clone(),
                        r.kinds.join(","),
                        r.events.to_string(),
                        r.suppressed.to_string(),
                        r.applied.to_string(),
                        r.digest.clone(),
                    ]
                }),
            )?;
        }
        Op::ErasuresUnsuppress { id } => {
            let lifted = match exec {
                // In the event stream, after the erasure it lifts (cluster::erase).
                Exec::Server(s, w, _, Some(c)) => c.lift(s, w, &id)?,
                _ => exec.write({
                    let id = id.clone();
                    move |txn| crate::store::privacy::lift(txn, &id)
                })?,
            };
            writeln!(
                out,
                "erasure {id}: suppression lifted ({lifted} identifiers)"
            )?;
        }
        Op::Profile {
            app,
            id,
            kind,
            limit,
            json,
        } => profile(
            &exec.identity()?,
            &app,
            kind.as_deref(),
            &id,
            limit,
            json,
            out,
        )?,
    }
    out.flush()?;
    Ok(())
}

/// `inlet apps drop-rules list`: the JSON record, or lines for a person (counts of dropped
/// events are the server's: `/metrics`, the panel).
fn app_rules(
    r: &crate::store::bizkey::AppRules,
    json: bool,
    out: &mut dyn Write,
) -> store::Result<()> {
    if json {
        serde_json::to_writer(&mut *out, r).map_err(std::io::Error::from)?;
        writeln!(out)?;
        return Ok(());
    }
    let state = if r.business_key { "on" } else { "off" };
    writeln!(out, "business-key dedupe: {state}")?;
    if r.drop.is_empty() {
        writeln!(out, "no drop rules")?;
    }
    for d in &r.drop {
        let mut parts = Vec::new();
        if let Some(e) = &d.event {
            parts.push(format!("event={e}"));
        }
        if let Some(s) = &d.source {
            parts.push(format!("source={s}"));
        }
        if let Some(k) = d.key_id {
            parts.push(format!("key={k}"));
        }
        writeln!(out, "rule {}: drop {}", d.id, parts.join(" "))?;
    }
    Ok(())
}

/// What `inlet quarantine` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuarantineAction {
    List,
    Replay,
    Drop,
}

/// `inlet quarantine list|drop` (a replay reaches here only without a server).
fn quarantine(
    exec: &Exec,
    action: QuarantineAction,
    app: &str,
    sel: Selection,
    json: bool,
    out: &mut dyn Write,
) -> store::Result<()> {
    let store = exec.store();
    match action {
        QuarantineAction::List => {
            let doc = crate::quarantine::list(store, app, &sel, crate::quarantine::MAX_BATCH)?;
            if json {
                writeln!(out, "{doc}")?;
                return Ok(());
            }
            writeln!(
                out,
                "app {app}: {} held ({} bytes), {} dropped over the bounds",
                doc["held"], doc["bytes"], doc["dropped"]
            )?;
            for r in doc["reasons"].as_array().into_iter().flatten() {
                writeln!(out, "  {}: {}", text(&r["reason"]), r["count"])?;
            }
            let events = doc["events"].as_array().cloned().unwrap_or_default();
            table(
                out,
                &["EVENT_ID", "EVENT", "REASON", "SOURCE", "KEY", "RECEIVED"],
                events.iter().map(|e| {
                    vec![
                        text(&e["event_id"]),
                        text(&e["event_name"]),
                        text(&e["reason"]),
                        text(&e["source"]),
                        e["key_id"].to_string(),
                        rfc3339_ms(e["received_at_ms"].as_u64().unwrap_or(0)),
                    ]
                }),
            )?;
        }
        QuarantineAction::Drop => {
            if sel.reason.is_none() && sel.ids.is_empty() {
                return Err(store::Error::Refused("give --reason or --id".into()));
            }
            let (app_id, qids) = crate::quarantine::discard_ids(store, app, &sel)?;
            let n = exec.write(move |txn| store::quarantine::remove(txn, app_id, &qids))?;
            writeln!(out, "app {app}: {n} quarantined events dropped")?;
        }
        QuarantineAction::Replay => {
            let _ = json;
            return Err(store::Error::Refused(
                "a replay goes through the server's ingest pipeline: start inlet serve on this \
                 data dir, then run the command again"
                    .into(),
            ));
        }
    }
    Ok(())
}

fn text(v: &serde_json::Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

/// `inlet receipt`: the JSON document, or lines for a person.
fn receipt(r: &store::receipts::Receipt, json: bool, out: &mut dyn Write) -> store::Result<()> {
    if json {
        serde_json::to_writer(&mut *out, &r.to_json()).map_err(std::io::Error::from)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(out, "{} {}: {}", r.app, r.event_id, r.status())?;
    if let Some(a) = &r.accepted {
        let key = match a.key_id {
            0 => "signed".to_owned(),
            id => format!("key {id}"),
        };
        writeln!(
            out,
            "  accepted {} as seq {} ({}, {key}), body {}",
            rfc3339_ms(a.received_at_ms),
            a.seq,
            a.source,
            a.audit_key
        )?;
    }
    if let Some(q) = &r.quarantined {
        writeln!(
            out,
            "  quarantined ({}, {}), received {}: inlet quarantine replay can store it",
            q.reason,
            q.source,
            rfc3339_ms(q.received_at_ms)
        )?;
    }
    if let Some(d) = &r.duplicate {
        writeln!(
            out,
            "  answered as a duplicate of seq {} {} time(s), last {}",
            d.of_seq,
            d.times,
            rfc3339_ms(d.last_ms)
        )?;
    }
    for x in &r.rejected {
        writeln!(
            out,
            "  rejected {}: {} time(s), first {}, last {}",
            x.reason,
            x.times,
            rfc3339_ms(x.first_ms),
            rfc3339_ms(x.last_ms)
        )?;
    }
    for d in &r.dropped {
        writeln!(
            out,
            "  dropped by rule {}: {} time(s), first {}, last {}",
            d.rule,
            d.times,
            rfc3339_ms(d.first_ms),
            rfc3339_ms(d.last_ms)
        )?;
    }
    Ok(())
}

fn quota(q: u64) -> String {
    if q == 0 {
        "unlimited".to_owned()
    } else {
        q.to_string()
    }
}

fn json_lines<T: Serialize>(out: &mut dyn Write, rows: &[T]) -> store::Result<()> {
    for row in rows {
        serde_json::to_writer(&mut *out, row).map_err(std::io::Error::from)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

/// Writes rows as columns aligned with two spaces, headed by `head`.
fn table(
    out: &mut dyn Write,
    head: &[&str],
    rows: impl Iterator<Item = Vec<String>>,
) -> std::io::Result<()> {
    let rows: Vec<Vec<String>> = rows.collect();
    let mut widths: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let head: Vec<String> = head.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&head).chain(&rows) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        writeln!(out, "{line}")?;
    }
    Ok(())
}

fn list_secrets(
    store: &Store,
    app: Option<&str>,
    json: bool,
    out: &mut dyn Write,
) -> store::Result<()> {
    let rows = store.secrets(app, now_ms())?;
    if json {
        return json_lines(out, &rows);
    }
    let when = |t: Option<u64>| t.map_or_else(|| "-".to_owned(), rfc3339_ms);
    table(
        out,
        &[
            "ID",
            "APP",
            "LABEL",
            "STATE",
            "CREATED",
            "EXPIRES",
            "REPLACED_BY",
            "REVOKED",
        ],
        rows.iter().map(|s| {
            vec![
                s.id.to_string(),
                s.app.clone(),
                s.label.clone(),
                s.state.to_owned(),
                rfc3339_ms(s.created_ms),
                when(s.expires_ms),
                s.replaced_by
                    .map_or_else(|| "-".to_owned(), |r| r.to_string()),
                when(s.revoked_ms),
            ]
        }),
    )?;
    Ok(())
}

/// `inlet profile`: every identifier linked to `id`, then the profile's events.
fn profile(
    identity: &Identity,
    app: &str,
    kind: Option<&str>,
    id: &str,
    limit: usize,
    json: bool,
    out: &mut dyn Write,
) -> store::Result<()> {
    let Some(p) = identity.profile_of_kind(app, kind, id, limit)? else {
        return Err(store::Error::NotFound(format!(
            "no event of app {app:?} carries the identifier {id:?}"
        )));
    };
    if json {
        serde_json::to_writer(&mut *out, &p.to_json(app, id)).map_err(std::io::Error::from)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(out, "identifiers linked to {id} in app {app}:")?;
    table(
        out,
        &["KIND", "VALUE"],
        p.identifiers
            .iter()
            .map(|(k, v)| vec![k.clone(), v.clone()]),
    )?;
    if p.truncated {
        writeln!(
            out,
            "(stopped after {} identifiers)",
            crate::identity::MAX_PROFILE_IDENTIFIERS
        )?;
    }
    writeln!(out)?;
    writeln!(out, "events, most recently stored first:")?;
    table(
        out,
        &[
            "SEQ",
            "RECEIVED",
            "EVENT_TIME",
            "SOURCE",
            "EVENT_NAME",
            "EVENT_ID",
        ],
        p.events.iter().map(|(seq, r)| {
            vec![
                seq.to_string(),
                rfc3339_ms(r.received_at_ms),
                rfc3339_ms(r.event_ts_ms.max(0) as u64),
                r.source.clone(),
                r.event_name.clone(),
                r.event_id.clone(),
            ]
        }),
    )?;
    Ok(())
}

/// How long a command (or a starting server) waits for the database held by a server that is
/// starting or stopping.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
