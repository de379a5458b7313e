//! Credentials: server keys (minting, hashing, constant-time verification) and the admin
//! password hash.

pub mod keys;
pub mod password;
