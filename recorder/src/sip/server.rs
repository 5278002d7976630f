//! SIP server dispatching to a session handler (work in progress).
