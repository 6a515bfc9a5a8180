// The profile page: the picture (cropped and downscaled in the browser, then uploaded), account
// details, appearance (system, light or dark), notifications, the password and the sessions.

import { ApiError, put } from './api.js';
import { avatar, fillAvatar } from './avatar.js';
import { h, icon, toast } from './dom.js';
import { emailSettingsRow } from './email.js';
import { nameEditor } from './rename.js';
import { securitySection } from './password.js';
import { monthYear } from './format.js';
import { ImageProblem, prepareImage } from './images.js';
import { notificationPermission, requestPermission } from './notify.js';
import { getThemeChoice, setThemeChoice } from './theme.js';

export function profileView({ me, onUpdated, navigate, onLogout }) {
  const picture = avatar(me, { size: 'xl' });
  const fileInput = h('input', {
    type: 'file',
    accept: 'image/png,image/jpeg,image/gif,image/webp',
    class: 'visually-hidden',
    id: 'profile-file',
    'data-testid': 'profile-file',
    tabindex: '-1',
  });
  const status = h('p', { class: 'upload-status muted', role: 'status', 'data-testid': 'profile-status' });
  const changeButton = h('button', {
    class: 'btn btn-secondary',
    type: 'button',
    'data-testid': 'change-photo',
    onclick: () => fileInput.click(),
  }, icon('camera'), h('span', { text: 'Change photo' }));
  const cameraBadge = h('button', {
    class: 'camera-badge',
    type: 'button',
    'aria-label': 'Change profile photo',
    onclick: () => fileInput.click(),
  }, icon('camera'));

  fileInput.addEventListener('change', async () => {
    const file = fileInput.files?.[0];
    fileInput.value = '';
    if (!file) return;
    picture.classList.add('uploading');
    changeButton.disabled = true;
    status.textContent = 'Uploading…';
    try {
      const prepared = await prepareImage(file, { maxSide: 512, square: true });
      const updated = await put('/api/auth/update-profile', { profilePic: prepared.dataUrl });
      fillAvatar(picture, updated);
      onUpdated(updated);
      status.textContent = 'Profile photo updated.';
      toast('Profile photo updated');
    } catch (error) {
      const message = error instanceof ImageProblem || error instanceof ApiError
        ? error.message : 'The photo could not be uploaded.';
      status.textContent = message;
      toast(message, 'error');
    } finally {
      picture.classList.remove('uploading');
      changeButton.disabled = false;
    }
  });

  const themeChoice = getThemeChoice();
  const themeOptions = [['system', 'System', 'monitor'], ['light', 'Light', 'sun'], ['dark', 'Dark', 'moon']];
  const themeGroup = h('div', { class: 'segmented', role: 'radiogroup', 'aria-label': 'Theme' },
    themeOptions.map(([value, label, iconName]) => {
      const button = h('button', {
        type: 'button',
        role: 'radio',
        class: 'segment',
        'aria-checked': String(themeChoice === value),
        'data-value': value,
      }, icon(iconName), h('span', { text: label }));
      button.addEventListener('click', () => {
        setThemeChoice(value);
        for (const other of themeGroup.children) other.setAttribute('aria-checked', String(other === button));
      });
      return button;
    }));

  const notifyRow = h('div', { class: 'setting-row' });
  const renderNotify = () => {
    const permission = notificationPermission();
    const text = {
      granted: 'On: you are notified of messages in other conversations.',
      denied: 'Blocked in this browser’s site settings.',
      default: 'Get a notification when a message arrives in another conversation.',
      unsupported: 'This browser does not support notifications.',
    }[permission];
    notifyRow.replaceChildren(
      h('div', {}, h('div', { class: 'setting-title', text: 'Desktop notifications' }), h('p', { class: 'muted small', text })),
      permission === 'default'
        ? h('button', {
          class: 'btn btn-secondary',
          type: 'button',
          onclick: async () => {
            await requestPermission();
            renderNotify();
          },
        }, icon('bell'), h('span', { text: 'Turn on' }))
        : null,
    );
  };
  renderNotify();

  const back = h('a', {
    class: 'btn btn-ghost',
    href: '/',
    'data-testid': 'profile-back',
    onclick: (event) => {
      event.preventDefault();
      navigate('/');
    },
  }, icon('back'), h('span', { text: 'Back to chats' }));

  const detail = (label, value, testId) => h('div', { class: 'detail' },
    h('dt', { text: label }), h('dd', { text: value, 'data-testid': testId }));

  return h('main', { class: 'profile-page', 'data-testid': 'profile-page' },
    h('div', { class: 'profile-top' }, back),
    h('section', { class: 'profile-card card', 'aria-labelledby': 'profile-title' },
      h('div', { class: 'profile-hero' },
        h('div', { class: 'profile-picture' }, picture, cameraBadge),
        h('h1', { id: 'profile-title', text: me.fullName }),
        h('p', { class: 'muted', text: me.email }),
        changeButton, fileInput, status),
      h('dl', { class: 'details' },
        h('div', { class: 'detail' }, h('dt', { text: 'Full name' }), nameEditor(me, (user) => {
          onUpdated(user);
          document.getElementById('profile-title').textContent = user.fullName;
        })),
        detail('Email', me.email, 'profile-email'),
        detail('Member since', me.createdAt ? monthYear(me.createdAt) : '—', 'profile-since')),
      h('div', { class: 'settings' },
        h('h2', { text: 'Preferences' }),
        h('div', { class: 'setting-row' },
          h('div', {}, h('div', { class: 'setting-title', text: 'Appearance' }), h('p', { class: 'muted small', text: 'Follow the system or pick a theme.' })),
          themeGroup),
        notifyRow,
        emailSettingsRow()),
      securitySection({ onSignedOut: onLogout }),
      h('div', { class: 'profile-actions' },
        h('button', { class: 'btn btn-danger-ghost', type: 'button', 'data-testid': 'profile-logout', onclick: onLogout },
          icon('logout'), h('span', { text: 'Log out' })))));
}
