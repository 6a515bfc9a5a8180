// The client's model of the chat: who I am, the people in the sidebar, each conversation's
// messages (keyed by `_id`, ordered by `seq`) and the messages I am still sending, presence and
// typing; plus the actions that change it and the handling of server frames. Views subscribe to
// topics with `on` and re-render; nothing here touches the DOM.
//
// Exactly-once display rests on two rules: every message is stored under its `_id` (an optimistic
// bubble is replaced when the message with the id from the 202 arrives, whichever comes first),
// and after every (re)connection the open conversation asks for `?after=<newest seq>`.

import { ApiError, api, get, post, put, setExpectedUser } from './api.js';
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
  /** My groups by id: `_id, name, description, profilePic, admin, members, unreadCount, lastMessage`. */
  groups: new Map(),
  groupsLoaded: false,
  /** Conversations by the other user's id, or `g:<groupId>` for a group. */
  conversations: new Map(),
  activeId: null,
  /** `connecting`, `open`, `waiting` or `offline`. */
  connection: 'connecting',
  retryAt: 0,
  /** Job states that arrived before the 202 that names their message. */
  earlyStatuses: new Map(),
  /** Pending sends by message id, for `messageStatus`. */
  pendingById: new Map(),
  /** The conversation (other user's id) of every message held, for edits, deletes, reactions. */
  messageHome: new Map(),
};

/** How long after sending a message can be edited (the server's default window). */
export const EDIT_WINDOW_MS = 15 * 60 * 1000;

let realtime = null;
let localSeq = 0;
let refreshTimer = null;
let usersLoadedAt = 0;

/** Profile changes (a new photo, a new person) are not pushed: the sidebar refreshes this often. */
const USERS_REFRESH_MS = 2 * 60 * 1000;

/** The conversation key of group `id` (user ids never start with `g:`). */
export function groupKey(id) {
  return `g:${id}`;
}

/** The group id of a conversation key, or null for a direct conversation. */
export function groupIdOf(key) {
  return typeof key === 'string' && key.startsWith('g:') ? key.slice(2) : null;
}

/** The API path of a conversation's messages, with `query` (`limit=50`, `after=12&limit=200`). */
function historyPath(conv, query) {
  const groupId = groupIdOf(conv.otherId);
  return groupId
    ? `/api/groups/${encodeURIComponent(groupId)}/messages?${query}`
    : `/api/messages/${encodeURIComponent(conv.otherId)}?${query}`;
}

function sendPath(key) {
  const groupId = groupIdOf(key);
  return groupId
    ? `/api/groups/${encodeURIComponent(groupId)}/messages`
    : `/api/messages/send/${encodeURIComponent(key)}`;
}

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
    /** The highest `changeSeq` held: edits, deletes and reactions after it are caught up. */
    changeSeq: 0,
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
 * A message as the client keeps it: group messages come with `senderId` populated
 * (`{_id, fullName, profilePic}`, as the MERN front end reads them); it becomes the plain id,
 * the object is kept as `sender`. Direct messages already carry the id.
 */
export function normalize(message) {
  if (!message || typeof message !== 'object') return message;
  let next = message;
  if (message.senderId && typeof message.senderId === 'object') {
    next = { ...message, sender: message.senderId, senderId: message.senderId._id };
  }
  return next;
}

/**
 * Adds messages by `_id` (duplicates are ignored); returns how many were new. A message of mine
 * that arrives while a send is still waiting for its 202 may be that very send: it is held back
 * until the 202 says which optimistic bubble it replaces, so it never shows twice, even briefly.
 */
function addMessages(conv, messages) {
  let added = 0;
  for (const raw of messages) {
    const message = normalize(raw);
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
    const held = conv.messages.get(message._id);
    if (held) {
      // The same message again (a catch-up after an edit, say): keep the newer copy.
      conv.changeSeq = Math.max(conv.changeSeq, Number(message.changeSeq) || 0);
      if (changedSince(held, message)) {
        message._v = (held._v || 0) + 1;
        conv.messages.set(message._id, message);
        conv.sortedCache = null;
      }
      continue;
    }
    conv.messages.set(message._id, message);
    state.messageHome.set(message._id, conv.otherId);
    conv.changeSeq = Math.max(conv.changeSeq, Number(message.changeSeq) || 0);
    conv.newestSeq = Math.max(conv.newestSeq, message.seq);
    conv.oldestSeq = Math.min(conv.oldestSeq, message.seq);
    added += 1;
  }
  if (added) conv.sortedCache = null;
  return added;
}

