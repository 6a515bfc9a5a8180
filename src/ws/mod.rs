//! Real-time delivery over WebSockets: the fan-out [`Hub`] (which sockets each user has open,
//! presence, bounded per-socket outboxes) and the transport-neutral session driver
//! ([`run_session`]) that the axum route adapts.
//!
//! Must not depend on the chat domain or storage: the domain pushes frames through the hub and
//! receives client frames through [`InboundHandler`]. Only `hub`/`session` own the wire shapes of
//! socket frames; axum types stay in the route adapter (`http::socket`), which also implements
//! the chat domain's `Delivery` so the domain never sees a frame.

mod heartbeat;
mod hub;
mod session;

pub use heartbeat::{Heartbeat, InboundBudget, Liveness};
pub use hub::{
    bare_frame, frame, frame_error, try_frame, CloseReason, Connection, Frame, Hub, HubConfig,
    HubStats, Outgoing, ONLINE_USERS_KIND,
};
pub use session::{
    run_session, ClientFrame, CloseFrame, InboundHandler, InboundMessage, OutboundMessage,
    SessionEnd, CLOSE_GOING_AWAY, CLOSE_NORMAL, CLOSE_POLICY_VIOLATION, CLOSE_TIMEOUT,
    CLOSE_TOO_BIG, CLOSE_TRY_AGAIN_LATER,
};
