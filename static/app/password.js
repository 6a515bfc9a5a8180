// Passwords and sessions: the profile page's security section (change the password, the list
// of signed-in sessions, sign out one or everywhere else), and the two pages of a password
// reset (ask for a link; choose a new password from the link, whose secret is in the URL's
// fragment, which the browser never sends to a server).

import { ApiError, del, get, post, put } from './api.js';
import { field, setError } from './auth.js';
import { exactTime } from './format.js';
import { h, icon, toast } from './dom.js';

const MIN_PASSWORD = 6;

function messageOf(error, fallback) {
  return error instanceof ApiError ? error.message : fallback;
}

/** A short description of a browser from its User-Agent: enough to recognise one's own. */
export function describeAgent(agent) {
  if (!agent) return 'Unknown client';
  const browser = [['Edg/', 'Edge'], ['OPR/', 'Opera'], ['Firefox/', 'Firefox'], ['Chrome/', 'Chrome'], ['Safari/', 'Safari']]
    .find(([token]) => agent.includes(token))?.[1];
  const system = [['Windows', 'Windows'], ['Android', 'Android'], ['iPhone', 'iOS'], ['iPad', 'iPadOS'], ['Mac OS', 'macOS'], ['Linux', 'Linux']]
    .find(([token]) => agent.includes(token))?.[1];
  if (browser && system) return `${browser} on ${system}`;
  return browser || system || agent.slice(0, 60);
}

/** The profile page's "Password and sessions" section. */
export function securitySection({ onSignedOut }) {
  const current = field({ name: 'currentPassword', label: 'Current password', type: 'password', autocomplete: 'current-password', iconName: 'lock' });
  const next = field({
    name: 'newPassword', label: 'New password', type: 'password', autocomplete: 'new-password', iconName: 'lock', hint: `At least ${MIN_PASSWORD} characters.`,
  });
  const submit = h('button', { class: 'btn btn-secondary', type: 'submit', 'data-testid': 'password-submit' }, h('span', { text: 'Change password' }));
  const form = h('form', { class: 'password-form', novalidate: true, 'data-testid': 'password-form' },
    current.element, next.element, submit);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    setError(current, current.input.value ? '' : 'Enter your current password.');
    setError(next, next.input.value.length >= MIN_PASSWORD ? '' : `Use at least ${MIN_PASSWORD} characters.`);
    if (!current.input.value || next.input.value.length < MIN_PASSWORD) return;
    submit.disabled = true;
    try {
      const result = await put('/api/auth/password', { currentPassword: current.input.value, newPassword: next.input.value });
      current.input.value = '';
      next.input.value = '';
      const others = result.sessionsEnded;
      toast(others ? `Password changed. ${others} other session${others === 1 ? '' : 's'} signed out.` : 'Password changed.');
      loadSessions();
    } catch (error) {
      const message = messageOf(error, 'The password could not be changed.');
      setError(/current/i.test(message) ? current : next, message);
    } finally {
      submit.disabled = false;
    }
  });

  const list = h('ul', { class: 'session-list', 'data-testid': 'session-list' });
  const signOutOthers = h('button', {
    class: 'btn btn-secondary',
    type: 'button',
    'data-testid': 'logout-others',
    onclick: async () => {
      signOutOthers.disabled = true;
      try {
        const result = await post('/api/auth/logout-all');
        toast(`${result.sessionsEnded} other session${result.sessionsEnded === 1 ? '' : 's'} signed out.`);
        loadSessions();
      } catch (error) {
        toast(messageOf(error, 'The other sessions could not be signed out.'), 'error');
      } finally {
        signOutOthers.disabled = false;
      }
    },
  }, icon('logout'), h('span', { text: 'Sign out everywhere else' }));

  const row = (session) => {
    const end = h('button', {
      class: 'btn btn-ghost btn-small',
      type: 'button',
      'data-testid': 'end-session',
      onclick: async () => {
        end.disabled = true;
        try {
          await del(`/api/auth/sessions/${encodeURIComponent(session.id)}`);
          if (session.current) {
            onSignedOut();
            return;
          }
          loadSessions();
        } catch (error) {
          toast(messageOf(error, 'The session could not be signed out.'), 'error');
          end.disabled = false;
        }
      },
    }, h('span', { text: 'Sign out' }));
    return h('li', { class: 'session', 'data-testid': 'session', 'data-current': String(session.current) },
      h('div', {},
        h('div', { class: 'setting-title' },
          h('span', { text: describeAgent(session.userAgent) }),
          session.current ? h('span', { class: 'session-badge', text: 'This browser' }) : null),
        h('p', {
          class: 'muted small',
          text: `${session.address} · signed in ${exactTime(session.createdAt)} · last active ${exactTime(session.lastSeenAt)}`,
        })),
      end);
  };

  async function loadSessions() {
    try {
      const sessions = await get('/api/auth/sessions');
      list.replaceChildren(...sessions.map(row));
      signOutOthers.hidden = sessions.length < 2;
    } catch {
      list.replaceChildren(h('li', { class: 'muted small', text: 'The sessions could not be loaded.' }));
    }
  }
  loadSessions();

  return h('div', { class: 'settings', 'data-testid': 'security' },
    h('h2', { text: 'Password and sessions' }),
    form,
    h('div', { class: 'setting-row' },
      h('div', {},
        h('div', { class: 'setting-title', text: 'Where you are signed in' }),
        h('p', { class: 'muted small', text: 'Sign out a session you do not recognise, then change your password.' })),
      signOutOthers),
    list);
}

