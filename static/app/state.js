// The client's model of the chat: who I am, the people in the sidebar, each conversation's
// messages (keyed by `_id`, ordered by `seq`) and the messages I am still sending, presence and
// typing; plus the actions that change it and the handling of server frames. Views subscribe to
// topics with `on` and re-render; nothing here touches the DOM.
//
// Exactly-once display rests on two rules: every message is stored under its `_id` (an optimistic
// bubble is replaced when the message with the id from the 202 arrives, whichever comes first),
// and after every (re)connection the open conversation asks for `?after=<newest seq>`.

import { ApiError, get, post, setExpectedUser } from './api.js';
import { Realtime } from './socket.js';

const PAGE = 50;
const CATCH_UP_PAGE = 200;
const TYPING_EXPIRES_MS = 7000;

const listeners = new Map();

/** Subscribes to a topic; returns the unsubscribe function. */
export function on(topic, handler) {
  if (!listeners.has(topic)) listeners.set(topic, new Set());
  listeners.get(topic).add(handler);
  return () => listeners.get(topic)?.delete(handler);
}

export function emit(topic, detail) {
  for (const handler of listeners.get(topic) || []) {
    try {
      handler(detail);
    } catch (error) {
      console.error(error);
    }
  }
}

export const state = {
  /** The signed-in user, or null. */
  me: null,
  /** Sidebar entries by id: user fields plus `online`, `unreadCount`, `lastMessage`. */
  users: new Map(),
  usersLoaded: false,
  online: new Set(),
  /** Conversations by the other user's id. */
  conversations: new Map(),
  activeId: null,
  /** `connecting`, `open`, `waiting` or `offline`. */
  connection: 'connecting',
  retryAt: 0,
  /** Job states that arrived before the 202 that names their message. */
  earlyStatuses: new Map(),
  /** Pending sends by message id, for `messageStatus`. */
  pendingById: new Map(),
};

let realtime = null;
let localSeq = 0;
let refreshTimer = null;
let usersLoadedAt = 0;

/** Profile changes (a new photo, a new person) are not pushed: the sidebar refreshes this often. */
const USERS_REFRESH_MS = 2 * 60 * 1000;

function createConversation(otherId) {
  return {
    otherId,
    messages: new Map(),
    sortedCache: null,
    pending: new Map(),
    /** Element keys of messages that began as an optimistic bubble (so the bubble is reused). */
    keyOf: new Map(),
    /** My messages held back until a pending send's 202 claims them (see `addMessages`). */
    unclaimed: new Map(),
    loaded: false,
    loading: null,
    hasMore: true,
    loadingOlder: false,
    loadError: null,
    newestSeq: 0,
    oldestSeq: Infinity,
    seenUpTo: readSeen(otherId),
    lastMarked: 0,
    typing: false,
    typingTimer: null,
    stale: false,
  };
}

export function conversation(otherId) {
  let conv = state.conversations.get(otherId);
  if (!conv) {
    conv = createConversation(otherId);
    state.conversations.set(otherId, conv);
  }
  return conv;
}

/** The conversation's stored messages, oldest first. */
export function sortedMessages(conv) {
  if (!conv.sortedCache) {
    conv.sortedCache = [...conv.messages.values()].sort((a, b) => a.seq - b.seq);
  }
  return conv.sortedCache;
}

function seenKey(otherId) {
  return `courier.seen.${state.me?._id}.${otherId}`;
}

// Read receipts arrive live (`messagesRead`) and with the sidebar (`readByOtherUpTo`); the last
// one seen is also remembered per conversation in this browser, for the first paint.
function readSeen(otherId) {
  try {
    return Number(localStorage.getItem(seenKey(otherId))) || 0;
  } catch {
    return 0;
  }
}

function writeSeen(otherId, seq) {
  try {
    localStorage.setItem(seenKey(otherId), String(seq));
  } catch {
    // Storage disabled: receipts are still shown for this visit.
  }
}

