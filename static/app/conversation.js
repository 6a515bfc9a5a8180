// The conversation pane: header (who, presence, typing), the history (day separators, grouped
// bubbles, text, images, files, replies, reactions, per-message status, "Seen"), older pages on
// scrolling up, a menu on every message (react, reply, edit, copy, delete), and the composer
// (Enter sends, Shift+Enter is a newline, Escape leaves a reply or an edit; images by button,
// paste or drop, previewed and downscaled before sending; any file by the paperclip). Every piece of user data is set with textContent or as an
// attribute value: nothing is ever parsed as HTML, so links and markup show as text.

import { ApiError, api } from './api.js';
import { avatar, fillAvatar } from './avatar.js';
import { h, icon, reconcile, safeUrl, toast } from './dom.js';
import { clockTime, dayKey, dayLabel, displayName, exactTime } from './format.js';
import { FileProblem, fileCard, fileSize, uploadFile } from './files.js';
import { openGroupSettings } from './groups.js';
import { ImageProblem, prepareImage } from './images.js';
import { messageMenu } from './message-menu.js';
import { openMessageSearch } from './message-search.js';
import {
  canEdit, chatEntry, deleteMessage, discard, editMessage, groupIdOf, loadLatest, loadOlder, loadUntil, markReadIfVisible,
  noteTyping, on, personOf, retry, sendMessage, sortedMessages, state, stopTyping, toggleReaction,
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
  let upload = null; // {name, size, file?: the upload's answer, failed?}, an attached file
  let mode = null; // {kind: 'reply' | 'edit', message}
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
  const settingsButton = h('button', {
    class: 'btn btn-ghost group-settings-btn',
    type: 'button',
    hidden: true,
    'data-testid': 'group-settings-open',
    onclick: () => {
      const groupId = groupIdOf(current);
      if (groupId) openGroupSettings(groupId, { navigate });
    },
  }, icon('users'), 'Members');
  const searchButton = h('button', {
    class: 'icon-btn search-btn',
    type: 'button',
    'aria-label': 'Search this conversation',
    title: 'Search this conversation',
    'data-testid': 'conversation-search',
    onclick: () => current && openMessageSearch({ navigate, scope: current }),
  }, icon('search'));
  const header = h('header', { class: 'chat-head' }, backButton, headAvatar, h('div', { class: 'who' }, headName, headStatus), searchButton, blockButton, settingsButton);

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
  const anyFileInput = h('input', {
    type: 'file',
    class: 'visually-hidden',
    tabindex: '-1',
    'data-testid': 'file-input',
  });
  const fileButton = h('button', {
    class: 'icon-btn attach-btn',
    type: 'button',
    'aria-label': 'Attach a file',
    title: 'Attach a file',
    'data-testid': 'attach-file',
    onclick: () => anyFileInput.click(),
  }, icon('paperclip'));
  const uploadName = h('span', { class: 'file-name' });
  const uploadMeta = h('span', { class: 'file-meta muted small' });
  const uploadChip = h('div', { class: 'upload-chip', hidden: true, 'data-testid': 'file-preview' },
    h('span', { class: 'file-icon', 'aria-hidden': 'true' }, icon('file')),
    h('span', { class: 'file-info' }, uploadName, uploadMeta),
    h('button', {
      class: 'icon-btn small',
      type: 'button',
      'aria-label': 'Remove file',
      'data-testid': 'remove-file',
      onclick: () => setUpload(null),
    }, icon('x')));
  const modeTitle = h('span', { class: 'mode-title' });
  const modeText = h('span', { class: 'mode-text' });
  const modeBanner = h('div', { class: 'compose-mode', hidden: true, 'data-testid': 'compose-mode' },
    h('span', { class: 'mode-icon', 'aria-hidden': 'true' }),
    h('span', { class: 'mode-body' }, modeTitle, modeText),
    h('button', {
      class: 'icon-btn small',
      type: 'button',
      'aria-label': 'Cancel',
      'data-testid': 'cancel-mode',
      onclick: () => setMode(null),
    }, icon('x')));
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
    modeBanner,
    preview,
    uploadChip,
    h('div', { class: 'composer-row' }, attachButton, fileButton, h('div', { class: 'input-shell' }, textarea, counter), sendButton),
    fileInput,
    anyFileInput);

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
    if (text.length > MAX_TEXT) return false;
    if (mode?.kind === 'edit') return text.trim() !== '' && text !== mode.message.text;
    if (upload && !upload.file) return false; // still uploading, or failed
    return text.trim() !== '' || attachment !== null || upload !== null;
  }

  /** Replying to or editing `message` (or neither, with null). */
  function setMode(next) {
    const leavingEdit = mode?.kind === 'edit';
    mode = next;
    modeBanner.hidden = !next;
    modeBanner.dataset.kind = next?.kind || '';
    if (next) {
      const { message } = next;
      const author = message.senderId === state.me?._id ? 'yourself' : displayName(state.users.get(message.senderId));
      modeBanner.firstElementChild.replaceChildren(icon(next.kind === 'edit' ? 'edit' : 'reply'));
      modeTitle.textContent = next.kind === 'edit' ? 'Editing message' : `Replying to ${author}`;
      modeText.textContent = message.text || (message.image ? 'Photo' : message.fileName || '');
      if (next.kind === 'edit') {
        textarea.value = message.text;
        setAttachment(null);
        setUpload(null);
      }
      textarea.focus();
    } else if (leavingEdit) {
      textarea.value = '';
    }
    attachButton.disabled = next?.kind === 'edit';
    fileButton.disabled = next?.kind === 'edit';
    refreshComposer();
  }

  function setUpload(next) {
    upload = next;
    uploadChip.hidden = !next;
    if (next) {
      uploadName.textContent = next.name;
      uploadName.title = next.name;
      uploadMeta.textContent = next.failed ? next.failed : next.file ? fileSize(next.size) : `${fileSize(next.size)} · uploading…`;
      uploadChip.classList.toggle('failed', !!next.failed);
    }
    refreshComposer();
  }

  async function attachFile(file) {
    if (!file) return;
    const entry = { name: file.name || 'file', size: file.size };
    setUpload(entry);
    try {
      entry.file = await uploadFile(file);
    } catch (error) {
      entry.failed = error instanceof FileProblem ? error.message : 'The upload failed.';
      toast(entry.failed, 'error');
    }
    // The user may have removed it, or picked another, meanwhile.
    if (upload === entry) setUpload(entry);
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

  anyFileInput.addEventListener('change', () => {
    const file = anyFileInput.files?.[0];
    anyFileInput.value = '';
    attachFile(file);
  });
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
    } else if (event.key === 'Escape' && mode) {
      event.preventDefault();
      setMode(null);
    } else if (event.key === 'ArrowUp' && !mode && textarea.value === '') {
      // As in most chat apps: the up arrow in an empty composer edits my last message.
      const conv = state.conversations.get(current);
      const last = conv && [...sortedMessages(conv)].reverse().find((message) => message.senderId === state.me?._id);
      if (last && canEdit(last)) {
        event.preventDefault();
        setMode({ kind: 'edit', message: last });
      }
    }
  });
  textarea.addEventListener('blur', () => {
    if (current) stopTyping(state.conversations.get(current));
  });
  composer.addEventListener('submit', (event) => {
    event.preventDefault();
    if (!current || !canSend()) return;
    const text = textarea.value.replace(/^\s*\n|\s+$/g, '');
    if (mode?.kind === 'edit') {
      const { message } = mode;
      setMode(null);
      editMessage(message._id, text).catch((error) => {
        toast(error instanceof ApiError ? error.message : 'The message could not be edited.', 'error');
      });
      textarea.focus();
      return;
    }
    sendMessage(current, {
      text,
      image: attachment ? attachment.dataUrl : '',
      replyTo: mode?.kind === 'reply' ? mode.message : null,
      file: upload?.file || null,
    });
    textarea.value = '';
    drafts.delete(current);
    setAttachment(null);
    setUpload(null);
    setMode(null);
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
    menu.close();
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
    if (groupIdOf(conv.otherId)) return 'delivered';
    return message.seq <= conv.seenUpTo ? 'seen' : 'delivered';
  }

  function buildItems(conv) {
    const me = state.me?._id;
    const entries = [];
    for (const message of sortedMessages(conv)) {
      const mine = message.senderId === me && !message.isSystemMessage;
      if (message.isSystemMessage) {
        entries.push({ key: `m-${message._id}`, message, system: true, mine: false, pending: false, status: null });
        continue;
      }
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
      const fromOther = entries.filter((entry) => !entry.mine && !entry.pending && !entry.system);
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
      if (entry.system) {
        items.push({ key: entry.key, create: () => systemNotice(entry.message), update: (el) => updateSystemNotice(el, entry.message) });
        previous = { ...entry, mine: null, day, time };
        return;
      }
      const sameSender = (other) => other && !other.system && other.mine === entry.mine && other.message.senderId === entry.message.senderId;
      entry.first = newDay || !sameSender(previous) || time - previous.time > GROUP_GAP_MS;
      entry.last = !next || !sameSender(next) || dayKey(nextTime) !== day || nextTime - time > GROUP_GAP_MS;
      entry.showSender = !!groupIdOf(conv.otherId) && !entry.mine && entry.first;
      entry.showSeen = index === seenIndex;
      entry.time = time;
      entry.day = day;
      items.push({ key: entry.key, create: () => createMessage(entry), update: (el) => updateMessage(el, entry) });
      previous = entry;
    });
    return items;
  }

  function systemNotice(message) {
    const text = h('span', { text: message.text || '' });
    const element = h('li', { class: 'system-notice', role: 'note', 'data-testid': 'system-message' }, text);
    element._text = text;
    return element;
  }

  function updateSystemNotice(element, message) {
    if (element._text.textContent !== message.text) element._text.textContent = message.text || '';
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
    const bubble = h('div', { class: 'bubble' });
    const actions = h('button', {
      class: 'icon-btn small msg-actions',
      type: 'button',
      'aria-label': 'Message actions',
      'aria-haspopup': 'menu',
      title: 'More',
      'data-testid': 'message-actions',
      onclick: (event) => {
        event.stopPropagation();
        openMenu(element, actions);
      },
    }, icon('more'));
    const reactions = h('div', { class: 'reactions', 'data-testid': 'reactions' });
    const footer = h('div', { class: 'msg-footer' });
    const sender = h('span', { class: 'msg-sender', hidden: true, 'data-testid': 'message-sender' });
    const element = h('li', { class: 'msg', 'data-testid': 'message' },
      sender, h('div', { class: 'msg-row' }, bubble, actions), reactions, footer);
    element.addEventListener('contextmenu', (event) => {
      if (element._entry?.pending || event.target.closest('a, img')) return;
      event.preventDefault();
      openMenu(element, actions);
    });
    element._parts = { footer, bubble, reactions, actions, sender };
    updateMessage(element, entry);
    return element;
  }

  /** The bubble's content: quote, deleted notice or image, file and text, then time and status. */
  function fillBubble(bubble, entry) {
    const { message } = entry;
    bubble.replaceChildren();
    bubble.className = 'bubble';
    if (message.replyTo && typeof message.replyTo === 'object') bubble.appendChild(replyQuote(message.replyTo));
    if (message.isDeleted) {
      bubble.classList.add('deleted');
      bubble.appendChild(h('p', { class: 'msg-text msg-deleted', 'data-testid': 'message-deleted', text: 'This message was deleted' }));
      bubble.appendChild(metaOf(message, entry));
      return;
    }
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
    const card = fileCard(message);
    if (card) {
      bubble.appendChild(card);
      bubble.classList.add('has-file');
    }
    const text = message.text || '';
    if (text) {
      bubble.appendChild(h('p', { class: 'msg-text', text, 'data-testid': 'message-text' }));
      if (!imageUrl && !card && !message.replyTo && isJumboEmoji(text)) bubble.classList.add('jumbo');
    } else if (imageUrl && !card) {
      bubble.classList.add('image-only');
    }
    bubble.appendChild(metaOf(message, entry));
  }

  function metaOf(message, entry) {
    const time = h('time', { class: 'msg-time', dateTime: message.createdAt, title: exactTime(message.createdAt), text: clockTime(message.createdAt) });
    const edited = message.isEdited && !message.isDeleted
      ? h('span', {
        class: 'msg-edited',
        'data-testid': 'message-edited',
        title: editedTitle(message),
        text: 'edited',
      })
      : null;
    const statusIcon = h('span', { class: 'msg-status' });
    entry.statusIcon = statusIcon;
    return h('span', { class: 'meta' }, edited, time, statusIcon);
  }

  function editedTitle(message) {
    const history = Array.isArray(message.editHistory) ? message.editHistory : [];
    const last = history.at(-1);
    const at = last?.editedAt ? ` (last ${exactTime(last.editedAt)})` : '';
    return `Edited ${history.length || 1} time${history.length > 1 ? 's' : ''}${at}`;
  }

  /** The quoted message of a reply: a button that scrolls to it when it is loaded. */
  function replyQuote(quote) {
    const author = quote.senderId?._id === state.me?._id ? 'You' : quote.senderId?.fullName || 'Someone';
    const text = quote.isDeleted ? 'This message was deleted' : quote.text || (quote.image ? 'Photo' : '');
    return h('button', {
      class: 'reply-quote',
      type: 'button',
      'data-testid': 'reply-quote',
      'aria-label': `Reply to ${author}: ${text}`,
      onclick: () => jumpTo(quote._id),
    }, h('span', { class: 'quote-author', text: author }), h('span', { class: 'quote-text', text }));
  }

  /** Scrolls to a loaded message and flashes it. */
  function jumpTo(id) {
    const target = [...list.children].find((child) => child.dataset.id === id);
    if (!target) {
      toast('That message is further up: scroll to load it.');
      return;
    }
    stick = false;
    target.scrollIntoView({ block: 'center', behavior: 'smooth' });
    target.classList.remove('flash');
    requestAnimationFrame(() => target.classList.add('flash'));
  }

  function fillReactions(container, message) {
    const me = state.me?._id;
    const reactions = Array.isArray(message.reactions) && !message.isDeleted ? message.reactions : [];
    container.replaceChildren(...reactions.filter((reaction) => reaction.count > 0).map((reaction) => {
      const mine = Array.isArray(reaction.users) && reaction.users.includes(me);
      const names = (reaction.users || []).map((id) => (id === me ? 'You' : displayName(state.users.get(id)))).join(', ');
      return h('button', {
        class: `reaction${mine ? ' mine' : ''}`,
        type: 'button',
        'aria-pressed': mine ? 'true' : 'false',
        'aria-label': `${reaction.emoji} ${reaction.count}: ${names}`,
        title: names,
        'data-testid': 'reaction',
        onclick: () => react(message._id, reaction.emoji),
      }, h('span', { class: 'reaction-emoji', text: reaction.emoji }), h('span', { class: 'reaction-count', text: String(reaction.count) }));
    }));
    container.hidden = reactions.length === 0;
  }

  function react(id, emoji) {
    toggleReaction(id, emoji).catch((error) => {
      toast(error instanceof ApiError ? error.message : 'The reaction did not go through.', 'error');
    });
  }

  const menu = messageMenu({
    onReact: (message, emoji) => react(message._id, emoji),
    onReply: (message) => setMode({ kind: 'reply', message }),
    onEdit: (message) => setMode({ kind: 'edit', message }),
    onCopy: (message) => {
      navigator.clipboard?.writeText(message.text || '').then(() => toast('Copied'), () => toast('Could not copy', 'error'));
    },
    onDelete: (message) => {
      deleteMessage(message._id).catch((error) => {
        toast(error instanceof ApiError ? error.message : 'The message could not be deleted.', 'error');
      });
      if (mode?.message._id === message._id) setMode(null);
    },
  });

  function openMenu(element, anchor) {
    const entry = element._entry;
    if (!entry || entry.pending) return;
    menu.open(entry.message, anchor, {
      mine: entry.mine,
      editable: canEdit(entry.message),
    });
  }

  function updateMessage(element, entry) {
    const { footer, bubble, reactions, actions, sender } = element._parts;
    const { message } = entry;
    element._entry = entry;
    sender.hidden = !entry.showSender;
    if (entry.showSender) {
      const name = displayName(personOf(message.senderId, state.groups.get(groupIdOf(current)), message));
      if (sender.textContent !== name) sender.textContent = name;
    }
    const version = `${message._id || message.localId}:${message._v || 0}`;
    if (element._version !== version) {
      element._version = version;
      fillBubble(bubble, entry);
      fillReactions(reactions, message);
      element._statusIcon = entry.statusIcon;
      delete element.dataset.status;
    }
    actions.hidden = entry.pending || !!message.isDeleted;
    const statusIcon = element._statusIcon;
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
    const groupId = groupIdOf(conv.otherId);
    const entry = chatEntry(conv.otherId);
    const user = groupId ? { _id: groupId, fullName: entry?.name || '', profilePic: entry?.profilePic } : entry;
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
        h('p', {
          class: 'muted small',
          text: groupId
            ? `This is the beginning of the group ${user?.fullName || ''}.`
            : `This is the beginning of your conversation with ${user?.fullName || 'them'}.`,
        })));
    } else {
      historyTop.replaceChildren();
    }
  }

  function renderHeader() {
    const groupId = groupIdOf(current);
    settingsButton.hidden = !groupId;
    if (groupId) {
      const group = state.groups.get(groupId);
      const count = (group?.members || []).length;
      fillAvatar(headAvatar, { _id: groupId, fullName: group?.name || '', profilePic: group?.profilePic });
      headName.textContent = group?.name || '';
      blockButton.hidden = true;
      const connected = state.connection === 'open';
      headStatus.textContent = !connected
        ? (state.connection === 'offline' ? 'Waiting for network…' : 'Connecting…')
        : count ? `${count} members` : '';
      headStatus.className = 'chat-status';
      chat.setAttribute('aria-label', group ? `Group ${group.name}` : 'Group');
      textarea.placeholder = group ? `Message ${group.name}` : 'Write a message…';
      return;
    }
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
      if (mode?.kind === 'edit') setMode(null);
      drafts.set(current, { text: textarea.value, attachment, upload, mode });
      stopTyping(state.conversations.get(current));
      menu.close();
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
      setUpload(draft?.upload || null);
      setMode(draft?.mode || null);
      list.replaceChildren();
      historyTop.dataset.signature = '';
      unreadAtOpen = chatEntry(otherId)?.unreadCount || 0;
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
    on('jump', async ({ key, id }) => {
      if (key !== current) return;
      const conv = state.conversations.get(key);
      const found = conv ? await loadUntil(conv, id).catch(() => false) : false;
      if (key !== current) return;
      renderMessages();
      if (found) jumpTo(id);
      else toast('That message could not be loaded.');
    }),
  ];
  element._dispose = () => {
    unsubscribe.forEach((off) => off());
    keepBottom.disconnect();
  };
  show(state.activeId);
  return element;
}
