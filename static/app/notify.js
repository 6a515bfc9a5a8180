// Desktop notifications (the Notification API) for messages in conversations not on screen.
// Asked for only when the user clicks "Turn on", as browsers require a gesture.

import { preview } from './format.js';

const DISMISSED_KEY = 'courier.notifications.dismissed';

export function notificationsSupported() {
  return typeof window.Notification === 'function';
}

export function notificationPermission() {
  return notificationsSupported() ? Notification.permission : 'unsupported';
}

/** Whether to offer turning notifications on. */
export function shouldOffer() {
  if (notificationPermission() !== 'default') return false;
  try {
    return localStorage.getItem(DISMISSED_KEY) !== '1';
  } catch {
    return true;
  }
}

export function dismissOffer() {
  try {
    localStorage.setItem(DISMISSED_KEY, '1');
  } catch {
    // Storage disabled: the offer comes back next visit.
  }
}

export async function requestPermission() {
  if (!notificationsSupported()) return 'unsupported';
  try {
    return await Notification.requestPermission();
  } catch {
    return Notification.permission;
  }
}

/** Shows a notification for `message` from `user`; clicking it calls `open`. */
export function notify(user, message, meId, open) {
  if (notificationPermission() !== 'granted') return;
  try {
    const notification = new Notification(user ? user.fullName : 'New message', {
      body: preview(message, meId) || 'New message',
      tag: `courier-${message.senderId}`,
      icon: '/app/icon.svg',
    });
    notification.onclick = () => {
      window.focus();
      open();
      notification.close();
    };
  } catch {
    // Some browsers (Android Chrome) only allow notifications from a service worker.
  }
}
