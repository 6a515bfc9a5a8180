//! The real-time fan-out core: which sockets each user has open, and delivery of pre-serialised
//! frames to them.
//!
//! A [`Hub`] is a registry of connected sockets keyed by user id. [`Hub::connect`] registers a
//! socket and returns its [`Connection`], which owns the socket's bounded outbox and deregisters
//! itself on drop. Sending never blocks or awaits: each socket gets a `try_send`, and a socket whose
//! outbox is full is marked overflowed and told to close, so one slow client never stalls the
//! others. Presence (`getOnlineUsers`) is a versioned snapshot rather than a queued frame, so a
//! burst of connects costs each socket at most one pending snapshot.
//!
//! Must not depend on axum, the chat domain or storage; it does no I/O and spawns no tasks, so
//! it is tested with plain channels.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tokio::sync::{mpsc, watch, Notify};

use super::frame::{Frame, ServerFrame};

/// Limits and timings for sockets; the hub uses `outbox_capacity`, sessions use the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubConfig {
    /// Frames a socket may have queued before it counts as too slow and is closed.
    pub outbox_capacity: usize,
    /// A socket that has sent nothing for this long is sent a WebSocket ping.
    pub heartbeat_interval: Duration,
    /// A socket that has sent nothing (no pong, no frame) for this long is closed.
    pub heartbeat_timeout: Duration,
    /// A single write (or batch of writes) that takes longer than this closes the socket.
    pub write_timeout: Duration,
    /// The largest inbound text or binary message accepted; a larger one closes the socket.
    pub max_inbound_bytes: usize,
    /// Sustained inbound frames per second (any kind) before the socket is closed as a flood;
    /// `0` turns the limit off.
    pub inbound_per_second: u32,
    /// How many inbound frames may arrive in a burst above the sustained rate.
    pub inbound_burst: u32,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            outbox_capacity: 256,
            heartbeat_interval: Duration::from_secs(25),
            heartbeat_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(30),
            max_inbound_bytes: 64 * 1024,
            inbound_per_second: 20,
            inbound_burst: 100,
        }
    }
}

/// Why the hub told a connection to close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The socket's outbox was full when a frame arrived: the client is not keeping up.
    Overflow,
    /// [`Hub::disconnect_user`] closed every socket of the user.
    Disconnected,
    /// The sign-in session the socket was opened with ended (logout, password change, revoked
    /// by the user or an admin): [`Hub::end_sessions`].
    SessionEnded,
}

/// What a [`Connection`] yields next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// A frame to write to the socket.
    Frame(Frame),
    /// The socket must close; every later call yields this again.
    Close(CloseReason),
}

/// Counters for metrics; totals are since the hub was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HubStats {
    /// Sockets connected now.
    pub connections: usize,
    /// Users with at least one socket now.
    pub users_online: usize,
    pub connections_opened: u64,
    pub connections_closed: u64,
    /// Frames placed in an outbox.
    pub frames_queued: u64,
    /// Frames not delivered because the socket's outbox was full or it was already closing.
    pub frames_dropped: u64,
    /// Sockets closed because their outbox overflowed.
    pub sockets_overflowed: u64,
    /// Times the online set changed (a user's first connect or last disconnect).
    pub presence_changes: u64,
}

/// The registry of connected sockets. Cloning is cheap and shares the registry.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub::new(HubConfig::default())
    }
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("config", &self.inner.config)
            .field("connections", &self.connection_count())
            .finish_non_exhaustive()
    }
}

impl Hub {
    pub fn new(config: HubConfig) -> Hub {
        let shards = (0..SHARDS).map(|_| Shard::default()).collect();
        Hub {
            inner: Arc::new(Inner {
                config,
                shards,
                hasher: RandomState::new(),
                presence: watch::Sender::new(0),
                presence_cache: Mutex::new(None),
                hidden: RwLock::new(HashMap::new()),
                next_connection_id: AtomicU64::new(1),
                connections: AtomicUsize::new(0),
                counters: Counters::default(),
            }),
        }
    }

    pub fn config(&self) -> &HubConfig {
        &self.inner.config
    }

    /// Registers a new socket for `user_id`. Its first [`Connection::recv`] yields the current
    /// `getOnlineUsers` snapshot. If this is the user's first socket, every socket is sent the new
    /// snapshot.
    pub fn connect(&self, user_id: &str) -> Connection {
        self.connect_in_session(user_id, None)
    }

