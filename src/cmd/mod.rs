//! One module per subcommand that the binary implements itself.
pub mod crdgen;
pub mod keys;
pub mod verify;
