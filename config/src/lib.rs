//! Typed runtime configuration of the CallVault workloads (recorder first).
