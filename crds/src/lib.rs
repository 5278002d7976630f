//! The five CallVault custom resources.