    /// [`Hub::connect`] for a socket opened with sign-in session `session`, which
    /// [`Hub::end_sessions`] closes when the session ends.
    pub fn connect_in_session(&self, user_id: &str, session: Option<&str>) -> Connection {
        let inner = &self.inner;
        // `mpsc::channel` panics on zero; one slot is the smallest meaningful outbox.
        let (sender, outbox) = mpsc::channel(inner.config.outbox_capacity.max(1));
        let state = Arc::new(SocketState::default());
        let socket = Socket {
            outbox: sender,
            state: Arc::clone(&state),
            session: session.map(Arc::from),
        };

        let (user_id, first) = {
            let mut users = inner.shard(user_id).users.write();
            // Reuse the registered key so every connection of a user shares one allocation.
            let existing = users.get_key_value(user_id).map(|(key, _)| Arc::clone(key));
            match existing {
                Some(key) => {
                    if let Some(sockets) = users.get_mut(user_id) {
                        sockets.push(socket);
                    }
                    (key, false)
                }
                None => {
                    let key: Arc<str> = Arc::from(user_id);
                    users.insert(Arc::clone(&key), vec![socket]);
                    (key, true)
                }
            }
        };
        inner.connections.fetch_add(1, Ordering::Relaxed);
        inner
            .counters
            .connections_opened
            .fetch_add(1, Ordering::Relaxed);

        let mut presence = inner.presence.subscribe();
        // A new socket always needs the current online set, whether or not it changed it.
        presence.mark_changed();
        if first {
            inner.presence_changed();
        }

        Connection {
            hub: self.clone(),
            user_id,
            id: inner.next_connection_id.fetch_add(1, Ordering::Relaxed),
            outbox,
            presence,
            state,
            presence_was_last: false,
        }
    }

    /// Queues `frame` on every socket of `user_id`; returns how many sockets took it (0 when the
    /// user is offline).
    pub fn send_to_user(&self, user_id: &str, frame: Frame) -> usize {
        let inner = &self.inner;
        let users = inner.shard(user_id).users.read();
        match users.get(user_id) {
            Some(sockets) => sockets
                .iter()
                .filter(|socket| inner.offer(socket, &frame))
                .count(),
            None => 0,
        }
    }

    /// Queues `frame` once on every socket of each distinct user in `user_ids` (a message to
    /// yourself reaches each of your sockets once); returns how many sockets took it.
    pub fn send_to_users(&self, user_ids: &[&str], frame: Frame) -> usize {
        // Small lists (the usual two participants) dedupe by scanning; large ones by hashing.
        if user_ids.len() <= 16 {
            let mut delivered = 0;
            for (index, user_id) in user_ids.iter().enumerate() {
                if !user_ids[..index].contains(user_id) {
                    delivered += self.send_to_user(user_id, Frame::clone(&frame));
                }
            }
            delivered
        } else {
            let mut seen = HashSet::with_capacity(user_ids.len());
            user_ids
                .iter()
                .filter(|user_id| seen.insert(**user_id))
                .map(|user_id| self.send_to_user(user_id, Frame::clone(&frame)))
                .sum()
        }
    }

    /// Queues `frame` on every connected socket; returns how many took it.
    pub fn broadcast(&self, frame: Frame) -> usize {
        let inner = &self.inner;
        let mut delivered = 0;
        for shard in inner.shards.iter() {
            let users = shard.users.read();
            for socket in users.values().flatten() {
                if inner.offer(socket, &frame) {
                    delivered += 1;
                }
            }
        }
        delivered
    }

    /// Tells every socket of `user_id` to close (for example when the account is deleted);
    /// returns how many sockets were told. Presence changes when the sessions drop their
    /// connections.
    pub fn disconnect_user(&self, user_id: &str) -> usize {
        let users = self.inner.shard(user_id).users.read();
        let Some(sockets) = users.get(user_id) else {
            return 0;
        };
        for socket in sockets {
            socket.state.close(CloseReason::Disconnected);
        }
        sockets.len()
    }

    /// Tells the sockets of `user_id` opened with one of `sessions` to close; returns how many
    /// were told.
    pub fn end_sessions(&self, user_id: &str, sessions: &[String]) -> usize {
        let users = self.inner.shard(user_id).users.read();
        let Some(sockets) = users.get(user_id) else {
            return 0;
        };
        let mut told = 0;
        for socket in sockets {
            let ended = socket
                .session
                .as_deref()
                .is_some_and(|session| sessions.iter().any(|ended| ended == session));
            if ended {
                socket.state.close(CloseReason::SessionEnded);
                told += 1;
            }
        }
        told
    }

