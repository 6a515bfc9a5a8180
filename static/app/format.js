// Dates, names and previews, formatted for people.

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: 'numeric', minute: '2-digit' });
const weekdayFormat = new Intl.DateTimeFormat(undefined, { weekday: 'short' });
const shortDateFormat = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short' });
const fullDateFormat = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short', year: 'numeric' });
const dayLongFormat = new Intl.DateTimeFormat(undefined, { weekday: 'long', day: 'numeric', month: 'long' });
const dayYearFormat = new Intl.DateTimeFormat(undefined, { weekday: 'long', day: 'numeric', month: 'long', year: 'numeric' });
const monthYearFormat = new Intl.DateTimeFormat(undefined, { month: 'long', year: 'numeric' });
const exactFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'full', timeStyle: 'short' });

const DAY_MS = 24 * 60 * 60 * 1000;

export function toDate(value) {
  return value instanceof Date ? value : new Date(value);
}

export function startOfDay(date) {
  const day = new Date(date);
  day.setHours(0, 0, 0, 0);
  return day;
}

/** `2026-11-28` in local time: the key of a day separator. */
export function dayKey(value) {
  const date = toDate(value);
  const pad = (n) => String(n).padStart(2, '0');
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
}

function daysAgo(date, now = new Date()) {
  return Math.round((startOfDay(now) - startOfDay(date)) / DAY_MS);
}

/** `14:05`. */
export function clockTime(value) {
  return timeFormat.format(toDate(value));
}

/** The full date and time, for a tooltip. */
export function exactTime(value) {
  return exactFormat.format(toDate(value));
}

/** For the sidebar: the time today, the weekday this week, else the date. */
export function listTime(value) {
  const date = toDate(value);
  const ago = daysAgo(date);
  if (ago <= 0) return timeFormat.format(date);
  if (ago === 1) return 'Yesterday';
  if (ago < 7) return weekdayFormat.format(date);
  if (date.getFullYear() === new Date().getFullYear()) return shortDateFormat.format(date);
  return fullDateFormat.format(date);
}

/** For a day separator: Today, Yesterday, or the weekday and date. */
export function dayLabel(value) {
  const date = toDate(value);
  const ago = daysAgo(date);
  if (ago <= 0) return 'Today';
  if (ago === 1) return 'Yesterday';
  if (date.getFullYear() === new Date().getFullYear()) return dayLongFormat.format(date);
  return dayYearFormat.format(date);
}

/** `November 2026`. */
export function monthYear(value) {
  return monthYearFormat.format(toDate(value));
}

/** Up to two initials: `Ada Lovelace` → `AL`. */
export function initials(name) {
  const words = String(name || '?').trim().split(/\s+/).filter(Boolean);
  const letters = words.length > 1 ? [words[0], words[words.length - 1]] : words;
  return letters.map((word) => Array.from(word)[0] || '').join('').toUpperCase() || '?';
}

/** A stable palette slot (0–7) for a user id, so a person keeps their colour everywhere. */
export function colorSlot(id) {
  let hash = 0;
  for (const char of String(id)) hash = (hash * 31 + char.charCodeAt(0)) >>> 0;
  return hash % 8;
}

/** One line of a message for the sidebar or a notification. */
export function preview(message, meId) {
  if (!message) return '';
  if (message.isDeleted) return 'Message deleted';
  const text = (message.text || '').replace(/\s+/g, ' ').trim();
  if (message.isSystemMessage) return text;
  const attached = message.image ? 'Photo' : message.fileUrl ? `File: ${message.fileName || 'file'}` : '';
  const body = text || attached;
  const shown = attached && text ? `${attached} · ${text}` : body;
  return message.senderId === meId ? `You: ${shown}` : shown;
}

export function plural(count, one, many) {
  return `${count} ${count === 1 ? one : many}`;
}

/**
 * A user's name as others see it: with the server's tag (`#K3QZ`) when another listed user's
 * name looks the same, so two "Alice Martin"s can be told apart.
 */
export function displayName(user) {
  if (!user) return '';
  return user.nameTag ? `${user.fullName} #${user.nameTag}` : (user.fullName || '');
}
