// The conversation pane: header (who, presence, typing), the history (day separators, grouped
// bubbles, text and images, per-message status, "Seen"), older pages on scrolling up, and the
// composer (Enter sends, Shift+Enter is a newline; images by button, paste or drop, previewed
// and downscaled before sending). Every piece of user data is set with textContent or as an
// attribute value: nothing is ever parsed as HTML, so links and markup show as text.

import { ApiError, api } from './api.js';
import { avatar, fillAvatar } from './avatar.js';
import { h, icon, reconcile, safeUrl, toast } from './dom.js';
import { clockTime, dayKey, dayLabel, displayName, exactTime } from './format.js';
import { ImageProblem, prepareImage } from './images.js';
import {
  discard, loadLatest, loadOlder, markReadIfVisible, noteTyping, on, retry, sendMessage, sortedMessages,
  state, stopTyping,
} from './state.js';

const MAX_TEXT = 10000;
const GROUP_GAP_MS = 5 * 60 * 1000;
const STICK_PX = 80;

const STATUS = {
  sending: { icon: 'clock', label: 'Sending' },
  queued: { icon: 'clock', label: 'Queued' },
  retrying: { icon: 'clock', label: 'Retrying' },
  delivered: { icon: 'check', label: 'Delivered' },
  seen: { icon: 'checks', label: 'Seen' },
  failed: { icon: 'alert', label: 'Not delivered' },
};

/** Only emoji (at most three): shown large, as in every chat app people like. */
function isJumboEmoji(text) {
  const trimmed = text.trim();
  if (!trimmed || trimmed.length > 32) return false;
  const pictographs = trimmed.match(/\p{Extended_Pictographic}/gu) || [];
  if (pictographs.length === 0 || pictographs.length > 3) return false;
  const rest = trimmed.replace(/[\p{Extended_Pictographic}\u200d\ufe0f\u{1F3FB}-\u{1F3FF}\s]/gu, '');
  return rest === '';
}

let lightbox = null;

/**
 * Shows an image full size in a modal dialog (Escape or a click closes it). `scroller` keeps its
 * position: the dialog gives focus back to the photo's button on closing, which would otherwise
 * scroll the history to it.
 */
function openLightbox(src, label, scroller) {
  if (!lightbox) {
    const image = h('img', { class: 'lightbox-img', alt: '' });
    const close = h('button', { class: 'icon-btn lightbox-close', type: 'button', 'aria-label': 'Close' }, icon('x'));
    lightbox = h('dialog', { class: 'lightbox', 'aria-label': 'Photo', 'data-testid': 'lightbox' }, close, image);
    lightbox._image = image;
    lightbox.addEventListener('click', () => lightbox.close());
    lightbox.addEventListener('close', () => {
      const saved = lightbox._saved;
      if (!saved) return;
      saved.scroller.scrollTop = saved.top;
      requestAnimationFrame(() => {
        saved.scroller.scrollTop = saved.top;
      });
    });
    document.body.appendChild(lightbox);
  }
  lightbox._saved = scroller ? { scroller, top: scroller.scrollTop } : null;
  lightbox._image.src = src;
  lightbox._image.alt = label || 'Photo';
  lightbox.showModal();
}

