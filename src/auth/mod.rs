//! Credentials: server keys (minting, hashing, constant-time verification), the admin
//! password hash, and HMAC signing secrets (minting, sealing at rest, request signature
//! verification).

pub mod keys;
pub mod password;
pub mod redact;
pub mod secrets;
