//! Wire formats. One module per vendor dialect turns request bytes into canonical
//! [`Draft`](crate::event::Draft)s. Dialects are pure: no I/O, no clock, no store.

pub mod adjust;
pub mod appsflyer;
pub mod datafly;
pub mod gamerebellion;
pub mod json;
pub mod reflect;
