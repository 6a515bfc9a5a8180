// The menu of one message: a row of quick reactions, then Reply, Edit (my messages, inside the
// edit window), Copy and Delete (mine; asks once more before deleting for everyone). One menu
// element serves every message; it closes on Escape, on a click elsewhere and on scrolling.

import { h, icon } from './dom.js';

export const QUICK_REACTIONS = ['👍', '❤️', '😂', '😮', '😢', '🙏'];

export function messageMenu({ onReact, onReply, onEdit, onCopy, onDelete }) {
  let target = null;
  let anchor = null;
  const reactions = h('div', { class: 'menu-reactions', role: 'group', 'aria-label': 'React' },
    ...QUICK_REACTIONS.map((emoji) => h('button', {
      class: 'menu-reaction',
      type: 'button',
      role: 'menuitem',
      'aria-label': `React with ${emoji}`,
      'data-testid': 'quick-reaction',
      'data-emoji': emoji,
      text: emoji,
      onclick: () => act((message) => onReact(message, emoji)),
    })));
  const item = (name, label, testid, handler, danger = false) => h('button', {
    class: `menu-item${danger ? ' danger' : ''}`,
    type: 'button',
    role: 'menuitem',
    'data-testid': testid,
    onclick: handler,
  }, icon(name), h('span', { text: label }));
  const reply = item('reply', 'Reply', 'menu-reply', () => act(onReply));
  const edit = item('edit', 'Edit', 'menu-edit', () => act(onEdit));
  const copy = item('copy', 'Copy text', 'menu-copy', () => act(onCopy));
  const remove = item('trash', 'Delete', 'menu-delete', () => {
    confirm.hidden = false;
    remove.hidden = true;
    confirmButton.focus();
  }, true);
  const confirmButton = h('button', {
    class: 'btn btn-danger btn-small',
    type: 'button',
    'data-testid': 'menu-delete-confirm',
    onclick: () => act(onDelete),
  }, 'Delete for everyone');
  const confirm = h('div', { class: 'menu-confirm', hidden: true },
    h('span', { class: 'muted small', text: 'Delete this message for everyone?' }), confirmButton);
  const element = h('div', {
    class: 'msg-menu',
    role: 'menu',
    hidden: true,
    'aria-label': 'Message actions',
    'data-testid': 'message-menu',
  }, reactions, reply, edit, copy, remove, confirm);

  /** Closes the menu, then runs `handler` with the message it was opened for. */
  function act(handler) {
    const message = target;
    close();
    if (message) handler(message);
  }

  function close() {
    if (element.hidden) return;
    element.hidden = true;
    target = null;
    const previous = anchor;
    anchor = null;
    document.removeEventListener('pointerdown', outside, true);
    document.removeEventListener('keydown', keys, true);
    window.removeEventListener('resize', close);
    if (previous && document.activeElement && element.contains(document.activeElement)) previous.focus();
  }

  function outside(event) {
    if (!element.contains(event.target) && event.target !== anchor) close();
  }

  function keys(event) {
    if (event.key === 'Escape') {
      event.preventDefault();
      event.stopPropagation();
      close();
      return;
    }
    if (event.key !== 'ArrowDown' && event.key !== 'ArrowUp') return;
    const items = [...element.querySelectorAll('button')].filter((button) => !button.hidden && button.offsetParent);
    const at = items.indexOf(document.activeElement);
    const next = event.key === 'ArrowDown' ? at + 1 : at - 1;
    items[(next + items.length) % items.length]?.focus();
    event.preventDefault();
  }

  /** Opens the menu for `message` beside `button`; `mine`/`editable` choose the items. */
  function open(message, button, { mine, editable }) {
    if (!element.isConnected) document.body.appendChild(element);
    if (target && target._id === message._id && !element.hidden) {
      close();
      return;
    }
    target = message;
    anchor = button;
    edit.hidden = !editable;
    remove.hidden = !mine;
    confirm.hidden = true;
    copy.hidden = !message.text;
    element.hidden = false;
    const box = button.getBoundingClientRect();
    const width = element.offsetWidth;
    const height = element.offsetHeight;
    const left = Math.min(Math.max(8, box.right - width), window.innerWidth - width - 8);
    const below = box.bottom + 6;
    const top = below + height > window.innerHeight - 8 ? Math.max(8, box.top - height - 6) : below;
    element.style.left = `${left}px`;
    element.style.top = `${top}px`;
    document.addEventListener('pointerdown', outside, true);
    document.addEventListener('keydown', keys, true);
    window.addEventListener('resize', close);
    element.querySelector('.menu-reaction')?.focus();
  }

  return { open, close };
}