/** Whether a send to this conversation is waiting for its 202 (which names its message id). */
function hasUnansweredSend(conv) {
  for (const pending of conv.pending.values()) {
    if (pending.status === 'sending') return true;
  }
  return false;
}

/**
 * Adds messages by `_id` (duplicates are ignored); returns how many were new. A message of mine
 * that arrives while a send is still waiting for its 202 may be that very send: it is held back
 * until the 202 says which optimistic bubble it replaces, so it never shows twice, even briefly.
 */
function addMessages(conv, messages) {
  let added = 0;
  for (const message of messages) {
    if (!message || typeof message._id !== 'string') continue;
    const pending = state.pendingById.get(message._id);
    if (pending && pending.otherId === conv.otherId) {
      conv.pending.delete(pending.localId);
      state.pendingById.delete(message._id);
    } else if (!pending && message.senderId === state.me?._id && !conv.messages.has(message._id)
      && hasUnansweredSend(conv)) {
      conv.unclaimed.set(message._id, message);
      continue;
    }
    if (conv.messages.has(message._id)) continue;
    conv.messages.set(message._id, message);
    conv.newestSeq = Math.max(conv.newestSeq, message.seq);
    conv.oldestSeq = Math.min(conv.oldestSeq, message.seq);
    added += 1;
  }
  if (added) conv.sortedCache = null;
  return added;
}

/** Shows held-back messages once no send is waiting for its 202 (they came from another tab). */
function releaseUnclaimed(conv) {
  if (conv.unclaimed.size === 0 || hasUnansweredSend(conv)) return;
  const held = [...conv.unclaimed.values()];
  conv.unclaimed.clear();
  addMessages(conv, held);
}

function otherOf(message) {
  return message.senderId === state.me?._id ? message.receiverId : message.senderId;
}

function isVisible() {
  return document.visibilityState === 'visible';
}

// ---------------------------------------------------------------------------------------------
// Session

export function setMe(user) {
  state.me = user;
  setExpectedUser(user?._id);
  emit('me');
}

/** Starts the real-time connection and loads the sidebar. */
export function startSession() {
  if (realtime) return;
  realtime = new Realtime({
    userId: state.me._id,
    onFrame: handleFrame,
    onState: (connection, detail) => {
      const wasOpen = state.connection === 'open';
      state.connection = connection;
      state.retryAt = detail?.retryAt || 0;
      emit('connection');
      if (connection === 'open') sync();
      if (wasOpen && connection !== 'open') {
        // Presence and typing cannot be trusted across a gap; the next connection's first
        // frame is a fresh presence snapshot.
        for (const conv of state.conversations.values()) setTyping(conv, false);
        state.online = new Set();
        emit('presence');
      }
    },
    onFailedConnect: () => {
      // The session may have ended (`api` handles the 401) or the cookie may now be someone
      // else's (the 409 reloads the tab).
      get('/api/auth/check').catch(() => {});
    },
  });
  realtime.start();
  loadUsers().catch(() => {});
  refreshTimer = setInterval(() => {
    if (isVisible() && state.connection === 'open') loadUsers().catch(() => {});
  }, USERS_REFRESH_MS);
}

export function reconnectNow() {
  realtime?.reconnectNow();
}

/** Forgets everything about the signed-in user (logout or an expired session). */
export function endSession() {
  realtime?.stop();
  realtime = null;
  clearInterval(refreshTimer);
  refreshTimer = null;
  for (const conv of state.conversations.values()) clearTimeout(conv.typingTimer);
  state.me = null;
  setExpectedUser(null);
  state.users = new Map();
  state.usersLoaded = false;
  state.online = new Set();
  state.conversations = new Map();
  state.activeId = null;
  state.earlyStatuses = new Map();
  state.pendingById = new Map();
  state.connection = 'connecting';
}

export function sendFrame(type, data) {
  return realtime ? realtime.send(type, data) : false;
}

