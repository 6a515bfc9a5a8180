// Light and dark themes. With no choice stored the page follows prefers-color-scheme; a choice is
// remembered in localStorage and applied before first paint by theme-init.js.

const KEY = 'courier.theme';
const media = window.matchMedia('(prefers-color-scheme: dark)');
const listeners = new Set();

/** `system`, `light` or `dark`. */
export function getThemeChoice() {
  try {
    const stored = localStorage.getItem(KEY);
    return stored === 'light' || stored === 'dark' ? stored : 'system';
  } catch {
    return 'system';
  }
}

/** The theme showing now: `light` or `dark`. */
export function currentTheme() {
  const choice = getThemeChoice();
  if (choice !== 'system') return choice;
  return media.matches ? 'dark' : 'light';
}

export function setThemeChoice(choice) {
  try {
    if (choice === 'light' || choice === 'dark') localStorage.setItem(KEY, choice);
    else localStorage.removeItem(KEY);
  } catch {
    // Storage disabled: the choice lasts for this page.
  }
  apply(choice);
}

/** Switches between light and dark (and remembers it). */
export function toggleTheme() {
  setThemeChoice(currentTheme() === 'dark' ? 'light' : 'dark');
}

export function onThemeChange(listener) {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

function apply(choice) {
  const root = document.documentElement;
  if (choice === 'light' || choice === 'dark') root.dataset.theme = choice;
  else delete root.dataset.theme;
  for (const listener of listeners) listener(currentTheme());
}

media.addEventListener('change', () => {
  if (getThemeChoice() === 'system') apply('system');
});
