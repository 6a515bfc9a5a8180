// The account's e-mail: the pages that verification and unsubscribe links open, and the
// profile page's row for notification e-mails (verify the address, send the link again, turn
// the e-mails on or off).
//
// A link's secret is in the URL's fragment (`#token=`), which the browser never sends to a
// server; the page reads it, drops it from the address bar and history, and posts it.

import { ApiError, get, post, put } from './api.js';
import { h, icon, toast } from './dom.js';

/** Takes the `token` from the fragment and removes it from the address and history. */
function takeToken() {
  const token = new URLSearchParams(location.hash.slice(1)).get('token') || '';
  if (location.hash) history.replaceState(history.state, '', location.pathname);
  return token;
}

const PAGES = {
  '/verify-email': {
    title: 'Confirm your e-mail',
    working: 'Confirming your address…',
    done: 'Your e-mail address is confirmed. Courier will now let you know about messages that arrive while you are away.',
    send: (token) => post('/api/auth/verify-email', { token }),
  },
  '/unsubscribe': {
    title: 'Notification e-mails',
    working: 'Turning notification e-mails off…',
    done: 'You will get no more notification e-mails. You can turn them on again on your profile page.',
    send: (token) => post('/api/auth/unsubscribe', { token }),
  },
};

/** Whether `path` is one of the pages an e-mail link opens. */
export function isLinkPage(path) {
  return Object.hasOwn(PAGES, path);
}

/** The page an e-mail link opens: posts its token and says what happened. */
export function linkPage(path, { navigate }) {
  const page = PAGES[path];
  const token = takeToken();
  const message = h('p', { class: 'muted', role: 'status', 'data-testid': 'link-status', text: page.working });
  const next = h('a', {
    class: 'btn btn-secondary',
    href: '/',
    hidden: true,
    'data-testid': 'link-continue',
    onclick: (event) => {
      event.preventDefault();
      navigate('/', { replace: true });
    },
  }, h('span', { text: 'Open Courier' }));
  const finish = (text, ok) => {
    message.textContent = text;
    message.dataset.outcome = ok ? 'done' : 'failed';
    next.hidden = false;
  };
  if (!token) {
    finish('This link is incomplete: open it from the e-mail again.', false);
  } else {
    page.send(token).then(
      () => finish(page.done, true),
      (error) => finish(error instanceof ApiError ? error.message : 'Something went wrong.', false),
    );
  }
  return h('main', { class: 'auth link-page', 'data-testid': 'link-page' },
    h('section', { class: 'auth-panel' },
      h('div', { class: 'auth-card' },
        h('div', { class: 'brand' }, h('span', { class: 'logo' }, icon('chat', 'icon logo-icon')), h('span', { class: 'brand-name', text: 'Courier' })),
        h('h1', { text: page.title }),
        message,
        next)));
}

/** The profile page's row for notification e-mails. */
export function emailSettingsRow() {
  const row = h('div', { class: 'setting-row', 'data-testid': 'email-settings' });
  const render = (settings) => {
    if (!settings.emailVerified) {
      const resend = h('button', {
        class: 'btn btn-secondary',
        type: 'button',
        'data-testid': 'resend-verification',
        onclick: async () => {
          resend.disabled = true;
          try {
            await post('/api/auth/resend-verification');
            toast(`We sent a new link to ${settings.email}`);
          } catch (error) {
            toast(error instanceof ApiError ? error.message : 'The e-mail could not be sent.', 'error');
          } finally {
            resend.disabled = false;
          }
        },
      }, icon('mail'), h('span', { text: 'Send the link again' }));
      row.replaceChildren(
        h('div', {},
          h('div', { class: 'setting-title', text: 'E-mail notifications' }),
          h('p', { class: 'muted small', text: `Confirm ${settings.email} with the link we sent you: until then Courier sends you no e-mail.` })),
        resend);
      return;
    }
    const toggle = h('button', {
      class: 'btn btn-secondary',
      type: 'button',
      'data-testid': 'email-notifications-toggle',
      'aria-pressed': String(settings.emailNotifications),
      onclick: async () => {
        toggle.disabled = true;
        try {
          render(await put('/api/auth/settings', { emailNotifications: !settings.emailNotifications }));
        } catch (error) {
          toast(error instanceof ApiError ? error.message : 'The setting could not be saved.', 'error');
          toggle.disabled = false;
        }
      },
    }, h('span', { text: settings.emailNotifications ? 'Turn off' : 'Turn on' }));
    row.replaceChildren(
      h('div', {},
        h('div', { class: 'setting-title', text: 'E-mail notifications' }),
        h('p', {
          class: 'muted small',
          'data-testid': 'email-notifications-state',
          text: settings.emailNotifications
            ? 'On: an e-mail when a message arrives while you are away (at most one per conversation every 15 minutes).'
            : 'Off: Courier sends you no notification e-mails.',
        })),
      toggle);
  };
  get('/api/auth/settings').then(render, () => row.replaceChildren());
  return row;
}
