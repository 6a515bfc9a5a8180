//! Real-time delivery over WebSockets: the fan-out [`Hub`] (which sockets each user has open,
//! presence, bounded per-socket outboxes) and the transport-neutral session driver
//! ([`run_session`]) that the axum route adapts.
//!
//! Must not depend on the chat domain or storage: the domain pushes frames through the hub and
//! receives client frames through [`InboundHandler`]. `frame` owns the wire shapes of socket
//! frames ([`ServerFrame`], [`ClientFrame`]); axum types stay in the route adapter (`http::socket`), which also implements
//! the chat domain's `Delivery` so the domain never sees a frame.

mod frame;
mod heartbeat;
mod hub;
mod session;

pub use frame::{
    ClientFrame, ErrorFrame, Frame, GroupRemovedFrame, MessageStatusFrame, MessagesReadFrame,
    NoMessage, NotificationFrame, ServerFrame, TypingFrame,
};
pub use frame::{
    EditFrame, MessageDeletedFrame, MessageEditedFrame, ReactionFrame, ReactionUpdateFrame,
};
pub use heartbeat::{Heartbeat, InboundBudget, Liveness};
pub use hub::{CloseReason, Connection, Hub, HubConfig, HubStats, Outgoing};
pub use session::{
    run_session, CloseFrame, InboundHandler, InboundMessage, OutboundMessage, SessionEnd,
    CLOSE_GOING_AWAY, CLOSE_NORMAL, CLOSE_POLICY_VIOLATION, CLOSE_TIMEOUT, CLOSE_TOO_BIG,
    CLOSE_TRY_AGAIN_LATER,
};
