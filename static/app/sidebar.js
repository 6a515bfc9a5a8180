// The sidebar: me (to the profile), theme and logout; search, the "online only" filter and "New
// group"; everyone else and my groups with avatar, live presence, last message, time and unread
// badge, latest activity first. Arrow keys move between entries.

import { avatar, fillAvatar } from './avatar.js';
import { h, icon, reconcile } from './dom.js';
import { displayName, listTime, plural, preview } from './format.js';
import { dismissOffer, requestPermission, shouldOffer } from './notify.js';
import { openCreateGroup } from './groups.js';
import { openMessageSearch } from './message-search.js';
import { groupKey, on, sortedChats, state } from './state.js';
import { currentTheme, onThemeChange, toggleTheme } from './theme.js';

function fold(text) {
  return String(text || '').normalize('NFD').replace(/[\u0300-\u036f]/g, '').toLowerCase();
}

export function sidebarView({ navigate, onLogout }) {
  const filter = { query: '', onlineOnly: false };

  const meAvatar = avatar(state.me, { size: 'md' });
  const meName = h('span', { class: 'me-name', text: state.me.fullName, 'data-testid': 'me-name' });
  const meButton = h('a', {
    class: 'me',
    href: '/profile',
    'data-testid': 'open-profile',
    'aria-label': 'Your profile',
    onclick: (event) => {
      event.preventDefault();
      navigate('/profile');
    },
  }, meAvatar, h('span', { class: 'me-text' }, meName, h('span', { class: 'me-sub', text: 'View profile' })));

  const themeButton = h('button', { class: 'icon-btn', type: 'button', 'data-testid': 'theme-toggle', onclick: toggleTheme });
  const renderThemeButton = (theme) => {
    const dark = theme === 'dark';
    themeButton.replaceChildren(icon(dark ? 'sun' : 'moon'));
    themeButton.setAttribute('aria-label', dark ? 'Switch to light theme' : 'Switch to dark theme');
    themeButton.title = dark ? 'Light theme' : 'Dark theme';
  };
  renderThemeButton(currentTheme());

  const logoutButton = h('button', {
    class: 'icon-btn',
    type: 'button',
    'aria-label': 'Log out',
    title: 'Log out',
    'data-testid': 'logout',
    onclick: onLogout,
  }, icon('logout'));

  const search = h('input', {
    type: 'search',
    class: 'search-input',
    placeholder: 'Search people',
    'aria-label': 'Search people',
    autocomplete: 'off',
    spellcheck: 'false',
    'data-testid': 'search',
  });
  search.addEventListener('input', () => {
    filter.query = search.value;
    render();
  });
  search.addEventListener('keydown', (event) => {
    if (event.key === 'Escape' && search.value) {
      search.value = '';
      filter.query = '';
      render();
    } else if (event.key === 'ArrowDown') {
      event.preventDefault();
      list.querySelector('.contact')?.focus();
    }
  });

  const onlineToggle = h('input', { type: 'checkbox', class: 'switch-input', id: 'online-only', 'data-testid': 'online-only' });
  onlineToggle.addEventListener('change', () => {
    filter.onlineOnly = onlineToggle.checked;
    render();
  });
  const onlineCount = h('span', { class: 'online-count', 'data-testid': 'online-count' });
  const newGroupButton = h('button', {
    class: 'btn btn-ghost btn-small new-group',
    type: 'button',
    'data-testid': 'new-group',
    onclick: () => openCreateGroup({ navigate }),
  }, icon('plus'), 'New group');
  const searchMessagesButton = h('button', {
    class: 'icon-btn',
    type: 'button',
    'aria-label': 'Search messages',
    title: 'Search messages',
    'data-testid': 'search-messages',
    onclick: () => openMessageSearch({ navigate }),
  }, icon('search'));

  const offer = h('div', { class: 'notify-offer', hidden: !shouldOffer(), 'data-testid': 'notify-offer' },
    icon('bell'),
    h('span', { class: 'notify-text', text: 'Get notified of new messages' }),
    h('button', {
      class: 'btn btn-small btn-primary',
      type: 'button',
      onclick: async () => {
        await requestPermission();
        offer.hidden = true;
      },
    }, 'Turn on'),
    h('button', {
      class: 'icon-btn small',
      type: 'button',
      'aria-label': 'Not now',
      onclick: () => {
        dismissOffer();
        offer.hidden = true;
      },
    }, icon('x')));

  const list = h('ul', { class: 'contact-list', 'data-testid': 'contact-list' });
  const empty = h('div', { class: 'list-empty', hidden: true });

  list.addEventListener('keydown', (event) => {
    const buttons = [...list.querySelectorAll('.contact')];
    const index = buttons.indexOf(document.activeElement);
    if (index < 0) return;
    let next = null;
    if (event.key === 'ArrowDown') next = buttons[index + 1];
    else if (event.key === 'ArrowUp') next = index === 0 ? search : buttons[index - 1];
    else if (event.key === 'Home') next = buttons[0];
    else if (event.key === 'End') next = buttons.at(-1);
    if (next) {
      event.preventDefault();
      next.focus();
    }
  });

  const element = h('aside', { class: 'sidebar', 'aria-label': 'Conversations', 'data-testid': 'sidebar' },
    h('header', { class: 'sidebar-head' },
      meButton,
      h('div', { class: 'head-actions' }, searchMessagesButton, themeButton, logoutButton)),
    h('div', { class: 'sidebar-tools' },
      h('label', { class: 'search' }, icon('search', 'icon search-icon'), search),
      h('div', { class: 'filter-row' },
        h('label', { class: 'switch', for: 'online-only' }, onlineToggle, h('span', { class: 'switch-track', 'aria-hidden': 'true' }), h('span', { text: 'Online only' })),
        onlineCount, newGroupButton)),
    offer,
    h('nav', { class: 'contact-scroll', 'aria-label': 'People' }, list, empty));

  /** A group as the avatar and name helpers see a person. */
  const groupFace = (group) => ({ _id: group._id, fullName: group.name, profilePic: group.profilePic });

  function groupRow(group) {
    const face = avatar(groupFace(group), { size: 'md' });
    face.classList.add('group-avatar');
    const name = h('span', { class: 'contact-name' });
    const time = h('time', { class: 'contact-time' });
    const previewText = h('span', { class: 'contact-preview', 'data-testid': 'contact-preview' });
    const badge = h('span', { class: 'badge', 'data-testid': 'unread-badge' });
    const button = h('button', {
      class: 'contact group',
      type: 'button',
      'data-testid': 'group-contact',
      'data-group-id': group._id,
      onclick: () => navigate(`/groups/${group._id}`),
    }, face, h('span', { class: 'contact-body' },
      h('span', { class: 'contact-top' }, name, time),
      h('span', { class: 'contact-bottom' }, previewText, badge)));
    const item = h('li', { class: 'contact-item' }, button);
    item._parts = { face, name, time, previewText, badge, button };
    return item;
  }

  function updateGroupRow(item, group) {
    const { face, name, time, previewText, badge, button } = item._parts;
    const unread = group.unreadCount || 0;
    fillAvatar(face, groupFace(group));
    name.replaceChildren(icon('users', 'icon group-icon'), group.name);
    const last = group.lastMessage;
    time.textContent = last ? listTime(last.createdAt) : '';
    if (last) time.dateTime = last.createdAt;
    let text = `${(group.members || []).length} members`;
    if (last) {
      const author = last.senderId === state.me._id ? null
        : (group.members || []).find((member) => member?._id === last.senderId)?.fullName?.split(/\s+/)[0];
      text = last.isSystemMessage || !author ? preview(last, state.me._id) : `${author}: ${preview(last, state.me._id)}`;
    }
    previewText.textContent = text;
    badge.textContent = unread > 99 ? '99+' : String(unread);
    badge.hidden = unread === 0;
    button.classList.toggle('unread', unread > 0);
    const active = state.activeId === groupKey(group._id);
    if (active) button.setAttribute('aria-current', 'true');
    else button.removeAttribute('aria-current');
    button.setAttribute('aria-label', [
      `Group ${group.name}`,
      unread ? plural(unread, 'unread message', 'unread messages') : null,
    ].filter(Boolean).join(', '));
  }

  function row(user) {
    const face = avatar(user, { size: 'md', presence: state.online.has(user._id) });
    const name = h('span', { class: 'contact-name' });
    const time = h('time', { class: 'contact-time' });
    const previewText = h('span', { class: 'contact-preview', 'data-testid': 'contact-preview' });
    const badge = h('span', { class: 'badge', 'data-testid': 'unread-badge' });
    const button = h('button', {
      class: 'contact',
      type: 'button',
      'data-testid': 'contact',
      'data-user-id': user._id,
      onclick: () => navigate(`/chat/${user._id}`),
    }, face, h('span', { class: 'contact-body' },
      h('span', { class: 'contact-top' }, name, time),
      h('span', { class: 'contact-bottom' }, previewText, badge)));
    const item = h('li', { class: 'contact-item' }, button);
    item._parts = { face, name, time, previewText, badge, button };
    return item;
  }

  function updateRow(item, user) {
    const { face, name, time, previewText, badge, button } = item._parts;
    const online = state.online.has(user._id);
    const conv = state.conversations.get(user._id);
    const typing = !!conv?.typing;
    const unread = user.unreadCount || 0;
    fillAvatar(face, user, online);
    const tag = user.nameTag
      ? h('span', { class: 'name-tag', text: ` #${user.nameTag}`, title: 'Another user has a name like this one' })
      : null;
    name.replaceChildren(...[user.fullName, tag].filter(Boolean));
    const last = user.lastMessage;
    time.textContent = last ? listTime(last.createdAt) : '';
    if (last) time.dateTime = last.createdAt;
    previewText.textContent = typing ? 'typing…' : last ? preview(last, state.me._id) : (online ? 'Online now' : 'No messages yet');
    previewText.classList.toggle('typing', typing);
    badge.textContent = unread > 99 ? '99+' : String(unread);
    badge.hidden = unread === 0;
    button.classList.toggle('unread', unread > 0);
    button.dataset.online = online ? 'true' : 'false';
    const active = state.activeId === user._id;
    if (active) button.setAttribute('aria-current', 'true');
    else button.removeAttribute('aria-current');
    button.setAttribute('aria-label', [
      displayName(user),
      online ? 'online' : 'offline',
      unread ? plural(unread, 'unread message', 'unread messages') : null,
      typing ? 'typing' : null,
    ].filter(Boolean).join(', '));
  }

  let scheduled = false;
  function render() {
    if (scheduled) return;
    scheduled = true;
    requestAnimationFrame(() => {
      scheduled = false;
      renderNow();
    });
  }

  function renderNow() {
    // A late answer can arrive after the session ended and before the shell is gone.
    if (!state.me) return;
    fillAvatar(meAvatar, state.me);
    meName.textContent = state.me.fullName;
    const query = fold(filter.query.trim());
    const chats = sortedChats();
    const everyone = chats.filter((chat) => chat.kind === 'user').map((chat) => chat.entry);
    const shown = chats.filter(({ kind, entry }) => (kind === 'group'
      ? !filter.onlineOnly && (!query || fold(entry.name).includes(query))
      : (!filter.onlineOnly || state.online.has(entry._id))
        && (!query || fold(entry.fullName).includes(query) || fold(entry.nameTag || '').includes(query))));
    reconcile(list, shown.map(({ kind, key, entry }) => ({
      key,
      create: () => {
        const item = kind === 'group' ? groupRow(entry) : row(entry);
        if (kind === 'group') updateGroupRow(item, entry);
        else updateRow(item, entry);
        return item;
      },
      update: (item) => (kind === 'group' ? updateGroupRow(item, entry) : updateRow(item, entry)),
    })));
    const onlineNow = everyone.filter((user) => state.online.has(user._id)).length;
    onlineCount.textContent = `${onlineNow} online`;
    if (shown.length === 0) {
      empty.hidden = false;
      empty.replaceChildren(
        icon(everyone.length ? 'search' : 'users', 'icon empty-icon'),
        h('p', {
          text: !state.usersLoaded ? 'Loading people…'
            : everyone.length === 0 ? 'No one else is here yet. Invite a friend to sign up!'
              : filter.onlineOnly && !query ? 'Nobody is online right now.'
                : 'No one matches your search.',
        }));
    } else {
      empty.hidden = true;
    }
  }

  const unsubscribe = ['users', 'presence', 'typing', 'active', 'me'].map((topic) => on(topic, render));
  const offTheme = onThemeChange(renderThemeButton);
  element._dispose = () => {
    unsubscribe.forEach((off) => off());
    offTheme();
  };
  renderNow();
  return element;
}