function card(title, testId, ...children) {
  return h('main', { class: 'auth link-page', 'data-testid': testId },
    h('section', { class: 'auth-panel' },
      h('div', { class: 'auth-card' },
        h('div', { class: 'brand' }, h('span', { class: 'logo' }, icon('chat', 'icon logo-icon')), h('span', { class: 'brand-name', text: 'Courier' })),
        h('h1', { text: title }),
        ...children)));
}

function backToLogin(navigate) {
  return h('p', { class: 'auth-switch' }, h('a', {
    href: '/login',
    'data-testid': 'to-login',
    onclick: (event) => {
      event.preventDefault();
      navigate('/login', { replace: true });
    },
  }, 'Back to sign in'));
}

/** `/forgot-password`: asks for a reset link. */
export function forgotPasswordView({ navigate }) {
  const email = field({ name: 'email', label: 'Email', type: 'email', autocomplete: 'email', iconName: 'mail' });
  const status = h('p', { class: 'muted', role: 'status', 'data-testid': 'forgot-status' });
  const submit = h('button', { class: 'btn btn-primary btn-block', type: 'submit', 'data-testid': 'forgot-submit' }, h('span', { text: 'Send me a link' }));
  const form = h('form', { class: 'auth-form', novalidate: true }, email.element, submit);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    submit.disabled = true;
    try {
      const result = await post('/api/auth/forgot-password', { email: email.input.value.trim() });
      setError(email, '');
      status.textContent = `${result.message}. It works for an hour.`;
    } catch (error) {
      setError(email, messageOf(error, 'The link could not be sent.'));
    } finally {
      submit.disabled = false;
    }
  });
  return card('Reset your password', 'forgot-page',
    h('p', { class: 'muted', text: 'Enter the e-mail address of your account and we will send you a link to choose a new password.' }),
    form, status, backToLogin(navigate));
}

/** `/reset-password#token=…`: chooses a new password with the link's secret. */
export function resetPasswordView({ navigate }) {
  const token = new URLSearchParams(location.hash.slice(1)).get('token') || '';
  if (location.hash) history.replaceState(history.state, '', location.pathname);
  const password = field({
    name: 'password', label: 'New password', type: 'password', autocomplete: 'new-password', iconName: 'lock', hint: `At least ${MIN_PASSWORD} characters.`,
  });
  const status = h('p', { class: 'muted', role: 'status', 'data-testid': 'reset-status' });
  const submit = h('button', { class: 'btn btn-primary btn-block', type: 'submit', 'data-testid': 'reset-submit' }, h('span', { text: 'Set the new password' }));
  const form = h('form', { class: 'auth-form', novalidate: true }, password.element, submit);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    if (password.input.value.length < MIN_PASSWORD) {
      setError(password, `Use at least ${MIN_PASSWORD} characters.`);
      return;
    }
    submit.disabled = true;
    try {
      const result = await post('/api/auth/reset-password', { token, password: password.input.value });
      form.hidden = true;
      status.textContent = result.message;
      status.dataset.outcome = 'done';
    } catch (error) {
      const message = messageOf(error, 'The password could not be changed.');
      if (/password/i.test(message)) setError(password, message);
      else {
        status.textContent = message;
        status.dataset.outcome = 'failed';
      }
    } finally {
      submit.disabled = false;
    }
  });
  if (!token) {
    form.hidden = true;
    status.textContent = 'This link is incomplete: open it from the e-mail again.';
    status.dataset.outcome = 'failed';
  }
  return card('Choose a new password', 'reset-page', form, status, backToLogin(navigate));
}