/** After every (re)connection: refresh the sidebar and catch up the open conversation. */
async function sync() {
  const loads = [loadUsers().catch(() => {})];
  for (const conv of state.conversations.values()) {
    if (conv.otherId === state.activeId) loads.push(catchUp(conv).catch(() => {}));
    else if (conv.loaded) conv.stale = true;
  }
  await Promise.all(loads);
  refreshPendingStatuses();
  markReadIfVisible();
}

// ---------------------------------------------------------------------------------------------
// Sidebar

let usersLoad = null;
let usersReloadTimer = null;

export function loadUsers() {
  if (usersLoad) return usersLoad;
  usersLoad = (async () => {
    try {
      const list = await get('/api/messages/users');
      const users = new Map();
      for (const user of Array.isArray(list) ? list : []) {
        if (!user || typeof user._id !== 'string') continue;
        users.set(user._id, user);
        if (state.connection !== 'open' && user.online) state.online.add(user._id);
        const readUpTo = Number(user.readByOtherUpTo) || 0;
        const known = state.conversations.get(user._id);
        if (known && readUpTo > known.seenUpTo) {
          known.seenUpTo = readUpTo;
          writeSeen(user._id, readUpTo);
          emit('conversation', user._id);
        }
      }
      state.users = users;
      state.usersLoaded = true;
      usersLoadedAt = Date.now();
      emit('users');
      emit('presence');
    } finally {
      usersLoad = null;
    }
  })();
  return usersLoad;
}

/** Reloads the sidebar soon (coalescing bursts), e.g. when someone new appears. */
function reloadUsersSoon() {
  clearTimeout(usersReloadTimer);
  usersReloadTimer = setTimeout(() => loadUsers().catch(() => {}), 250);
}

/** Sidebar entries, latest activity first (people never talked to by name). */
export function sortedUsers() {
  const activity = (user) => (user.lastMessage ? Date.parse(user.lastMessage.createdAt) || 0 : 0);
  return [...state.users.values()].sort((a, b) => activity(b) - activity(a)
    || String(a.fullName).localeCompare(String(b.fullName), undefined, { sensitivity: 'base' }));
}

export function totalUnread() {
  let total = 0;
  for (const user of state.users.values()) total += user.unreadCount || 0;
  return total;
}

// ---------------------------------------------------------------------------------------------
// Conversations

export function setActive(otherId) {
  if (state.activeId === otherId) return;
  const previous = state.activeId ? state.conversations.get(state.activeId) : null;
  if (previous) stopTyping(previous);
  state.activeId = otherId;
  emit('active');
  if (!otherId) return;
  const conv = conversation(otherId);
  const ready = conv.loaded ? (conv.stale ? catchUp(conv) : Promise.resolve()) : loadLatest(conv);
  ready.catch(() => {}).finally(() => markReadIfVisible());
}

export function loadLatest(conv) {
  if (conv.loading) return conv.loading;
  conv.loadError = null;
  conv.loading = (async () => {
    try {
      const messages = await get(`/api/messages/${encodeURIComponent(conv.otherId)}?limit=${PAGE}`);
      addMessages(conv, messages);
      conv.hasMore = messages.length === PAGE;
      conv.loaded = true;
      conv.stale = false;
    } catch (error) {
      conv.loadError = error.message;
      throw error;
    } finally {
      conv.loading = null;
      emit('conversation', conv.otherId);
    }
  })();
  emit('conversation', conv.otherId);
  return conv.loading;
}

/** The page before the oldest message shown; returns how many arrived. */
export async function loadOlder(conv) {
  if (!conv.loaded || !conv.hasMore || conv.loadingOlder || !Number.isFinite(conv.oldestSeq)) return 0;
  conv.loadingOlder = true;
  emit('conversation', conv.otherId);
  try {
    const messages = await get(
      `/api/messages/${encodeURIComponent(conv.otherId)}?before=${conv.oldestSeq}&limit=${PAGE}`,
    );
    conv.hasMore = messages.length === PAGE;
    return addMessages(conv, messages);
  } finally {
    conv.loadingOlder = false;
    emit('conversation', conv.otherId);
  }
}

