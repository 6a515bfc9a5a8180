// Message search: a dialog that searches every conversation (from the sidebar) or the one open
// (from its header) as you type, with a kind filter; results show who, where, when and the text
// with the matched words marked, and open the conversation at the message. Text is always put
// in text nodes: a message can never become markup here.

import { ApiError } from './api.js';
import { avatar } from './avatar.js';
import { h, icon } from './dom.js';
import { displayName, listTime } from './format.js';
import { emit, groupIdOf, groupKey, searchMessages, state } from './state.js';

const PAGE = 20;

function fold(text) {
  return String(text || '').normalize('NFKD').replace(/[\u0300-\u036f]/g, '').toLowerCase();
}

const WORD = /[\p{L}\p{N}]+/gu;

/** `text` as nodes, with each word that starts with a query word in a <mark>. */
function marked(text, words) {
  const nodes = [];
  let at = 0;
  for (const match of String(text).matchAll(WORD)) {
    const word = fold(match[0]);
    if (!words.some((query) => word.startsWith(query))) continue;
    if (match.index > at) nodes.push(document.createTextNode(text.slice(at, match.index)));
    nodes.push(h('mark', { text: match[0] }));
    at = match.index + match[0].length;
  }
  if (at < text.length) nodes.push(document.createTextNode(text.slice(at)));
  return nodes;
}

/** Where a found message lives: its conversation key and a name for it. */
function placeOf(message) {
  if (message.groupId) {
    const group = state.groups.get(message.groupId);
    return { key: groupKey(message.groupId), path: `/groups/${message.groupId}`, name: group?.name || 'Group' };
  }
  const sender = message.senderId?._id || message.senderId;
  const other = sender === state.me?._id ? message.receiverId : sender;
  return { key: other, path: `/chat/${other}`, name: displayName(state.users.get(other)) };
}

/**
 * Opens the search dialog. `scope` is a conversation key to search only that conversation, or
 * null for all of them.
 */
export function openMessageSearch({ navigate, scope = null }) {
  const groupId = scope ? groupIdOf(scope) : null;
  const scopeName = !scope ? null
    : groupId ? state.groups.get(groupId)?.name || 'this group'
      : displayName(state.users.get(scope));
  const input = h('input', {
    type: 'search',
    class: 'sheet-input',
    placeholder: scope ? `Search messages with ${scopeName}` : 'Search all your messages',
    'aria-label': 'Search messages',
    maxlength: '200',
    'data-testid': 'message-search-input',
  });
  const kind = h('select', { class: 'sheet-input kind-select', 'aria-label': 'Kind of message', 'data-testid': 'message-search-kind' },
    h('option', { value: 'all', text: 'Everything' }),
    h('option', { value: 'text', text: 'Text' }),
    h('option', { value: 'image', text: 'Photos' }),
    h('option', { value: 'file', text: 'Files' }));
  const status = h('p', { class: 'muted small search-status', role: 'status', 'data-testid': 'message-search-status' });
  const results = h('ul', { class: 'picker search-results', 'data-testid': 'message-search-results' });
  const more = h('button', { class: 'btn btn-secondary btn-small', type: 'button', hidden: true, 'data-testid': 'message-search-more' }, 'More results');

  const close = h('button', { class: 'icon-btn small', type: 'button', 'aria-label': 'Close', onclick: () => dialog.close() }, icon('x'));
  const dialog = h('dialog', { class: 'sheet search-sheet', 'aria-label': 'Search messages', 'data-testid': 'message-search-dialog' },
    h('header', { class: 'sheet-head' }, h('h2', { class: 'sheet-title', text: scope ? `Search in ${scopeName}` : 'Search messages' }), close),
    h('div', { class: 'sheet-body' }, h('div', { class: 'search-row' }, input, kind), status, results, more));
  dialog.addEventListener('close', () => dialog.remove());
  dialog.addEventListener('click', (event) => {
    if (event.target === dialog) dialog.close();
  });

  let timer = null;
  let asked = 0; // the number of the latest search: older answers are dropped
  let page = 1;

  /** Who wrote it and, searching everywhere, where: the group, or the person a message of
   * mine went to (a message from someone else is in our conversation, their name says it). */
  function whereLabel(who, mine, place, message) {
    if (scope) return who;
    if (message.groupId) return `${who} · ${place.name}`;
    return mine ? `You · to ${place.name}` : who;
  }

  function row(message, words) {
    const place = placeOf(message);
    const sender = message.senderId && typeof message.senderId === 'object' ? message.senderId : state.users.get(message.senderId);
    const mine = (sender?._id || message.senderId) === state.me?._id;
    const who = mine ? 'You' : displayName(sender);
    const text = message.text || message.fileName || (message.image ? 'Photo' : '');
    return h('li', {},
      h('button', {
        class: 'search-hit',
        type: 'button',
        'data-testid': 'message-search-hit',
        'data-id': message._id,
        onclick: () => {
          dialog.close();
          navigate(place.path);
          emit('jump', { key: place.key, id: message._id });
        },
      },
      avatar(sender, { size: 'sm', presence: false }),
      h('span', { class: 'hit-body' },
        h('span', { class: 'hit-head' },
          h('span', { class: 'hit-who', text: whereLabel(who, mine, place, message) }),
          h('time', { class: 'hit-time', text: listTime(message.createdAt) })),
        h('span', { class: 'hit-text' }, ...marked(text, words)))));
  }

  async function run({ append = false } = {}) {
    const query = input.value.trim();
    const number = ++asked;
    if (!append) page = 1;
    if (!fold(query).match(WORD)) {
      results.replaceChildren();
      more.hidden = true;
      status.textContent = query ? 'Type a letter or a digit.' : '';
      return;
    }
    const params = { q: query, page: String(page), limit: String(PAGE) };
    if (kind.value !== 'all') params.messageType = kind.value;
    if (groupId) params.groupId = groupId;
    else if (scope) params.userId = scope;
    status.textContent = 'Searching…';
    try {
      const answer = await searchMessages(params);
      if (number !== asked) return;
      const words = [...fold(query).matchAll(WORD)].map((match) => match[0]);
      const rows = (answer.messages || []).map((message) => row(message, words));
      if (append) results.append(...rows);
      else results.replaceChildren(...rows);
      const total = answer.pagination?.totalMessages ?? rows.length;
      status.textContent = total === 0 ? 'No messages found.' : total === 1 ? '1 message' : `${total} messages`;
      more.hidden = !answer.pagination?.hasMore;
    } catch (error) {
      if (number !== asked) return;
      status.textContent = error instanceof ApiError ? error.message : 'Search failed. Try again.';
      more.hidden = true;
    }
  }

  input.addEventListener('input', () => {
    clearTimeout(timer);
    timer = setTimeout(() => run(), 250);
  });
  input.addEventListener('keydown', (event) => {
    if (event.key === 'Enter') {
      clearTimeout(timer);
      run();
    }
  });
  kind.addEventListener('change', () => run());
  more.addEventListener('click', () => {
    page += 1;
    run({ append: true });
  });

  document.body.appendChild(dialog);
  dialog.showModal();
  input.focus();
  return dialog;
}
