// The sign-up and login pages: inline validation as you go, the server's own error messages
// next to the field they concern, and a decorative panel on wide screens.

import { ApiError, get, post } from './api.js';
import { append, h, icon } from './dom.js';

const MIN_PASSWORD = 6;
const MAX_NAME = 100;

function validEmail(value) {
  const email = value.trim();
  const at = email.indexOf('@');
  if (at <= 0 || at !== email.lastIndexOf('@') || /\s/.test(email) || email.length > 254) return false;
  const domain = email.slice(at + 1);
  return domain.includes('.') && !domain.startsWith('.') && !domain.endsWith('.');
}

const RULES = {
  fullName: (value) => {
    if (!value.trim()) return 'Enter your name.';
    if (value.trim().length > MAX_NAME) return `Keep it under ${MAX_NAME} characters.`;
    return '';
  },
  email: (value) => {
    if (!value.trim()) return 'Enter your email address.';
    if (!validEmail(value)) return 'That does not look like an email address.';
    return '';
  },
  password: (value, mode) => {
    if (!value) return 'Enter your password.';
    if (mode === 'signup' && value.length < MIN_PASSWORD) return `Use at least ${MIN_PASSWORD} characters.`;
    return '';
  },
};

export function field({ name, label, type, autocomplete, iconName, hint }) {
  const id = `field-${name}`;
  const input = h('input', {
    id,
    name,
    type,
    autocomplete,
    required: true,
    spellcheck: 'false',
    'aria-describedby': `${id}-error${hint ? ` ${id}-hint` : ''}`,
    'data-testid': `${name}-input`,
  });
  const wrap = h('div', { class: 'input-wrap' }, icon(iconName, 'icon input-icon'), input);
  if (type === 'password') {
    const toggle = h('button', {
      class: 'icon-btn input-action',
      type: 'button',
      'aria-label': 'Show password',
      'aria-pressed': 'false',
    }, icon('eye'));
    toggle.addEventListener('click', () => {
      const showing = input.type === 'text';
      input.type = showing ? 'password' : 'text';
      toggle.setAttribute('aria-label', showing ? 'Show password' : 'Hide password');
      toggle.setAttribute('aria-pressed', String(!showing));
      toggle.replaceChildren(icon(showing ? 'eye' : 'eyeOff'));
    });
    wrap.appendChild(toggle);
  }
  const error = h('p', { class: 'field-error', id: `${id}-error`, 'data-testid': `${name}-error` });
  return {
    name,
    input,
    error,
    element: h('div', { class: 'field' },
      h('label', { for: id, text: label }),
      wrap,
      hint ? h('p', { class: 'field-hint', id: `${id}-hint`, text: hint }) : null,
      error),
  };
}

export function setError(entry, message) {
  entry.error.textContent = message;
  entry.input.setAttribute('aria-invalid', message ? 'true' : 'false');
  entry.element.classList.toggle('invalid', !!message);
}

