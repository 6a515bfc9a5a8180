// Avatars: the profile picture, or initials on a colour that is stable per person; with an
// optional presence dot.

import { h, safeUrl } from './dom.js';
import { colorSlot, initials } from './format.js';

/** `size`: `sm`, `md`, `lg` or `xl`. */
export function avatar(user, { size = 'md', presence = null } = {}) {
  const wrapper = h('span', { class: `avatar avatar-${size}` });
  fillAvatar(wrapper, user, presence);
  return wrapper;
}

/** Updates an avatar made by `avatar` in place (the image is kept when the URL is unchanged). */
export function fillAvatar(wrapper, user, presence = null) {
  const url = safeUrl(user?.profilePic || '');
  const name = user?.fullName || '';
  const signature = `${url}|${name}|${user?._id}`;
  if (wrapper.dataset.signature !== signature) {
    wrapper.dataset.signature = signature;
    for (const child of [...wrapper.children]) {
      if (!child.classList.contains('presence')) child.remove();
    }
    const face = url
      ? h('img', { class: 'avatar-img', src: url, alt: '', loading: 'lazy', decoding: 'async', draggable: 'false' })
      : h('span', { class: `avatar-initials palette-${colorSlot(user?._id || name)}`, text: initials(name) });
    wrapper.prepend(face);
  }
  let dot = wrapper.querySelector('.presence');
  if (presence === null) {
    dot?.remove();
    return wrapper;
  }
  if (!dot) {
    dot = h('span', { class: 'presence', 'data-testid': 'presence' });
    wrapper.appendChild(dot);
  }
  dot.classList.toggle('online', !!presence);
  dot.dataset.online = presence ? 'true' : 'false';
  return wrapper;
}
