//! Media path of the recorder: RTP parsing, decoders, the per-session
//! timeline that places audio by RTP timestamp, and the Ogg Opus writer.
//!
//! Everything here is pure (no sockets, no clocks): the caller passes packet
//! arrival instants and drives time with `advance`, so behaviour is
//! deterministic and testable.

pub mod codec;
pub mod dtmf;
pub mod g711;
pub mod g722;
pub mod latch;
pub mod ogg;
pub mod recording;
pub mod resample;
pub mod rtp;
pub mod timeline;

pub use codec::{Codec, PayloadType};
pub use dtmf::{DtmfEvent, TelephoneEvent};
pub use latch::{Latch, Verdict};
pub use ogg::{OggOpusWriter, OpusConfig};
pub use recording::{MediaError, Recording};
pub use rtp::{Packet, RtpError, RtpPacket};
pub use timeline::{Channel, StreamConfig, StreamId, StreamStats, Timeline, TimelineConfig};
