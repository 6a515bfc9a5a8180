// Courier dashboard: the Users page (accounts, and invitations to sign up). Loaded before
// app.js, which calls `window.CourierUsers` once with its own helpers (DOM builder, API call,
// toasts, confirmation) and shows or hides the page through what it returns.
//
// Same rule as app.js: names, addresses and links reach the page as text (text nodes,
// textContent, input values), never as markup.
'use strict';

window.CourierUsers = ({ h, api, toast, confirmDialog, number, ago, dateTime, isReadOnly }) => {
  const $ = (id) => document.getElementById(id);

  const state = {
    shown: false,
    query: '',
    page: 0,
    pageSize: 20,
    total: 0,
    signupMode: null,
    // Bumped by every load, so an older answer that arrives late is dropped.
    generation: 0,
  };

  const SIGNUP_MODES = {
    open: 'Sign-up is open: anyone can create an account. An invitation link works too, and can be tied to one address.',
    invite: 'Sign-up is by invitation: only someone with a link made here can create an account.',
    closed: 'Sign-up is closed (SIGNUP_MODE=closed): nobody can create an account, so no invitation can be made.',
  };

  const plural = (count, one, many = `${one}s`) => `${number(count)} ${count === 1 ? one : many}`;
  const usersPath = (id) => `/admin/api/users/${encodeURIComponent(id)}`;
  const label = (account) => account.fullName || account.email;

  // ---- The list ----------------------------------------------------------------------------

  async function load() {
    const generation = ++state.generation;
    const params = new URLSearchParams({
      q: state.query,
      offset: String(state.page * state.pageSize),
      limit: String(state.pageSize),
    });
    let data;
    try {
      data = await api('GET', `/admin/api/users?${params}`);
    } catch (error) {
      if (generation === state.generation && error.status !== 401) {
        renderRows([], `Cannot load accounts: ${error.message}`);
      }
      return;
    }
    if (generation !== state.generation) return;
    state.total = data.total;
    state.signupMode = data.signupMode;
    // The last page emptied (an account deleted): show the one before it.
    if (data.users.length === 0 && data.total > 0 && state.page > 0) {
      state.page = Math.max(0, Math.ceil(data.total / state.pageSize) - 1);
      load();
      return;
    }
    renderMeta();
    renderInvite();
    renderRows(data.users, state.query ? `No account matches “${state.query}”.` : 'No accounts yet.');
    const from = data.total === 0 ? 0 : state.page * state.pageSize + 1;
    const to = state.page * state.pageSize + data.users.length;
    $('users-page-info').textContent = `${number(from)}–${number(to)} of ${number(data.total)}`;
    $('users-prev').disabled = state.page === 0;
    $('users-next').disabled = to >= data.total;
  }

  function renderMeta() {
    const parts = [state.query ? `${plural(state.total, 'account')} matching “${state.query}”` : plural(state.total, 'account')];
    if (state.signupMode) parts.push(`sign-up: ${state.signupMode}`);
    $('users-meta').textContent = parts.join(' · ');
    const caption = $('users-caption');
    caption.replaceChildren();
    if (state.query) {
      caption.append(`${plural(state.total, 'match', 'matches')} for “${state.query}”`, ' ',
        h('button', { class: 'button button-ghost', type: 'button', 'data-testid': 'users-clear-search', onclick: clearSearch }, 'Clear search'));
    }
    if (isReadOnly()) {
      caption.append(h('span', { class: 'badge badge-muted' }, 'read-only: actions are disabled'));
    }
  }

  function renderRows(accounts, emptyText) {
    const rows = $('user-rows');
    if (accounts.length === 0) {
      rows.replaceChildren(h('tr', { class: 'placeholder' }, h('td', { colspan: '6', 'data-testid': 'users-empty' }, emptyText)));
      return;
    }
    rows.replaceChildren(...accounts.map(row));
  }

  function row(account) {
    const created = account.createdAt ? new Date(account.createdAt).toLocaleString() : '';
    const status = [
      account.disabledAt
        ? h('span', { class: 'badge badge-bad', title: `disabled since ${dateTime(account.disabledAt)}`, 'data-testid': 'user-status' }, 'disabled')
        : h('span', { class: 'badge badge-ok', 'data-testid': 'user-status' }, 'active'),
      ' ',
      account.online
        ? h('span', { class: 'badge badge-info', 'data-testid': 'user-online' }, 'online')
        : h('span', { class: 'badge badge-muted', 'data-testid': 'user-online' }, 'offline'),
    ];
    return h('tr', { 'data-testid': 'user-row', 'data-id': account._id, 'data-email': account.email },
      h('td', { title: account._id },
        h('span', { class: 'user-name', 'data-testid': 'user-name' }, account.fullName),
        h('span', { class: 'mono muted user-id' }, account._id)),
      h('td', { title: account.email },
        h('span', { class: 'user-email', 'data-testid': 'user-email' }, account.email),
        account.emailVerified
          ? h('span', { class: 'badge badge-ok', 'data-testid': 'user-verified' }, 'verified')
          : h('span', { class: 'badge badge-muted', 'data-testid': 'user-verified' }, 'unverified')),
      h('td', { title: created }, ago(account.createdAt)),
      h('td', { class: 'numeric', 'data-testid': 'user-sessions' }, number(account.sessions)),
      h('td', null, status),
      h('td', { class: 'row-actions' }, isReadOnly() ? h('span', { class: 'muted' }, '—') : actions(account)));
  }

  function actions(account) {
    const name = label(account);
    return [
      account.disabledAt
        ? h('button', {
          class: 'button', type: 'button', 'data-testid': 'user-enable',
          onclick: (event) => act(event, 'POST', `${usersPath(account._id)}/enable`, () => `${name}: account enabled`),
        }, 'Enable')
        : h('button', {
          class: 'button', type: 'button', 'data-testid': 'user-disable',
          title: 'Signs the account out at once and refuses its sign-in until enabled',
          onclick: (event) => act(event, 'POST', `${usersPath(account._id)}/disable`, () => `${name}: account disabled and signed out`),
        }, 'Disable'),
      h('button', {
        class: 'button', type: 'button', 'data-testid': 'user-end-sessions', disabled: account.sessions === 0,
        title: 'Signs the account out on every device; it can sign in again',
        onclick: (event) => act(event, 'POST', `${usersPath(account._id)}/sessions/end`,
          (result) => `${name}: ${plural(result.sessionsEnded, 'session')} ended`),
      }, 'End sessions'),
      h('button', {
        class: 'button button-danger', type: 'button', 'data-testid': 'user-delete',
        onclick: (event) => act(event, 'DELETE', usersPath(account._id),
          (result) => `${name}: account deleted, ${plural(result.messagesDeleted, 'message')} deleted`, {
            title: `Delete the account of ${name}?`,
            text: `${account.fullName} <${account.email}> is deleted for good, with every conversation it is part of: `
              + 'all messages it sent or received are deleted too, for the other side as well. This cannot be undone.',
            okLabel: 'Delete account',
          }),
      }, 'Delete…'),
    ];
  }

  // One action on one account: its buttons wait for the answer, which shows as a toast; then
  // the list is reloaded, so the row shows the account as it is now.
  async function act(event, method, path, success, confirmation) {
    if (isReadOnly()) return;
    const buttons = event.currentTarget.closest('td').querySelectorAll('button');
    if (confirmation && !(await confirmDialog(confirmation))) return;
    for (const button of buttons) button.disabled = true;
    try {
      const result = await api(method, path);
      toast(success(result || {}));
    } catch (error) {
      if (error.status !== 401) toast(error.message, false);
    }
    await load();
  }

  function clearSearch() {
    state.query = '';
    state.page = 0;
    $('users-search').value = '';
    load();
  }

  // ---- Invitations -------------------------------------------------------------------------

  function renderInvite() {
    $('signup-mode').textContent = SIGNUP_MODES[state.signupMode] || `Sign-up mode: ${state.signupMode}`;
    $('signup-mode').dataset.mode = state.signupMode || '';
    const readOnly = isReadOnly();
    $('invite-readonly').hidden = !readOnly;
    $('invite-form').hidden = readOnly;
    $('invite-submit').disabled = state.signupMode === 'closed';
    if (readOnly) $('invite-result').hidden = true;
  }

  async function invite(event) {
    event.preventDefault();
    if (isReadOnly()) return;
    const body = {};
    const email = $('invite-email').value.trim();
    if (email) body.email = email;
    const days = $('invite-days').value.trim();
    if (days) body.days = Number(days);
    const submit = $('invite-submit');
    submit.disabled = true;
    try {
      const result = await api('POST', '/admin/api/invites', body);
      $('invite-url').value = result.url;
      $('invite-expires').textContent = `Works once, until ${dateTime(result.expiresAt)}, ${result.email ? `only for ${result.email}` : 'for anyone'}.`;
      $('invite-result').hidden = false;
      $('invite-url').select();
      toast('Invitation link created');
    } catch (error) {
      if (error.status !== 401) toast(error.message, false);
    } finally {
      submit.disabled = state.signupMode === 'closed';
    }
  }

  async function copyLink() {
    const field = $('invite-url');
    try {
      await navigator.clipboard.writeText(field.value);
      toast('Link copied');
      return;
    } catch (_) {
      // No clipboard API here (or no permission): the older way, from the selected field.
    }
    field.select();
    if (document.execCommand && document.execCommand('copy')) {
      toast('Link copied');
    } else {
      toast('Copying failed: the link is selected, copy it by hand', false);
    }
  }

  // ---- Wiring ------------------------------------------------------------------------------

  $('users-search-form').addEventListener('submit', (event) => {
    event.preventDefault();
    state.query = $('users-search').value.trim();
    state.page = 0;
    load();
  });
  $('users-prev').addEventListener('click', () => {
    state.page = Math.max(0, state.page - 1);
    load();
  });
  $('users-next').addEventListener('click', () => {
    state.page += 1;
    load();
  });
  $('users-page-size').addEventListener('change', (event) => {
    state.pageSize = Number(event.target.value) || 20;
    state.page = 0;
    load();
  });
  $('users-refresh').addEventListener('click', () => load());
  $('invite-form').addEventListener('submit', (event) => {
    invite(event).catch((error) => toast(error.message, false));
  });
  $('invite-copy').addEventListener('click', copyLink);

  return {
    show() {
      state.shown = true;
      $('users-panel').hidden = false;
      load();
    },
    hide() {
      state.shown = false;
      $('users-panel').hidden = true;
    },
    get shown() {
      return state.shown;
    },
    load,
  };
};
