//! Credentials: server keys (minting, hashing, constant-time verification).

pub mod keys;
