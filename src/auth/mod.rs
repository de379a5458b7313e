//! Credentials: server keys (minting, hashing, constant-time verification), the admin
//! password hash, and HMAC signing secrets (minting, sealing at rest, request signature
//! verification).
//!
//! Secrets are compared with `subtle::ConstantTimeEq` (already built for rustls): ring 0.17
//! deprecates its `constant_time` compare as internal, and `ring::hmac::verify` wants the
//! message in one slice, which would copy every signed body.

pub mod keys;
pub mod password;
pub mod redact;
pub mod secrets;