    /// From now on `viewer` does not see the users in `hidden` online (they blocked the
    /// viewer); the viewer's open sockets get a fresh `getOnlineUsers` at once.
    pub fn hide_presence(&self, viewer: &str, hidden: Vec<String>) {
        {
            let mut table = self.inner.hidden.write();
            if hidden.is_empty() {
                if table.remove(viewer).is_none() {
                    return;
                }
            } else {
                table.insert(Arc::from(viewer), Arc::new(hidden.into_iter().collect()));
            }
        }
        let version = *self.inner.presence.borrow();
        self.send_to_user(viewer, self.inner.presence_frame_for(viewer, version));
    }

    pub fn is_online(&self, user_id: &str) -> bool {
        self.inner.shard(user_id).users.read().contains_key(user_id)
    }

    /// The ids of users with at least one socket, sorted.
    pub fn online_users(&self) -> Vec<String> {
        self.inner.online_users()
    }

    /// Sockets connected now, across all users.
    pub fn connection_count(&self) -> usize {
        self.inner.connections.load(Ordering::Relaxed)
    }

    /// Sockets `user_id` has connected now.
    pub fn user_connection_count(&self, user_id: &str) -> usize {
        self.inner
            .shard(user_id)
            .users
            .read()
            .get(user_id)
            .map_or(0, Vec::len)
    }

    pub fn stats(&self) -> HubStats {
        let inner = &self.inner;
        let counters = &inner.counters;
        HubStats {
            connections: inner.connections.load(Ordering::Relaxed),
            users_online: inner
                .shards
                .iter()
                .map(|shard| shard.users.read().len())
                .sum(),
            connections_opened: counters.connections_opened.load(Ordering::Relaxed),
            connections_closed: counters.connections_closed.load(Ordering::Relaxed),
            frames_queued: counters.frames_queued.load(Ordering::Relaxed),
            frames_dropped: counters.frames_dropped.load(Ordering::Relaxed),
            sockets_overflowed: counters.sockets_overflowed.load(Ordering::Relaxed),
            presence_changes: counters.presence_changes.load(Ordering::Relaxed),
        }
    }
}

/// One registered socket, seen from its session: the receiving end of its outbox and the
/// presence snapshots. Dropping it deregisters the socket.
pub struct Connection {
    hub: Hub,
    user_id: Arc<str>,
    id: u64,
    outbox: mpsc::Receiver<Frame>,
    /// The presence version this socket has seen; a newer one means a snapshot is due.
    presence: watch::Receiver<u64>,
    state: Arc<SocketState>,
    /// Whether the last frame yielded was a presence snapshot, so snapshots and queued frames
    /// take turns while presence keeps changing (a burst of connects must not starve messages).
    presence_was_last: bool,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("user_id", &self.user_id)
            .field("id", &self.id)
            .field("close_reason", &self.state.reason())
            .finish_non_exhaustive()
    }
}

impl Connection {
    pub fn user_id(&self) -> &str {
        &self.user_id
    }

    /// A process-unique id for this socket, for logs.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// True once the hub found this socket's outbox full.
    pub fn overflowed(&self) -> bool {
        self.state.reason() == Some(CloseReason::Overflow)
    }