/** Everything after the newest message held: what was missed while disconnected. */
export async function catchUp(conv) {
  if (!conv.loaded) return loadLatest(conv);
  let added = 0;
  for (;;) {
    const messages = await get(
      `/api/messages/${encodeURIComponent(conv.otherId)}?after=${conv.newestSeq}&limit=${CATCH_UP_PAGE}`,
    );
    added += addMessages(conv, messages);
    if (messages.length < CATCH_UP_PAGE) break;
  }
  conv.stale = false;
  if (added) {
    const last = sortedMessages(conv).at(-1);
    const user = state.users.get(conv.otherId);
    if (user && last && (!user.lastMessage || user.lastMessage.seq < last.seq)) {
      user.lastMessage = last;
      emit('users');
    }
  }
  emit('conversation', conv.otherId);
  return added;
}

/** Tells the server (and so the other person) what I have read, when I can actually see it. */
export function markReadIfVisible() {
  const otherId = state.activeId;
  if (!otherId || !isVisible()) return;
  const conv = state.conversations.get(otherId);
  if (!conv || !conv.loaded) return;
  const user = state.users.get(otherId);
  const hasUnread = (user?.unreadCount || 0) > 0;
  const lastFromOther = [...sortedMessages(conv)].reverse().find((message) => message.senderId === otherId);
  const newest = lastFromOther ? lastFromOther.seq : 0;
  if (!hasUnread && newest <= conv.lastMarked) return;
  if (newest === 0 && !hasUnread) return;
  if (!sendFrame('markRead', { userId: otherId, seq: Math.max(conv.newestSeq, newest) })) return;
  conv.lastMarked = Math.max(conv.newestSeq, newest);
  if (user && user.unreadCount) {
    user.unreadCount = 0;
    emit('users');
  }
}

// ---------------------------------------------------------------------------------------------
// Sending

/** 128 random bits as hex (crypto.randomUUID needs a secure context; this does not). */
function randomKey() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** Starts sending `{text, image}` (image: a data URL) to `otherId`, shown at once. */
export function sendMessage(otherId, { text, image }) {
  const conv = conversation(otherId);
  localSeq += 1;
  const pending = {
    localId: `local-${Date.now().toString(36)}-${localSeq}`,
    key: `k-${localSeq}-${Math.random().toString(36).slice(2, 8)}`,
    // Sent with every attempt: a retry after a lost answer is the same message on the server.
    clientMessageId: randomKey(),
    otherId,
    senderId: state.me._id,
    receiverId: otherId,
    text: text || '',
    image: image || '',
    createdAt: new Date().toISOString(),
    status: 'sending',
    error: null,
    messageId: null,
    jobId: null,
  };
  conv.pending.set(pending.localId, pending);
  emit('conversation', otherId);
  emit('sent', otherId);
  deliver(conv, pending);
  return pending;
}

/** Sends a failed message again. */
export function retry(otherId, localId) {
  const conv = state.conversations.get(otherId);
  const pending = conv?.pending.get(localId);
  if (!pending || pending.status !== 'failed') return;
  if (pending.messageId) state.pendingById.delete(pending.messageId);
  pending.messageId = null;
  pending.jobId = null;
  deliver(conv, pending);
}

/** Removes a failed message that will not be sent. */
export function discard(otherId, localId) {
  const conv = state.conversations.get(otherId);
  const pending = conv?.pending.get(localId);
  if (!pending) return;
  if (pending.messageId) state.pendingById.delete(pending.messageId);
  conv.pending.delete(localId);
  emit('conversation', otherId);
}

