// Courier's web client: boot (who am I?), the routes (`/login`, `/signup`, `/profile`, `/` and
// `/chat/<userId>`, `/groups/<groupId>`, the password-reset pages and the pages e-mail links open), the app shell (sidebar, conversation, connection banner), the page title's
// unread count and desktop notifications.

import { get, onIdentityChanged, onUnauthorized, post } from './api.js';
import { authView } from './auth.js';
import { conversationView } from './conversation.js';
import { h, icon, toast } from './dom.js';
import { isLinkPage, linkPage } from './email.js';
import { notify } from './notify.js';
import { forgotPasswordView, resetPasswordView } from './password.js';
import { profileView } from './profile.js';
import { sidebarView } from './sidebar.js';
import {
  chatEntry, endSession, groupKey, on, reconnectNow, setActive, setMe, startSession, state, totalUnread,
} from './state.js';

const root = document.getElementById('root');
const CHAT_ROUTE = /^\/chat\/([0-9a-f]{24})\/?$/;
const GROUP_ROUTE = /^\/groups\/([0-9A-Za-z_-]{1,64})\/?$/;
let shell = null;

function mount(element) {
  if (root.firstElementChild === element && root.childElementCount === 1) return;
  root.replaceChildren(element);
}

export function navigate(path, { replace = false } = {}) {
  if (path !== location.pathname) {
    history[replace ? 'replaceState' : 'pushState']({}, '', path);
  }
  render();
}

function render() {
  const path = location.pathname;
  // Pages that e-mail links open work signed in or not: the link's token is the proof.
  if (isLinkPage(path)) {
    document.title = 'Courier';
    mount(linkPage(path, { navigate }));
    return;
  }
  if (path === '/reset-password') {
    document.title = 'Choose a new password · Courier';
    mount(resetPasswordView({ navigate }));
    return;
  }
  if (path === '/forgot-password' && !state.me) {
    document.title = 'Reset your password · Courier';
    mount(forgotPasswordView({ navigate }));
    return;
  }
  if (!state.me) {
    if (path !== '/login' && path !== '/signup') {
      navigate('/login', { replace: true });
      return;
    }
    const mode = path.slice(1);
    document.title = mode === 'signup' ? 'Create your account · Courier' : 'Sign in · Courier';
    mount(authView(mode, { onSignedIn: signedIn, navigate }));
    if (window.matchMedia('(pointer: fine)').matches) root.querySelector('input')?.focus();
    return;
  }
  if (path === '/login' || path === '/signup' || path === '/forgot-password') {
    navigate('/', { replace: true });
    return;
  }
  startSession();
  if (path === '/profile') {
    document.title = 'Profile · Courier';
    mount(profileView({
      me: state.me,
      navigate,
      onLogout: logout,
      onUpdated: (user) => {
        setMe(user);
      },
    }));
    return;
  }
  const direct = path.match(CHAT_ROUTE);
  const group = path.match(GROUP_ROUTE);
  const match = direct || group;
  if (!match && path !== '/') {
    navigate('/', { replace: true });
    return;
  }
  if (!shell) shell = createShell();
  mount(shell.element);
  setActive(direct ? direct[1] : group ? groupKey(group[1]) : null);
  shell.element.classList.toggle('conversation-open', !!match);
  updateTitle();
}

// Tabs of one browser share the cookie: when one signs in or out, the others reload into
// whoever the cookie now belongs to instead of showing one user and acting as another.
const tabs = typeof BroadcastChannel === 'undefined' ? null : new BroadcastChannel('courier-session');
if (tabs) {
  tabs.onmessage = (event) => {
    if ((event.data?.user ?? null) !== (state.me?._id ?? null)) location.reload();
  };
}

function signedIn(user) {
  setMe(user);
  tabs?.postMessage({ user: user._id });
  navigate('/', { replace: true });
}

async function logout() {
  try {
    await post('/api/auth/logout');
  } catch {
    // The cookie is http-only: if the server cannot be reached it stays, but the session here ends.
  }
  endSession();
  disposeShell();
  tabs?.postMessage({ user: null });
  navigate('/login', { replace: true });
}