    /// Why the hub told this socket to close, if it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.state.reason()
    }

    /// The next frame to write, waiting for one. A close request wins over queued frames; a
    /// pending presence snapshot and queued frames take turns. Cancel-safe: dropping the
    /// future loses nothing, so it can be a `select!` branch.
    pub async fn recv(&mut self) -> Outgoing {
        if let Some(next) = self.try_next() {
            return next;
        }
        loop {
            tokio::select! {
                biased;
                () = self.state.wake.notified() => {
                    if let Some(reason) = self.state.reason() {
                        return Outgoing::Close(reason);
                    }
                }
                frame = self.outbox.recv() => {
                    // The hub keeps this outbox's sender until the connection drops, so `None`
                    // only happens if the registry lost the socket: treat it as a close.
                    self.presence_was_last = false;
                    return match frame {
                        Some(frame) => Outgoing::Frame(frame),
                        None => Outgoing::Close(CloseReason::Disconnected),
                    };
                }
                changed = self.presence.changed() => {
                    // The sender lives in the hub this connection holds, so `changed` cannot fail;
                    // if it somehow did, closing beats spinning on a dead channel.
                    if changed.is_err() {
                        return Outgoing::Close(CloseReason::Disconnected);
                    }
                    let version = *self.presence.borrow_and_update();
                    self.presence_was_last = true;
                    return Outgoing::Frame(self.hub.inner.presence_frame_for(&self.user_id, version));
                }
            }
        }
    }

    /// The next frame if one is ready, without waiting; `None` when there is nothing to write.
    pub fn try_next(&mut self) -> Option<Outgoing> {
        if let Some(reason) = self.state.reason() {
            return Some(Outgoing::Close(reason));
        }
        if !self.presence_was_last {
            if let Some(snapshot) = self.take_presence() {
                return Some(snapshot);
            }
        }
        if let Ok(frame) = self.outbox.try_recv() {
            self.presence_was_last = false;
            return Some(Outgoing::Frame(frame));
        }
        self.take_presence()
    }

    /// The presence snapshot, if this socket has not seen the current version.
    fn take_presence(&mut self) -> Option<Outgoing> {
        if !self.presence.has_changed().unwrap_or(false) {
            return None;
        }
        let version = *self.presence.borrow_and_update();
        self.presence_was_last = true;
        Some(Outgoing::Frame(
            self.hub.inner.presence_frame_for(&self.user_id, version),
        ))
    }

    /// Resolves when the hub tells this socket to close. A session races its socket writes against
    /// this, so a client that stopped reading is closed even while a write is stuck.
    pub async fn closed(&self) -> CloseReason {
        loop {
            if let Some(reason) = self.state.reason() {
                return reason;
            }
            self.state.wake.notified().await;
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.hub.inner.deregister(&self.user_id, &self.state);
    }
}

/// Shards of the registry, so sends to different users rarely touch the same lock.
const SHARDS: usize = 32;

struct Inner {
    config: HubConfig,
    shards: Box<[Shard]>,
    hasher: RandomState,
    /// Bumped on every change of the online set; sessions wait on it for a new snapshot.
    presence: watch::Sender<u64>,
    /// The last `getOnlineUsers` frame built and the presence version it reflects at least, so
    /// one change is serialised once however many sockets ask.
    presence_cache: Mutex<Option<(u64, Frame)>>,
    /// Users whom a viewer may not see online (they blocked the viewer), by viewer; only
    /// viewers with someone hidden have an entry, and only they get a presence frame of their own.
    hidden: RwLock<HashMap<Arc<str>, Arc<HashSet<String>>>>,
    next_connection_id: AtomicU64,
    connections: AtomicUsize,
    counters: Counters,
}

/// Aligned to a cache line pair so two shards' locks never share one.
#[repr(align(128))]
#[derive(Default)]
struct Shard {
    users: RwLock<HashMap<Arc<str>, Vec<Socket>>>,
}

/// The hub's end of one socket: 16 bytes, plus the shared state and the channel.
struct Socket {
    outbox: mpsc::Sender<Frame>,
    state: Arc<SocketState>,
    /// The sign-in session the socket was opened with, if any.
    session: Option<Arc<str>>,
}

/// What the hub and a connection share about one socket.
#[derive(Default)]
struct SocketState {
    /// `OPEN`, or the [`CloseReason`] the hub recorded; set once, first reason wins.
    close: AtomicU8,
    /// Wakes the session when `close` is set. `notify_one` stores a permit, so a close recorded
    /// while the session is busy writing is not missed.
    wake: Notify,
}

const OPEN: u8 = 0;
const OVERFLOW: u8 = 1;
const DISCONNECTED: u8 = 2;
const SESSION_ENDED: u8 = 3;

impl SocketState {
    fn reason(&self) -> Option<CloseReason> {
        match self.close.load(Ordering::Acquire) {
            OVERFLOW => Some(CloseReason::Overflow),
            DISCONNECTED => Some(CloseReason::Disconnected),
            SESSION_ENDED => Some(CloseReason::SessionEnded),
            _ => None,
        }
    }

    fn is_closing(&self) -> bool {
        self.close.load(Ordering::Acquire) != OPEN
    }