async function deliver(conv, pending) {
  pending.status = 'sending';
  pending.error = null;
  emit('conversation', conv.otherId);
  try {
    const body = { clientMessageId: pending.clientMessageId };
    if (pending.text) body.text = pending.text;
    if (pending.image) body.image = pending.image;
    const accepted = await post(`/api/messages/send/${encodeURIComponent(conv.otherId)}`, body);
    if (!conv.pending.has(pending.localId)) {
      // Deleted while sending: the message exists anyway and will arrive like any other.
      releaseUnclaimed(conv);
      emit('conversation', conv.otherId);
      return;
    }
    const id = accepted.messageId;
    pending.messageId = id;
    pending.jobId = accepted.jobId;
    pending.status = 'queued';
    conv.keyOf.set(id, pending.key);
    state.pendingById.set(id, pending);
    const early = state.earlyStatuses.get(id);
    state.earlyStatuses.delete(id);
    if (early) applyJobState(pending, early);
    const arrived = conv.unclaimed.get(id) || conv.messages.get(id);
    conv.unclaimed.delete(id);
    if (arrived) {
      // The message itself came over the socket before this answer: it replaces the bubble.
      conv.messages.delete(id);
      conv.sortedCache = null;
      addMessages(conv, [arrived]);
    }
  } catch (error) {
    // A busy server (503 with Retry-After) is asked again a few times before the bubble fails;
    // the clientMessageId makes a repeated send safe.
    const busy = error instanceof ApiError && error.status === 503 && error.retryAfter;
    if (busy && (pending.busyRetries || 0) < BUSY_RETRIES) {
      pending.busyRetries = (pending.busyRetries || 0) + 1;
      pending.status = 'retrying';
      const seconds = Math.min(Math.max(Number(error.retryAfter) || 1, 1), 30);
      setTimeout(() => {
        if (conv.pending.has(pending.localId)) deliver(conv, pending);
      }, seconds * 1000);
    } else {
      pending.status = 'failed';
      pending.error = error instanceof ApiError ? error.message : 'Could not send.';
    }
  }
  releaseUnclaimed(conv);
  emit('conversation', conv.otherId);
}

/** How often a send refused as busy is tried again by itself. */
const BUSY_RETRIES = 3;

function applyJobState(pending, jobState) {
  switch (jobState) {
    case 'waiting':
    case 'active':
      pending.status = 'queued';
      break;
    case 'delayed':
      pending.status = 'retrying';
      break;
    case 'completed':
      pending.status = 'delivered';
      break;
    case 'failed':
    case 'removed':
      pending.status = 'failed';
      pending.error = 'Could not be delivered.';
      break;
    default:
      break;
  }
}

/** After a reconnect, asks for the state of sends whose final status may have been missed. */
function refreshPendingStatuses() {
  for (const [messageId, pending] of state.pendingById) {
    if (pending.status === 'failed' || !pending.jobId) continue;
    get(`/api/messages/status/${encodeURIComponent(pending.jobId)}`)
      .then((job) => {
        if (state.pendingById.get(messageId) !== pending) return;
        applyJobState(pending, job.state);
        emit('conversation', pending.otherId);
        if (job.state === 'completed') {
          const conv = state.conversations.get(pending.otherId);
          if (conv) catchUp(conv).catch(() => {});
        }
      })
      .catch(() => {});
  }
}

// ---------------------------------------------------------------------------------------------
// Typing

let typingSentAt = 0;
let typingTo = null;
let typingStopTimer = null;

/** Call on every keystroke in the composer of the conversation with `otherId`. */
export function noteTyping(otherId, hasText) {
  if (!hasText) {
    stopTyping(state.conversations.get(otherId));
    return;
  }
  const now = Date.now();
  if (typingTo !== otherId || now - typingSentAt > 2500) {
    if (sendFrame('typing', { receiverId: otherId, isTyping: true })) {
      typingSentAt = now;
      typingTo = otherId;
    }
  }
  clearTimeout(typingStopTimer);
  typingStopTimer = setTimeout(() => stopTyping(state.conversations.get(otherId)), 3000);
}

export function stopTyping(conv) {
  clearTimeout(typingStopTimer);
  if (typingTo && (!conv || conv.otherId === typingTo)) {
    sendFrame('typing', { receiverId: typingTo, isTyping: false });
    typingTo = null;
    typingSentAt = 0;
  }
}

