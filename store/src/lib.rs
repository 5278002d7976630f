//! The recording vault: database, encrypted format, object storage, audit log.
pub mod db;
pub mod format;
pub mod keys;
pub mod objstore;
