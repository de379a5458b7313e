//! Integration tests: a real server process, real HTTP, a real redb file in a temp dir.

mod support;
mod transport;

mod abuse;
mod accounts;
mod adjust;
mod admin;
mod admin_browser;
mod appsflyer;
mod backup_schedule;
mod bench;
mod cli;
mod cluster;
mod crash;
mod datafly;
mod diskfull;
mod durability;
mod engine;
mod fixture;
mod gamerebellion;
mod golden;
mod hostile;
mod identity;
mod key_cache;
mod layering;
mod native;
mod operations;
mod operator;
mod packaging;
mod powerloss;
mod privacy;
mod recover;
mod redaction;
mod security;
mod simdisk;
mod soak;
