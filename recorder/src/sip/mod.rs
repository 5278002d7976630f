//! SIP message parsing and serialisation (RFC 3261), without transaction or
//! dialog state: pure functions over byte buffers that the transport and
//! transaction layers build on.

mod error;
mod framer;
mod header;
mod message;
pub mod server;
pub mod timer;
pub mod tls;
pub mod transaction;
pub mod transport;
mod txn;

pub use error::SipError;
pub use framer::StreamFramer;
pub use header::{
    CSeq, Header, Headers, MediaType, NameAddr, Param, Via, expand_compact_name, split_list,
};
pub(crate) use message::find_header_end;
pub use message::{Limits, Method, SipMessage, StartLine, parse_datagram, parse_with_limits};
pub use txn::{DialogId, TransactionKey};