/** Renders the login (`mode` = `login`) or sign-up page; `onSignedIn(user)` once it worked. */
export function authView(mode, { onSignedIn, navigate }) {
  const signup = mode === 'signup';
  // An invitation link's secret is in the fragment (`#invite=`): kept for the sign-up, dropped
  // from the address bar and history.
  const invite = signup ? new URLSearchParams(location.hash.slice(1)).get('invite') || '' : '';
  if (signup && location.hash) history.replaceState(history.state, '', location.pathname);
  const fields = [
    signup && field({ name: 'fullName', label: 'Full name', type: 'text', autocomplete: 'name', iconName: 'user' }),
    field({ name: 'email', label: 'Email', type: 'email', autocomplete: 'email', iconName: 'mail' }),
    field({
      name: 'password',
      label: 'Password',
      type: 'password',
      autocomplete: signup ? 'new-password' : 'current-password',
      iconName: 'lock',
      hint: signup ? `At least ${MIN_PASSWORD} characters.` : null,
    }),
  ].filter(Boolean);
  const byName = Object.fromEntries(fields.map((entry) => [entry.name, entry]));
  const formError = h('div', { class: 'form-error', role: 'alert', 'data-testid': 'form-error', hidden: true });
  const submit = h('button', { class: 'btn btn-primary btn-block', type: 'submit', 'data-testid': 'auth-submit' },
    h('span', { class: 'btn-label', text: signup ? 'Create account' : 'Sign in' }),
    h('span', { class: 'spinner', 'aria-hidden': 'true' }));

  const touched = new Set();
  const check = (entry) => {
    const message = RULES[entry.name](entry.input.value, mode);
    setError(entry, message);
    return message;
  };
  for (const entry of fields) {
    entry.input.addEventListener('blur', () => {
      if (entry.input.value !== '') touched.add(entry.name);
      if (touched.has(entry.name)) check(entry);
    });
    entry.input.addEventListener('input', () => {
      formError.hidden = true;
      if (touched.has(entry.name)) check(entry);
    });
  }

  const form = h('form', { class: 'auth-form', novalidate: true, 'aria-describedby': 'auth-sub' },
    fields.map((entry) => entry.element), formError, submit);

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    formError.hidden = true;
    let firstInvalid = null;
    for (const entry of fields) {
      touched.add(entry.name);
      if (check(entry) && !firstInvalid) firstInvalid = entry;
    }
    if (firstInvalid) {
      firstInvalid.input.focus();
      return;
    }
    const body = Object.fromEntries(fields.map((entry) => [
      entry.name, entry.name === 'password' ? entry.input.value : entry.input.value.trim(),
    ]));
    if (invite) body.invite = invite;
    submit.disabled = true;
    form.classList.add('busy');
    try {
      const user = await post(signup ? '/api/auth/signup' : '/api/auth/login', body);
      onSignedIn(user);
    } catch (error) {
      showServerError(error);
    } finally {
      submit.disabled = false;
      form.classList.remove('busy');
    }
  });

  function showServerError(error) {
    const message = error instanceof ApiError ? error.message : 'Something went wrong. Try again.';
    const lower = message.toLowerCase();
    // The server's message, next to the field it is about when it names one.
    const target = lower.includes('invalid credentials') ? null
      : lower.includes('email') ? byName.email
        : lower.includes('password') ? byName.password
          : lower.includes('name') ? byName.fullName
            : null;
    if (target) {
      setError(target, message);
      target.input.focus();
    } else {
      formError.replaceChildren(icon('alert'), h('span', {
        text: lower.includes('invalid credentials') ? 'Invalid credentials: check your email and password.' : message,
      }));
      formError.hidden = false;
    }
  }

  // What this server allows (SIGNUP_MODE): without an open sign-up, the sign-in page does not
  // offer one, and the sign-up page without an invitation says why instead of a form.
  const switcher = h('p', { class: 'auth-switch' });
  const notice = h('div', { class: 'form-error', role: 'status', 'data-testid': 'signup-notice', hidden: true });
  get('/api/auth/signup-mode').then(({ signupMode }) => {
    if (signupMode === 'open' || (signupMode === 'invite' && invite)) return;
    if (!signup) {
      switcher.hidden = true;
      return;
    }
    form.hidden = true;
    notice.replaceChildren(icon('alert'), h('span', {
      text: signupMode === 'closed'
        ? 'Sign-up is closed on this server. Ask its administrator for an account.'
        : 'Sign-up on this server needs an invitation: open the link the administrator sent you.',
    }));
    notice.hidden = false;
  }, () => {});

  const link = (href, text) => h('a', {
    href,
    'data-testid': signup ? 'to-login' : 'to-signup',
    onclick: (event) => {
      event.preventDefault();
      navigate(href);
    },
  }, text);

  return h('main', { class: 'auth', 'data-testid': `${mode}-page` },
    h('section', { class: 'auth-panel' },
      h('div', { class: 'auth-card' },
        h('div', { class: 'brand' }, h('span', { class: 'logo' }, icon('chat', 'icon logo-icon')), h('span', { class: 'brand-name', text: 'Courier' })),
        h('h1', { text: signup ? 'Create your account' : 'Welcome back' }),
        h('p', {
          class: 'muted',
          id: 'auth-sub',
          text: signup ? 'Start talking in seconds. No app to install.' : 'Sign in to pick up your conversations.',
        }),
        form,
        signup ? null : h('p', { class: 'auth-forgot' }, h('a', {
          href: '/forgot-password',
          'data-testid': 'to-forgot',
          onclick: (event) => {
            event.preventDefault();
            navigate('/forgot-password');
          },
        }, 'Forgot your password?')),
        notice,
        append(switcher, [
          signup ? 'Already have an account? ' : 'New to Courier? ',
          link(signup ? '/login' : '/signup', signup ? 'Sign in' : 'Create an account')]))),
    h('aside', { class: 'auth-art', 'aria-hidden': 'true' },
      h('div', { class: 'art-inner' },
        h('div', { class: 'art-bubble art-theirs', text: 'Are we still on for Friday?' }),
        h('div', { class: 'art-bubble art-mine', text: 'Yes! I booked the table for 8.' }),
        h('div', { class: 'art-bubble art-theirs', text: 'Perfect, see you there' }),
        h('div', { class: 'art-typing' }, h('span'), h('span'), h('span')),
        h('h2', { text: 'Conversations that keep up with you.' }),
        h('p', { text: 'Real-time messages, photos, read receipts and presence — all from one small server you run yourself.' }))));
}