/** Whether `next` (a copy of `held` from the server) says something `held` does not. */
function changedSince(held, next) {
  return held.text !== next.text
    || !!held.isDeleted !== !!next.isDeleted
    || !!held.isEdited !== !!next.isEdited
    || reactionKey(held.reactions) !== reactionKey(next.reactions);
}

function reactionKey(reactions) {
  if (!Array.isArray(reactions)) return '';
  return reactions.map((reaction) => `${reaction.emoji}:${(reaction.users || []).join(',')}`).join('|');
}

/** Shows held-back messages once no send is waiting for its 202 (they came from another tab). */
function releaseUnclaimed(conv) {
  if (conv.unclaimed.size === 0 || hasUnansweredSend(conv)) return;
  const held = [...conv.unclaimed.values()];
  conv.unclaimed.clear();
  addMessages(conv, held);
}

/** The conversation key of a message: the group's, or the other user's id. */
function otherOf(message) {
  if (message.groupId) return groupKey(message.groupId);
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
  loadGroups().catch(() => {});
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
  state.groups = new Map();
  state.groupsLoaded = false;
  state.online = new Set();
  state.conversations = new Map();
  state.activeId = null;
  state.earlyStatuses = new Map();
  state.pendingById = new Map();
  state.messageHome = new Map();
  state.connection = 'connecting';
}

export function sendFrame(type, data) {
  return realtime ? realtime.send(type, data) : false;
}

/** After every (re)connection: refresh the sidebar and catch up the open conversation. */
async function sync() {
  const loads = [loadUsers().catch(() => {}), loadGroups().catch(() => {})];
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

let groupsLoad = null;
let groupsReloadTimer = null;

/** Loads my groups (with unread counts and last messages) for the sidebar. */
export function loadGroups() {
  if (groupsLoad) return groupsLoad;
  groupsLoad = (async () => {
    try {
      const list = await get('/api/groups');
      const groups = new Map();
      for (const group of Array.isArray(list) ? list : []) {
        if (group && typeof group._id === 'string') {
          groups.set(group._id, { ...group, lastMessage: normalize(group.lastMessage) });
        }
      }
      state.groups = groups;
      state.groupsLoaded = true;
      if (groupIdOf(state.activeId) && !groups.has(groupIdOf(state.activeId))) {
        // Removed from the open group (or it was deleted): it is no longer mine to show.
        emit('groupGone', state.activeId);
      }
      emit('users');
    } finally {
      groupsLoad = null;
    }
  })();
  return groupsLoad;
}

export function reloadGroupsSoon() {
  clearTimeout(groupsReloadTimer);
  groupsReloadTimer = setTimeout(() => loadGroups().catch(() => {}), 250);
}

/** A group's member (`{_id, fullName, profilePic}`) or the sidebar's user of that id. */
export function personOf(id, group = null, message = null) {
  if (id === state.me?._id) return state.me;
  const member = group?.members?.find((entry) => entry?._id === id);
  return member || (message?.sender?._id === id ? message.sender : null) || state.users.get(id) || null;
}

/** Reloads the sidebar soon (coalescing bursts), e.g. when someone new appears. */
function reloadUsersSoon() {
  clearTimeout(usersReloadTimer);
  usersReloadTimer = setTimeout(() => loadUsers().catch(() => {}), 250);
}

/**
 * People and groups for the sidebar, latest activity first (those never talked in by name):
 * `{kind: 'user' | 'group', key, entry}`.
 */
export function sortedChats() {
  const activity = (entry) => Date.parse(entry.lastMessage?.createdAt || entry.updatedAt || '') || 0;
  const chats = [
    ...[...state.users.values()].map((entry) => ({ kind: 'user', key: entry._id, entry, name: entry.fullName })),
    ...[...state.groups.values()].map((entry) => ({ kind: 'group', key: groupKey(entry._id), entry, name: entry.name })),
  ];
  const talked = (chat) => (chat.kind === 'group' || chat.entry.lastMessage ? activity(chat.entry) : 0);
  return chats.sort((a, b) => talked(b) - talked(a)
    || String(a.name).localeCompare(String(b.name), undefined, { sensitivity: 'base' }));
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
  for (const group of state.groups.values()) total += group.unreadCount || 0;
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
      const messages = await get(historyPath(conv, `limit=${PAGE}`));
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
    const messages = await get(historyPath(conv, `before=${conv.oldestSeq}&limit=${PAGE}`));
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
    const messages = await get(historyPath(conv, `after=${conv.newestSeq}&limit=${CATCH_UP_PAGE}`));
    added += addMessages(conv, messages);
    if (messages.length < CATCH_UP_PAGE) break;
  }
  // Edits, deletes and reactions made while away: what changed after the newest change held.
  if (conv.changeSeq > 0) {
    for (;;) {
      const from = conv.changeSeq;
      const changed = await get(historyPath(conv, `updatedAfter=${from}&limit=${CATCH_UP_PAGE}`));
      added += addMessages(conv, Array.isArray(changed) ? changed : []);
      if (!Array.isArray(changed) || changed.length < CATCH_UP_PAGE || conv.changeSeq <= from) break;
    }
  }
  conv.stale = false;
  if (added) {
    const last = sortedMessages(conv).at(-1);
    const user = chatEntry(conv.otherId);
    if (user && last && (!user.lastMessage || user.lastMessage.seq < last.seq)) {
      user.lastMessage = last;
      emit('users');
    }
  }
  emit('conversation', conv.otherId);
  return added;
}

