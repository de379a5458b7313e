//! Integration tests: a real server process, real HTTP, a real redb file in a temp dir.

mod support;

mod adjust;
mod admin;
mod admin_browser;
mod appsflyer;
mod cli;
mod datafly;
mod crash;
mod diskfull;
mod durability;
mod gamerebellion;
mod golden;
mod identity;
mod hostile;
mod native;
mod operations;
mod packaging;
mod powerloss;
mod security;
mod simdisk;
mod soak;