function setTyping(conv, isTyping) {
  clearTimeout(conv.typingTimer);
  if (isTyping) {
    conv.typingTimer = setTimeout(() => setTyping(conv, false), TYPING_EXPIRES_MS);
  }
  if (conv.typing !== isTyping) {
    conv.typing = isTyping;
    emit('typing', conv.otherId);
  }
}

// ---------------------------------------------------------------------------------------------
// Server frames

function handleFrame(type, data) {
  switch (type) {
    case 'getOnlineUsers':
      onOnlineUsers(data);
      break;
    case 'newMessage':
      onNewMessage(data);
      break;
    case 'messageStatus':
      onMessageStatus(data);
      break;
    case 'typing':
      if (data && typeof data.senderId === 'string') setTyping(conversation(data.senderId), !!data.isTyping);
      break;
    case 'messagesRead':
      onMessagesRead(data);
      break;
    default:
      // `notification` repeats what `newMessage` said; `error` answers a bad frame.
      break;
  }
}

function onOnlineUsers(ids) {
  if (!Array.isArray(ids)) return;
  state.online = new Set(ids.filter((id) => typeof id === 'string'));
  if (state.usersLoaded && [...state.online].some((id) => id !== state.me?._id && !state.users.has(id))) {
    // Someone new signed up: they belong in the sidebar.
    reloadUsersSoon();
  }
  emit('presence');
}

function onNewMessage(message) {
  if (!message || typeof message._id !== 'string' || !state.me) return;
  const otherId = otherOf(message);
  const fromOther = message.senderId === otherId;
  const user = state.users.get(otherId);
  let isNew = true;
  if (user) {
    if (user.lastMessage && user.lastMessage.seq >= message.seq) {
      isNew = false;
    } else {
      user.lastMessage = message;
    }
  } else if (state.usersLoaded) {
    reloadUsersSoon();
  }
  const conv = state.conversations.get(otherId);
  if (conv) {
    if (conv.messages.has(message._id) || conv.unclaimed.has(message._id)) isNew = false;
    if (fromOther) setTyping(conv, false);
    if (conv.loaded || conv.loading) {
      if (conv.loaded && conv.newestSeq > 0 && message.seq > conv.newestSeq + 1) {
        // A gap: something was missed (a dropped frame); fetch the whole range.
        catchUp(conv).catch(() => {});
      } else {
        addMessages(conv, [message]);
      }
    } else {
      const pending = state.pendingById.get(message._id);
      if (pending) addMessages(conv, [message]);
    }
    emit('conversation', otherId);
  }
  if (fromOther && isNew) {
    const watching = state.activeId === otherId && isVisible() && conv?.loaded;
    if (watching) {
      markReadIfVisible();
    } else if (user) {
      user.unreadCount = (user.unreadCount || 0) + 1;
    }
    if (!watching) emit('incoming', { message, user });
  }
  emit('users');
}

function onMessageStatus(data) {
  if (!data || typeof data.messageId !== 'string') return;
  const pending = state.pendingById.get(data.messageId);
  if (!pending) {
    state.earlyStatuses.set(data.messageId, data.state);
    // Statuses of sends from another tab are never claimed: keep the map small.
    if (state.earlyStatuses.size > 200) {
      state.earlyStatuses.delete(state.earlyStatuses.keys().next().value);
    }
    return;
  }
  applyJobState(pending, data.state);
  emit('conversation', pending.otherId);
}

function onMessagesRead(data) {
  if (!data || typeof data.readerId !== 'string') return;
  if (data.readerId === state.me?._id) {
    // Read in another tab of mine: the sidebar's unread counts changed.
    reloadUsersSoon();
    return;
  }
  const conv = conversation(data.readerId);
  const upTo = Number(data.upToSeq) || 0;
  if (upTo > conv.seenUpTo) {
    conv.seenUpTo = upTo;
    writeSeen(data.readerId, upTo);
    emit('conversation', data.readerId);
  }
}

document.addEventListener('visibilitychange', () => {
  if (!isVisible() || !state.me) return;
  markReadIfVisible();
  if (Date.now() - usersLoadedAt > 30000) loadUsers().catch(() => {});
});