export function conversationView({ navigate }) {
  const drafts = new Map();
  let current = null; // the other user's id shown now
  let attachment = null; // {dataUrl, width, height, bytes}
  let stick = true;
  let prepending = false;
  let unseenBelow = false;
  let unreadAtOpen = 0;
  let unreadMarkerSeq = null;

  // --- header
  const backButton = h('button', {
    class: 'icon-btn back-btn',
    type: 'button',
    'aria-label': 'Back to conversations',
    'data-testid': 'back',
    onclick: () => navigate('/'),
  }, icon('back'));
  const headAvatar = avatar(null, { size: 'md', presence: false });
  const headName = h('h2', { class: 'chat-name', 'data-testid': 'chat-name' });
  const headStatus = h('p', { class: 'chat-status', 'data-testid': 'chat-status' });
  // Block or unblock the person: they can no longer message you or see you online.
  const blockButton = h('button', {
    class: 'btn btn-ghost block-btn',
    type: 'button',
    'data-testid': 'block-toggle',
    onclick: async () => {
      const user = state.users.get(current);
      if (!user) return;
      const blocking = !user.isBlocked;
      blockButton.disabled = true;
      try {
        await api(blocking ? 'POST' : 'DELETE', `/api/users/${encodeURIComponent(current)}/block`);
        user.isBlocked = blocking;
        toast(blocking
          ? `${displayName(user)} is blocked: they can no longer message you or see when you are online`
          : `${displayName(user)} is unblocked`);
        renderHeader();
      } catch (error) {
        toast(error instanceof ApiError ? error.message : 'That did not work. Try again.', 'error');
      } finally {
        blockButton.disabled = false;
      }
    },
  });
  const header = h('header', { class: 'chat-head' }, backButton, headAvatar, h('div', { class: 'who' }, headName, headStatus), blockButton);

  // --- history
  const historyTop = h('div', { class: 'history-top' });
  const list = h('ol', { class: 'message-list', 'data-testid': 'message-list' });
  const typingAvatar = avatar(null, { size: 'sm' });
  const typingRow = h('div', { class: 'typing-row', hidden: true, 'data-testid': 'typing' },
    typingAvatar,
    h('div', { class: 'typing-bubble', role: 'img', 'aria-label': 'typing' }, h('span'), h('span'), h('span')));
  const content = h('div', { class: 'history-content' }, historyTop, list, typingRow);
  const scroller = h('div', {
    class: 'history',
    role: 'log',
    'aria-live': 'polite',
    'aria-relevant': 'additions',
    'aria-label': 'Messages',
    tabindex: '0',
    'data-testid': 'history',
  }, content);
  const jump = h('button', {
    class: 'jump',
    type: 'button',
    hidden: true,
    'aria-label': 'Jump to the latest message',
    'data-testid': 'jump-latest',
    onclick: () => scrollToBottom(true),
  }, icon('arrowDown'), h('span', { class: 'jump-text', text: 'New messages' }));

  // --- composer
  const fileInput = h('input', {
    type: 'file',
    accept: 'image/png,image/jpeg,image/gif,image/webp',
    class: 'visually-hidden',
    tabindex: '-1',
    'data-testid': 'image-input',
  });
  const attachButton = h('button', {
    class: 'icon-btn attach-btn',
    type: 'button',
    'aria-label': 'Attach a photo',
    title: 'Attach a photo',
    'data-testid': 'attach',
    onclick: () => fileInput.click(),
  }, icon('image'));
  const textarea = h('textarea', {
    class: 'composer-input',
    rows: '1',
    placeholder: 'Write a message…',
    'aria-label': 'Message',
    maxlength: String(MAX_TEXT),
    'data-testid': 'composer',
  });
  const sendButton = h('button', {
    class: 'send-btn',
    type: 'submit',
    'aria-label': 'Send',
    title: 'Send (Enter)',
    disabled: true,
    'data-testid': 'send',
  }, icon('send'));
  const previewImage = h('img', { class: 'preview-img', alt: 'Photo to send' });
  const previewInfo = h('span', { class: 'preview-info' });
  const preview = h('div', { class: 'attachment', hidden: true, 'data-testid': 'attachment-preview' },
    h('div', { class: 'preview-thumb' }, previewImage,
      h('button', {
        class: 'icon-btn small preview-remove',
        type: 'button',
        'aria-label': 'Remove photo',
        'data-testid': 'remove-attachment',
        onclick: () => setAttachment(null),
      }, icon('x'))),
    previewInfo);
  const counter = h('span', { class: 'counter', hidden: true, 'aria-live': 'polite' });
  const composer = h('form', { class: 'composer', 'aria-label': 'Send a message' },
    preview,
    h('div', { class: 'composer-row' }, attachButton, h('div', { class: 'input-shell' }, textarea, counter), sendButton),
    fileInput);

  const chat = h('div', { class: 'chat', hidden: true }, header, h('div', { class: 'history-wrap' }, scroller, jump), composer);
  const placeholder = h('div', { class: 'chat-empty', 'data-testid': 'no-conversation' },
    h('div', { class: 'empty-art' }, h('span', { class: 'logo logo-lg' }, icon('chat', 'icon logo-icon'))),
    h('h2', { text: 'Your messages' }),
    h('p', { class: 'muted', text: 'Pick someone on the left to start a conversation. Messages arrive in real time.' }));
  const dropHint = h('div', { class: 'drop-hint', hidden: true }, icon('image', 'icon drop-icon'), h('span', { text: 'Drop the photo to attach it' }));
  const element = h('section', { class: 'chat-pane', 'aria-label': 'Conversation', 'data-testid': 'conversation' }, placeholder, chat, dropHint);

  // --- behaviour: composer

  function canSend() {
    const text = textarea.value;
    return (text.trim() !== '' || attachment !== null) && text.length <= MAX_TEXT;
  }

  function refreshComposer() {
    sendButton.disabled = !canSend();
    textarea.style.height = 'auto';
    textarea.style.height = `${Math.min(textarea.scrollHeight, 168)}px`;
    const length = textarea.value.length;
    counter.hidden = length < MAX_TEXT - 1000;
    counter.textContent = `${length.toLocaleString()} / ${MAX_TEXT.toLocaleString()}`;
    counter.classList.toggle('over', length > MAX_TEXT);
  }

  function setAttachment(prepared) {
    attachment = prepared;
    preview.hidden = !prepared;
    if (prepared) {
      previewImage.src = prepared.dataUrl;
      const kilobytes = Math.max(1, Math.round(prepared.bytes / 1024));
      previewInfo.textContent = `${prepared.width}×${prepared.height} · ${kilobytes >= 1024 ? `${(kilobytes / 1024).toFixed(1)} MB` : `${kilobytes} KB`}`;
    } else {
      previewImage.removeAttribute('src');
      previewInfo.textContent = '';
    }
    refreshComposer();
  }

  async function attach(file) {
    if (!file) return;
    attachButton.disabled = true;
    try {
      setAttachment(await prepareImage(file));
      textarea.focus();
    } catch (error) {
      toast(error instanceof ImageProblem ? error.message : 'That image could not be attached.', 'error');
    } finally {
      attachButton.disabled = false;
    }
  }

  fileInput.addEventListener('change', () => {
    const file = fileInput.files?.[0];
    fileInput.value = '';
    attach(file);
  });
  textarea.addEventListener('paste', (event) => {
    const file = [...(event.clipboardData?.files || [])].find((item) => item.type.startsWith('image/'));
    if (file) {
      event.preventDefault();
      attach(file);
    }
  });
  let dragDepth = 0;
  element.addEventListener('dragenter', (event) => {
    if (!current || !event.dataTransfer?.types.includes('Files')) return;
    dragDepth += 1;
    dropHint.hidden = false;
  });
  element.addEventListener('dragleave', () => {
    dragDepth = Math.max(0, dragDepth - 1);
    if (dragDepth === 0) dropHint.hidden = true;
  });
  element.addEventListener('dragover', (event) => {
    if (current && event.dataTransfer?.types.includes('Files')) event.preventDefault();
  });
  element.addEventListener('drop', (event) => {
    dragDepth = 0;
    dropHint.hidden = true;
    if (!current) return;
    const file = [...(event.dataTransfer?.files || [])].find((item) => item.type.startsWith('image/'));
    if (file) {
      event.preventDefault();
      attach(file);
    }
  });

  textarea.addEventListener('input', () => {
    refreshComposer();
    if (current) noteTyping(current, textarea.value.trim() !== '');
  });
  textarea.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
      event.preventDefault();
      composer.requestSubmit();
    }
  });
  textarea.addEventListener('blur', () => {
    if (current) stopTyping(state.conversations.get(current));
  });
  composer.addEventListener('submit', (event) => {
    event.preventDefault();
    if (!current || !canSend()) return;
    const text = textarea.value.replace(/^\s*\n|\s+$/g, '');
    sendMessage(current, { text, image: attachment ? attachment.dataUrl : '' });
    textarea.value = '';
    drafts.delete(current);
    setAttachment(null);
    stopTyping(state.conversations.get(current));
    textarea.focus();
  });

  // --- behaviour: history

  function distanceFromBottom() {
    return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight;
  }

  function scrollToBottom(smooth = false) {
    stick = true;
    unseenBelow = false;
    jump.hidden = true;
    if (smooth && typeof scroller.scrollTo === 'function') {
      scroller.scrollTo({ top: scroller.scrollHeight, behavior: 'smooth' });
    } else {
      scroller.scrollTop = scroller.scrollHeight;
    }
  }

  function updateJump() {
    const far = distanceFromBottom() > 400;
    jump.hidden = stick || (!far && !unseenBelow);
    jump.classList.toggle('has-new', unseenBelow);
  }

  scroller.addEventListener('scroll', () => {
    stick = distanceFromBottom() < STICK_PX;
    if (stick) unseenBelow = false;
    updateJump();
    if (scroller.scrollTop < 200) fetchOlder();
  }, { passive: true });

  // Images load after they are laid out, and the typing row comes and goes: keep the bottom in
  // view while the reader is there.
  const keepBottom = new ResizeObserver(() => {
    if (stick) scroller.scrollTop = scroller.scrollHeight;
  });
  keepBottom.observe(content);
  keepBottom.observe(scroller);

  async function fetchOlder() {
    const conv = current && state.conversations.get(current);
    if (!conv || !conv.loaded || !conv.hasMore || conv.loadingOlder) return;
    prepending = true;
    try {
      await loadOlder(conv);
    } catch (error) {
      toast(error.message || 'Could not load earlier messages.', 'error');
    } finally {
      prepending = false;
    }
    // A short history may not fill the pane, so no scroll event would ever ask again.
    if (conv === state.conversations.get(current) && conv.hasMore && scroller.scrollHeight <= scroller.clientHeight + 200) {
      fetchOlder();
    }
  }

  function statusOf(message, conv, pending) {
    if (pending) return message.status;
    return message.seq <= conv.seenUpTo ? 'seen' : 'delivered';
  }

  function buildItems(conv) {
    const me = state.me?._id;
    const entries = [];
    for (const message of sortedMessages(conv)) {
      const mine = message.senderId === me;
      entries.push({
        key: conv.keyOf.get(message._id) || `m-${message._id}`,
        message,
        mine,
        pending: false,
        status: mine ? statusOf(message, conv, false) : null,
      });
    }
    const pendings = [...conv.pending.values()].sort((a, b) => a.createdAt.localeCompare(b.createdAt));
    for (const message of pendings) {
      entries.push({ key: message.key, message, mine: true, pending: true, status: message.status });
    }
    // "Seen" goes under my latest read message, unless the other person wrote after it.
    let seenIndex = -1;
    for (let index = entries.length - 1; index >= 0; index -= 1) {
      const entry = entries[index];
      if (!entry.mine) break;
      if (entry.status === 'seen') {
        seenIndex = index;
        break;
      }
    }
    // The "New messages" line: before the first message that was unread when the conversation
    // opened (decided once, when the history has arrived).
    if (unreadAtOpen > 0 && unreadMarkerSeq === null && conv.loaded) {
      const fromOther = entries.filter((entry) => !entry.mine && !entry.pending);
      const first = fromOther[Math.max(0, fromOther.length - unreadAtOpen)];
      unreadMarkerSeq = first ? first.message.seq : 0;
    }
    const items = [];
    let previous = null;
    entries.forEach((entry, index) => {
      const time = Date.parse(entry.message.createdAt) || Date.now();
      const day = dayKey(time);
      const newDay = !previous || previous.day !== day;
      if (newDay) items.push({ key: `day-${day}`, create: () => daySeparator(time), update: (el) => updateDay(el, time) });
      if (unreadMarkerSeq && !entry.pending && entry.message.seq === unreadMarkerSeq) {
        items.push({ key: 'unread-marker', create: unreadMarker });
      }
      const next = entries[index + 1];
      const nextTime = next ? Date.parse(next.message.createdAt) || Date.now() : 0;
      entry.first = newDay || previous.mine !== entry.mine || time - previous.time > GROUP_GAP_MS;
      entry.last = !next || next.mine !== entry.mine || dayKey(nextTime) !== day || nextTime - time > GROUP_GAP_MS;
      entry.showSeen = index === seenIndex;
      entry.time = time;
      entry.day = day;
      items.push({ key: entry.key, create: () => createMessage(entry), update: (el) => updateMessage(el, entry) });
      previous = entry;
    });
    return items;
  }

  function unreadMarker() {
    return h('li', { class: 'unread-marker', role: 'separator', 'data-testid': 'unread-marker' },
      h('span', { text: 'New messages' }));
  }

  function daySeparator(time) {
    const label = h('span', { class: 'day-label' });
    const element = h('li', { class: 'day', role: 'separator', 'data-testid': 'day-separator' }, label);
    element._label = label;
    updateDay(element, time);
    return element;
  }

  function updateDay(element, time) {
    const text = dayLabel(time);
    if (element._label.textContent !== text) element._label.textContent = text;
  }

  function createMessage(entry) {
    const { message } = entry;
    const bubble = h('div', { class: 'bubble' });
    const imageUrl = safeUrl(message.image);
    if (imageUrl) {
      const image = h('img', { class: 'msg-image', src: imageUrl, alt: 'Photo', loading: 'lazy', decoding: 'async', 'data-testid': 'message-image' });
      image.addEventListener('error', () => bubble.classList.add('image-broken'));
      bubble.appendChild(h('button', {
        class: 'image-btn',
        type: 'button',
        'aria-label': 'Open photo',
        onclick: () => openLightbox(image.currentSrc || image.src, 'Photo', scroller),
      }, image));
      bubble.classList.add('has-image');
    }
    const text = message.text || '';
    if (text) {
      bubble.appendChild(h('p', { class: 'msg-text', text, 'data-testid': 'message-text' }));
      if (!imageUrl && isJumboEmoji(text)) bubble.classList.add('jumbo');
    } else {
      bubble.classList.add('image-only');
    }
    const time = h('time', { class: 'msg-time', dateTime: message.createdAt, title: exactTime(message.createdAt), text: clockTime(message.createdAt) });
    const statusIcon = h('span', { class: 'msg-status' });
    const meta = h('span', { class: 'meta' }, time, statusIcon);
    bubble.appendChild(meta);
    const footer = h('div', { class: 'msg-footer' });
    const element = h('li', { class: 'msg', 'data-testid': 'message' },
      h('div', { class: 'msg-row' }, bubble), footer);
    element._parts = { statusIcon, footer, bubble };
    updateMessage(element, entry);
    return element;
  }

  function updateMessage(element, entry) {
    const { statusIcon, footer } = element._parts;
    const { message } = entry;
    element.className = [
      'msg',
      entry.mine ? 'mine' : 'theirs',
      entry.first ? 'first' : '',
      entry.last ? 'last' : '',
      entry.pending ? 'pending' : '',
      entry.status === 'failed' ? 'failed' : '',
    ].filter(Boolean).join(' ');
    if (entry.pending) {
      delete element.dataset.id;
      element.dataset.localId = message.localId;
    } else {
      element.dataset.id = message._id;
      element.dataset.seq = String(message.seq);
      delete element.dataset.localId;
    }
    const status = entry.status || '';
    if (element.dataset.status !== status) {
      element.dataset.status = status;
      if (status) {
        const info = STATUS[status];
        statusIcon.replaceChildren(icon(info.icon, `icon status-${status}`));
        statusIcon.setAttribute('aria-label', info.label);
        statusIcon.setAttribute('role', 'img');
        statusIcon.title = info.label;
      } else {
        statusIcon.replaceChildren();
        statusIcon.removeAttribute('aria-label');
        statusIcon.removeAttribute('role');
      }
    }
    const footerKey = status === 'failed' ? `failed:${message.error || ''}` : entry.showSeen ? 'seen' : '';
    if (footer.dataset.state !== footerKey) {
      footer.dataset.state = footerKey;
      if (status === 'failed') {
        footer.replaceChildren(
          h('span', { class: 'failed-text', text: message.error || 'Not delivered.' }),
          h('button', {
            class: 'link-btn',
            type: 'button',
            'data-testid': 'retry',
            onclick: () => retry(message.otherId, message.localId),
          }, icon('retry'), 'Retry'),
          h('button', {
            class: 'link-btn subtle',
            type: 'button',
            'data-testid': 'discard',
            onclick: () => discard(message.otherId, message.localId),
          }, 'Delete'));
      } else if (entry.showSeen) {
        footer.replaceChildren(h('span', { class: 'seen', 'data-testid': 'seen', text: 'Seen' }));
      } else {
        footer.replaceChildren();
      }
    }
  }

  function renderTop(conv) {
    let state_ = 'idle';
    if (!conv.loaded && conv.loadError) state_ = 'error';
    else if (!conv.loaded || conv.loadingOlder) state_ = 'loading';
    else if (!conv.hasMore) state_ = 'start';
    const user = state.users.get(conv.otherId);
    const signature = `${state_}|${user?.fullName}|${user?.profilePic}|${conv.loadError}`;
    if (historyTop.dataset.signature === signature) return;
    historyTop.dataset.signature = signature;
    historyTop.className = `history-top ${state_}`;
    if (state_ === 'loading') {
      historyTop.replaceChildren(h('span', { class: 'spinner dark', 'aria-hidden': 'true' }), h('span', { class: 'muted small', text: conv.loaded ? 'Loading earlier messages…' : 'Loading messages…' }));
    } else if (state_ === 'error') {
      historyTop.replaceChildren(
        h('p', { class: 'muted', text: conv.loadError }),
        h('button', { class: 'btn btn-secondary btn-small', type: 'button', onclick: () => loadLatest(conv).catch(() => {}) }, 'Try again'));
    } else if (state_ === 'start') {
      historyTop.replaceChildren(h('div', { class: 'intro', 'data-testid': 'conversation-start' },
        avatar(user, { size: 'lg' }),
        h('div', { class: 'intro-name', text: user?.fullName || '' }),
        h('p', { class: 'muted small', text: `This is the beginning of your conversation with ${user?.fullName || 'them'}.` })));
    } else {
      historyTop.replaceChildren();
    }
  }

  function renderHeader() {
    const user = state.users.get(current);
    const conv = state.conversations.get(current);
    const online = state.online.has(current);
    fillAvatar(headAvatar, user || { _id: current, fullName: '' }, online);
    headName.textContent = displayName(user);
    blockButton.hidden = !user;
    blockButton.textContent = user?.isBlocked ? 'Unblock' : 'Block';
    const typing = !!conv?.typing;
    const connected = state.connection === 'open';
    const waiting = state.connection === 'offline' ? 'Waiting for network…' : 'Connecting…';
    headStatus.textContent = !connected ? waiting : typing ? 'typing…' : online ? 'Online' : 'Offline';
    headStatus.className = `chat-status ${!connected ? '' : typing ? 'typing' : online ? 'online' : ''}`;
    chat.setAttribute('aria-label', user ? `Conversation with ${displayName(user)}` : 'Conversation');
    textarea.placeholder = user ? `Message ${user.fullName.split(/\s+/)[0]}` : 'Write a message…';
  }

  function renderTyping() {
    const conv = state.conversations.get(current);
    const typing = !!conv?.typing;
    if (typing) fillAvatar(typingAvatar, state.users.get(current));
    typingRow.hidden = !typing;
    renderHeader();
  }

  function renderMessages({ toBottom = false } = {}) {
    const conv = state.conversations.get(current);
    if (!conv) return;
    const fromBottom = scroller.scrollHeight - scroller.scrollTop;
    const wasStuck = stick;
    const before = list.lastElementChild?.dataset.key;
    reconcile(list, buildItems(conv));
    renderTop(conv);
    if (toBottom || (wasStuck && !prepending)) {
      scrollToBottom();
    } else if (prepending) {
      scroller.scrollTop = scroller.scrollHeight - fromBottom;
    } else if (list.lastElementChild?.dataset.key !== before && list.lastElementChild?.classList.contains('theirs')) {
      unseenBelow = true;
    }
    updateJump();
  }

  function show(otherId) {
    if (current && current !== otherId) {
      drafts.set(current, { text: textarea.value, attachment });
      stopTyping(state.conversations.get(current));
    }
    const changed = current !== otherId;
    current = otherId;
    placeholder.hidden = !!otherId;
    chat.hidden = !otherId;
    if (!otherId) return;
    if (changed) {
      const draft = drafts.get(otherId);
      textarea.value = draft?.text || '';
      setAttachment(draft?.attachment || null);
      list.replaceChildren();
      historyTop.dataset.signature = '';
      unreadAtOpen = state.users.get(otherId)?.unreadCount || 0;
      unreadMarkerSeq = null;
      stick = true;
      unseenBelow = false;
    }
    renderHeader();
    renderTyping();
    renderMessages({ toBottom: changed });
    if (changed && window.matchMedia('(pointer: fine)').matches) textarea.focus({ preventScroll: true });
    else if (changed) scroller.focus({ preventScroll: true });
  }

  const unsubscribe = [
    on('active', () => show(state.activeId)),
    on('conversation', (otherId) => {
      if (otherId !== current) return;
      renderMessages();
      markReadIfVisible();
    }),
    on('presence', () => current && renderHeader()),
    on('connection', () => current && renderHeader()),
    on('users', () => {
      if (!current) return;
      renderHeader();
      const conv = state.conversations.get(current);
      if (conv) renderTop(conv);
    }),
    on('typing', (otherId) => otherId === current && renderTyping()),
    on('sent', (otherId) => otherId === current && scrollToBottom()),
  ];
  element._dispose = () => {
    unsubscribe.forEach((off) => off());
    keepBottom.disconnect();
  };
  show(state.activeId);
  return element;
}
