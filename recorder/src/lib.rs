//! The CallVault recorder: a SIPREC recording server. SIP ([`sip`]) hands offers to the
//! session layer ([`session`]), which runs one [`call`] per recorded dialog (media into an
//! encrypted spool file); the [`commit`] layer uploads each ended recording and finishes its
//! row, retrying until both succeed; [`service`] wires it all for `callvault recorder`.
pub mod alarms;
pub mod call;
pub mod commit;
pub mod media;
pub mod metadata;
pub mod metrics;
pub mod multipart;
pub mod ops;
pub mod ports;
pub mod rules;
pub mod sdp;
pub mod service;
pub mod session;
pub mod sip;
pub mod spool;
pub mod srtp;