    /// Records `reason` unless a reason is already recorded; returns whether this call set it.
    fn close(&self, reason: CloseReason) -> bool {
        let code = match reason {
            CloseReason::Overflow => OVERFLOW,
            CloseReason::Disconnected => DISCONNECTED,
            CloseReason::SessionEnded => SESSION_ENDED,
        };
        let set = self
            .close
            .compare_exchange(OPEN, code, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if set {
            self.wake.notify_one();
        }
        set
    }
}

#[derive(Default)]
struct Counters {
    connections_opened: AtomicU64,
    connections_closed: AtomicU64,
    frames_queued: AtomicU64,
    frames_dropped: AtomicU64,
    sockets_overflowed: AtomicU64,
    presence_changes: AtomicU64,
}

impl Inner {
    fn shard(&self, user_id: &str) -> &Shard {
        // Truncating the hash is fine: any bits pick a shard evenly.
        let index = self.hasher.hash_one(user_id) as usize % SHARDS;
        &self.shards[index]
    }

    /// Offers `frame` to one socket without waiting; a full outbox closes the socket.
    fn offer(&self, socket: &Socket, frame: &Frame) -> bool {
        if socket.state.is_closing() {
            self.counters.frames_dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        match socket.outbox.try_send(Frame::clone(frame)) {
            Ok(()) => {
                self.counters.frames_queued.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.counters.frames_dropped.fetch_add(1, Ordering::Relaxed);
                if socket.state.close(CloseReason::Overflow) {
                    self.counters
                        .sockets_overflowed
                        .fetch_add(1, Ordering::Relaxed);
                }
                false
            }
            // The connection is being dropped and has not deregistered yet.
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.counters.frames_dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    fn deregister(&self, user_id: &str, state: &Arc<SocketState>) {
        let last = {
            let mut users = self.shard(user_id).users.write();
            match users.get_mut(user_id) {
                Some(sockets) => {
                    sockets.retain(|socket| !Arc::ptr_eq(&socket.state, state));
                    if sockets.is_empty() {
                        users.remove(user_id);
                        true
                    } else {
                        false
                    }
                }
                None => false,
            }
        };
        self.connections.fetch_sub(1, Ordering::Relaxed);
        self.counters
            .connections_closed
            .fetch_add(1, Ordering::Relaxed);
        if last {
            self.presence_changed();
        }
    }

    /// Called after the registry changed the online set, so a snapshot built for the new version
    /// sees the change.
    fn presence_changed(&self) {
        self.counters
            .presence_changes
            .fetch_add(1, Ordering::Relaxed);
        self.presence.send_modify(|version| *version += 1);
    }

    fn online_users(&self) -> Vec<String> {
        let mut users: Vec<String> = Vec::new();
        for shard in self.shards.iter() {
            users.extend(shard.users.read().keys().map(|user_id| user_id.to_string()));
        }
        users.sort_unstable();
        users
    }

    /// The `getOnlineUsers` frame `viewer` gets: the shared one, or one without the users
    /// hidden from them.
    fn presence_frame_for(&self, viewer: &str, version: u64) -> Frame {
        let hidden = self.hidden.read().get(viewer).cloned();
        match hidden {
            None => self.presence_frame(version),
            Some(hidden) => {
                let online = self.online_users();
                let visible: Vec<&str> = online
                    .iter()
                    .filter(|user| !hidden.contains(*user))
                    .map(String::as_str)
                    .collect();
                ServerFrame::online_users(&visible).encode()
            }
        }
    }

    /// The `getOnlineUsers` frame for presence `version` or newer.
    fn presence_frame(&self, version: u64) -> Frame {
        let mut cache = self.presence_cache.lock();
        if let Some((cached_version, frame)) = cache.as_ref() {
            if *cached_version >= version {
                return Frame::clone(frame);
            }
        }
        // Read the version before scanning: every change up to it is already in the registry.
        let current = *self.presence.borrow();
        // Shared keys, not copied strings: with thousands online this runs on every change.
        let mut online: Vec<Arc<str>> = Vec::new();
        for shard in self.shards.iter() {
            online.extend(shard.users.read().keys().cloned());
        }
        online.sort_unstable();
        let online: Vec<&str> = online.iter().map(|user_id| &**user_id).collect();
        let built = ServerFrame::online_users(&online).encode();
        *cache = Some((current, Frame::clone(&built)));
        built
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_capacity_outbox_is_clamped() {
        let hub = Hub::new(HubConfig {
            outbox_capacity: 0,
            ..HubConfig::default()
        });
        let mut connection = hub.connect("a");
        assert!(matches!(connection.try_next(), Some(Outgoing::Frame(_))));
        assert_eq!(hub.send_to_user("a", Frame::from("1")), 1);
        assert_eq!(
            connection.try_next(),
            Some(Outgoing::Frame(Frame::from("1")))
        );
    }
}
