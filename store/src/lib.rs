//! The recording vault: database, encrypted format, object storage, audit log, backups.
pub mod backup;
pub mod db;
pub mod format;
pub mod keys;
pub mod objstore;