/** The sidebar entry of a conversation key: a user or a group. */
export function chatEntry(key) {
  const groupId = groupIdOf(key);
  return groupId ? state.groups.get(groupId) : state.users.get(key);
}

/** Tells the server (and so the other person) what I have read, when I can actually see it. */
export function markReadIfVisible() {
  const otherId = state.activeId;
  if (!otherId || !isVisible()) return;
  const conv = state.conversations.get(otherId);
  if (!conv || !conv.loaded) return;
  const groupId = groupIdOf(otherId);
  if (groupId) {
    const group = state.groups.get(groupId);
    const newestFromOthers = [...sortedMessages(conv)].reverse().find((message) => message.senderId !== state.me?._id);
    const newest = newestFromOthers ? newestFromOthers.seq : 0;
    if (!(group?.unreadCount > 0) && newest <= conv.lastMarked) return;
    conv.lastMarked = Math.max(conv.lastMarked, newest);
    put(`/api/groups/${encodeURIComponent(groupId)}/messages/seen`, {}).catch(() => {});
    if (group && group.unreadCount) {
      group.unreadCount = 0;
      emit('users');
    }
    return;
  }
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

/**
 * Starts sending `{text, image, replyTo, file}` to `otherId`, shown at once. `image` is a data
 * URL; `replyTo` a message of this conversation; `file` an uploaded file
 * (`{url, filename, size, type, mimeType}` as `POST /api/files/upload` answers).
 */
export function sendMessage(otherId, { text, image, replyTo, file }) {
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
    replyTo: replyTo ? quoteOf(replyTo) : null,
    ...(file ? fileFields(file) : {}),
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
    if (pending.replyTo) body.replyTo = pending.replyTo._id;
    if (pending.fileUrl) {
      for (const key of ['fileUrl', 'fileName', 'fileSize', 'fileType', 'mimeType']) body[key] = pending[key];
    }
    const accepted = await post(sendPath(conv.otherId), body);
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

/** A reply's quote, as the server shows it in `replyTo`. */
function quoteOf(message) {
  const sender = message.senderId === state.me?._id ? state.me : state.users.get(message.senderId);
  return {
    _id: message._id,
    text: message.isDeleted ? '' : message.text || '',
    image: message.isDeleted ? '' : message.image || '',
    senderId: { _id: message.senderId, fullName: sender?.fullName || '' },
  };
}

/** A send's attachment fields from an upload's answer. */
function fileFields(file) {
  return {
    fileUrl: file.url,
    fileName: file.filename,
    fileSize: file.size,
    fileType: file.type,
    mimeType: file.mimeType,
  };
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
  if (groupIdOf(otherId)) return; // typing is shown in direct conversations only
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
    case 'newGroupMessage':
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
    case 'messageEdited':
      patchMessage(data?.messageId, (message) => ({
        ...message,
        text: typeof data.text === 'string' ? data.text : message.text,
        isEdited: true,
        editHistory: Array.isArray(data.editHistory) ? data.editHistory : message.editHistory,
      }));
      break;
    case 'messageDeleted':
      patchMessage(data?.messageId, (message) => ({
        ...message,
        text: '',
        image: '',
        fileUrl: '',
        isDeleted: true,
        deletedAt: data.deletedAt || new Date().toISOString(),
      }));
      break;
    case 'message_reaction_update':
      patchMessage(data?.messageId, (message) => withReaction(message, data.reaction, data.userId, !!data.isAdd));
      break;
    default:
      // Group membership and settings events (`groupUpdated`, `groupRemoved`, ...): the
      // sidebar's groups are reloaded. `notification` repeats what `newMessage` said; `error`
      // answers a bad frame.
      if (/^group/i.test(type)) reloadGroupsSoon();
      break;
  }
}

// ---------------------------------------------------------------------------------------------
// Edits, deletes, reactions

/** The held message `id` and its conversation, or null. */
export function findMessage(id) {
  const otherId = state.messageHome.get(id);
  const conv = otherId !== undefined ? state.conversations.get(otherId) : null;
  const message = conv?.messages.get(id);
  return message ? { conv, message } : null;
}

/** Replaces the held message `id` with `change(message)` and re-renders it. */
function patchMessage(id, change) {
  if (typeof id !== 'string') return;
  const found = findMessage(id);
  if (found) {
    const next = change(found.message);
    next._v = (found.message._v || 0) + 1;
    found.conv.messages.set(id, next);
    found.conv.sortedCache = null;
    emit('conversation', found.conv.otherId);
  }
  // A quote of it elsewhere, and the sidebar's last message, follow.
  for (const user of state.users.values()) {
    if (user.lastMessage?._id === id) {
      user.lastMessage = change(user.lastMessage);
      emit('users');
    }
  }
  for (const conv of state.conversations.values()) {
    let touched = false;
    for (const [key, message] of conv.messages) {
      if (message.replyTo?._id !== id) continue;
      const original = change({ ...message.replyTo, senderId: message.replyTo.senderId?._id });
      conv.messages.set(key, {
        ...message,
        _v: (message._v || 0) + 1,
        replyTo: { ...message.replyTo, text: original.text, image: original.image, isDeleted: !!original.isDeleted },
      });
      touched = true;
    }
    if (touched) {
      conv.sortedCache = null;
      emit('conversation', conv.otherId);
    }
  }
}

/** `message` with `userId`'s `emoji` added or taken away. */
function withReaction(message, emoji, userId, isAdd) {
  if (typeof emoji !== 'string' || typeof userId !== 'string') return message;
  const reactions = (Array.isArray(message.reactions) ? message.reactions : []).map((reaction) => ({
    ...reaction,
    users: [...(reaction.users || [])],
  }));
  let entry = reactions.find((reaction) => reaction.emoji === emoji);
  if (isAdd) {
    if (!entry) {
      entry = { emoji, users: [], count: 0 };
      reactions.push(entry);
    }
    if (!entry.users.includes(userId)) entry.users.push(userId);
  } else if (entry) {
    entry.users = entry.users.filter((user) => user !== userId);
  }
  for (const reaction of reactions) reaction.count = reaction.users.length;
  return { ...message, reactions: reactions.filter((reaction) => reaction.count > 0) };
}

/** Whether I may still edit `message` (mine, text, not deleted, inside the window). */
export function canEdit(message) {
  if (!message || message.senderId !== state.me?._id || message.isDeleted || !message.text) return false;
  const sent = Date.parse(message.createdAt) || 0;
  return Date.now() - sent < EDIT_WINDOW_MS;
}

/** Changes the text of my message `id`; the event updates every tab. */
export async function editMessage(id, text) {
  const updated = await put(`/api/messages/edit/${encodeURIComponent(id)}`, { text });
  patchMessage(id, (message) => ({
    ...message,
    text: updated?.text ?? text,
    isEdited: true,
    editHistory: updated?.editHistory ?? message.editHistory,
  }));
  return updated;
}

/** Deletes my message `id` for everyone. */
export async function deleteMessage(id) {
  const answer = await api('DELETE', `/api/messages/${encodeURIComponent(id)}`);
  patchMessage(id, (message) => ({
    ...message,
    text: '',
    image: '',
    fileUrl: '',
    isDeleted: true,
    deletedAt: answer?.deletedAt || new Date().toISOString(),
  }));
}

/** Adds my `emoji` to message `id`, or takes it back if it is there. */
export async function toggleReaction(id, emoji) {
  const found = findMessage(id);
  const me = state.me?._id;
  const mine = !!found?.message.reactions?.some((reaction) => reaction.emoji === emoji && reaction.users?.includes(me));
  await api(mine ? 'DELETE' : 'POST', `/api/messages/reaction/${encodeURIComponent(id)}`, { reaction: emoji });
  patchMessage(id, (message) => withReaction(message, emoji, me, !mine));
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

function onNewMessage(raw) {
  const message = normalize(raw);
  if (!message || typeof message._id !== 'string' || !state.me) return;
  const otherId = otherOf(message);
  const isGroup = !!message.groupId;
  const fromOther = isGroup ? message.senderId !== state.me._id && !message.isSystemMessage : message.senderId === otherId;
  const user = chatEntry(otherId);
  if (isGroup && (message.isSystemMessage || !user)) {
    // Membership changed (or a group I was just added to): the sidebar's groups are stale.
    reloadGroupsSoon();
  }
  let isNew = true;
  if (user) {
    if (user.lastMessage && user.lastMessage.seq >= message.seq) {
      isNew = false;
    } else {
      user.lastMessage = message;
    }
  } else if (!isGroup && state.usersLoaded) {
    reloadUsersSoon();
  }
  const conv = state.conversations.get(otherId);
  if (conv) {
    if (conv.messages.has(message._id) || conv.unclaimed.has(message._id)) isNew = false;
    if (fromOther && !isGroup) setTyping(conv, false);
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

// ---------------------------------------------------------------------------------------------
// Groups

/** Creates a group with me as admin; resolves to the group. */
export async function createGroup({ name, description, members }) {
  const group = await post('/api/groups', { name, description, members });
  if (group && typeof group._id === 'string') {
    state.groups.set(group._id, { unreadCount: 0, lastMessage: null, ...group });
    emit('users');
  }
  reloadGroupsSoon();
  return group;
}

/** Runs a change to group `id` and keeps the answer (the updated group) in the sidebar. */
async function changeGroup(id, request) {
  const answer = await request;
  const group = answer?.group || answer;
  if (group && group._id === id) {
    const known = state.groups.get(id);
    // A route's answer has no unread count or last message of its own: keep the sidebar's.
    state.groups.set(id, {
      ...known,
      ...group,
      unreadCount: known?.unreadCount ?? 0,
      lastMessage: known?.lastMessage ?? null,
    });
    emit('users');
  }
  reloadGroupsSoon();
  return group;
}

export const updateGroup = (id, change) => changeGroup(id, put(`/api/groups/${encodeURIComponent(id)}`, change));
export const addMember = (id, userId) => changeGroup(id, post(`/api/groups/${encodeURIComponent(id)}/members`, { userId }));
export const removeMember = (id, userId) => changeGroup(id, api('DELETE', `/api/groups/${encodeURIComponent(id)}/members`, { userId }));
export const transferAdmin = (id, newAdminId) => changeGroup(id, put(`/api/groups/${encodeURIComponent(id)}/admin`, { newAdminId }));

/** Leaves group `id` (as any member may); it leaves the sidebar at once. */
export async function leaveGroup(id) {
  await api('DELETE', `/api/groups/${encodeURIComponent(id)}/members`, { userId: state.me._id });
  state.groups.delete(id);
  state.conversations.delete(groupKey(id));
  emit('users');
  reloadGroupsSoon();
}

/** Groups I could join, by name. */
export const searchMessages = (params) => get(`/api/messages/search?${new URLSearchParams(params)}`);

/** Loads older pages of `conv` until it holds message `id`; whether it does. */
export async function loadUntil(conv, id, maxPages = 100) {
  if (!conv.loaded) await loadLatest(conv);
  for (let page = 0; page < maxPages && !conv.messages.has(id) && conv.hasMore; page += 1) {
    if (conv.loadingOlder) await new Promise((resolve) => setTimeout(resolve, 50));
    else if ((await loadOlder(conv)) === 0 && !conv.hasMore) break;
  }
  return conv.messages.has(id);
}

export const searchGroups = (query) => get(`/api/groups/search?q=${encodeURIComponent(query)}`);

export async function joinGroup(id) {
  const group = await changeGroup(id, post(`/api/groups/${encodeURIComponent(id)}/join`, {}));
  await loadGroups().catch(() => {});
  return group;
}