function disposeShell() {
  if (!shell) return;
  shell.dispose();
  shell = null;
}

function updateTitle() {
  if (!state.me) return;
  const path = location.pathname;
  if (path === '/profile') return;
  const unread = totalUnread();
  const entry = state.activeId ? chatEntry(state.activeId) : null;
  const name = entry?.fullName || entry?.name;
  const base = name ? `${name} · Courier` : 'Courier';
  document.title = unread ? `(${unread}) ${base}` : base;
}

function createShell() {
  const sidebar = sidebarView({ navigate, onLogout: logout });
  const conversation = conversationView({ navigate });

  const bannerText = h('span', { class: 'banner-text', 'data-testid': 'connection-text' });
  const retryButton = h('button', { class: 'banner-btn', type: 'button', onclick: reconnectNow }, 'Retry now');
  const banner = h('div', { class: 'banner', role: 'status', hidden: true, 'data-testid': 'connection-banner' },
    icon('wifiOff'), bannerText, retryButton);
  let everOpen = false;
  let countdown = null;
  const started = Date.now();
  const renderBanner = () => {
    clearTimeout(countdown);
    const connection = state.connection;
    if (connection === 'open') everOpen = true;
    const show = connection !== 'open' && (everOpen || Date.now() - started > 3000 || connection === 'offline');
    banner.hidden = !show;
    banner.dataset.state = connection;
    if (!show) {
      if (connection !== 'open') countdown = setTimeout(renderBanner, 1000);
      return;
    }
    retryButton.hidden = connection === 'connecting';
    if (connection === 'offline') {
      bannerText.textContent = 'You are offline. New messages will appear when the connection is back.';
    } else if (connection === 'waiting') {
      const seconds = Math.max(1, Math.ceil((state.retryAt - Date.now()) / 1000));
      bannerText.textContent = `Connection lost. Reconnecting in ${seconds} s…`;
      countdown = setTimeout(renderBanner, 1000);
    } else {
      bannerText.textContent = 'Connecting…';
    }
  };
  const offConnection = on('connection', renderBanner);
  renderBanner();

  const element = h('div', { class: 'app-shell', 'data-testid': 'app' },
    banner, sidebar, h('main', { class: 'main-pane' }, conversation));
  return {
    element,
    dispose() {
      offConnection();
      clearTimeout(countdown);
      sidebar._dispose?.();
      conversation._dispose?.();
    },
  };
}

on('users', updateTitle);
on('active', updateTitle);
on('incoming', ({ message, user }) => {
  const key = message.groupId ? groupKey(message.groupId) : message.senderId;
  if (document.visibilityState === 'visible' && state.activeId === key) return;
  const path = message.groupId ? `/groups/${message.groupId}` : `/chat/${message.senderId}`;
  const title = message.groupId ? { fullName: user?.name || 'Group' } : user;
  notify(title, message, state.me?._id, () => navigate(path));
});
on('groupGone', (key) => {
  if (state.activeId !== key) return;
  toast('You are no longer a member of that group.', 'error');
  navigate('/', { replace: true });
});

window.addEventListener('popstate', render);

onUnauthorized(() => {
  if (!state.me) return;
  endSession();
  disposeShell();
  toast('Your session ended. Please sign in again.', 'error', 6000);
  navigate('/login', { replace: true });
});

// The server noticed that the cookie belongs to someone else now (a sign-in this tab did not
// hear about): start again as whoever that is.
onIdentityChanged(() => location.reload());

async function boot() {
  try {
    setMe(await get('/api/auth/check'));
  } catch (error) {
    if (error.status !== 401) {
      // The server could not be reached (not a missing session): offer to try again.
      mount(h('main', { class: 'boot-error' },
        h('span', { class: 'logo logo-lg' }, icon('chat', 'icon logo-icon')),
        h('h1', { text: 'Courier is not reachable' }),
        h('p', { class: 'muted', text: error.message }),
        h('button', { class: 'btn btn-primary', type: 'button', onclick: boot }, 'Try again')));
      return;
    }
  }
  render();
}

boot();
