//! Socket.IO at `/socket.io/` (Engine.IO v4, Socket.IO v5: what `socket.io-client` 4.x speaks),
//! over WebSocket and HTTP long-polling, for front ends written against the MERN app.
//!
//! A thin protocol layer over the same [`Hub`](crate::ws::Hub) and session loop
//! ([`run_session`](crate::ws::run_session)) as `/ws`: a Socket.IO connection is one more socket
//! of its user (one presence, the same limits), hub frames `{"type": T, "data": D}` go out as
//! events `42["T",D]` whatever `T` is, and client events come back in as the frames `/ws`
//! accepts. `engine` owns Engine.IO sessions and their transports (the routes are here);
//! `bridge` drives one Socket.IO connection: the namespace connect and its authentication, the
//! session loop, and connection-state recovery; `packet` owns the wire forms.
//!
//! socketioxide was measured first (BENCHMARKS.md): 38 KB per idle connection, 10,000 of them
//! 383 MB, against a floor of 200 MB; this layer keeps `/ws`'s per-socket economy instead.

mod bridge;
mod engine;
pub mod packet;

pub use engine::router;
