// End-to-end test of the chat client in headless Chromium, against a real Courier server.
//
//   node tests/browser/chat.mjs <base-url> [screenshot-dir]
//
// Run by `tests/web_client.rs` (the_chat_client_works_end_to_end_in_a_real_browser), which
// starts the server. Two people sign up in two browser contexts; Alice sends text and a photo,
// Bob sees both live (online dot, unread badge), replies, and each sees the other's read
// receipt; Bob's network is cut and restored, and his page reloads, while Alice keeps writing:
// every message shows up exactly once. Markup in a message stays text. A send that fails offline
// is retried. Older history loads on scrolling up. Screenshots (desktop and phone, light and
// dark) go to the screenshot directory. CHROMIUM_PATH overrides /usr/bin/chromium.
import { mkdirSync } from 'node:fs';
import { chromium } from 'playwright-core';

const [base, screenshotArg] = process.argv.slice(2);
if (!base) {
  console.error('usage: node tests/browser/chat.mjs <base-url> [screenshot-dir]');
  process.exit(2);
}
const screenshots = screenshotArg || 'target/screenshots';
mkdirSync(screenshots, { recursive: true });

const started = Date.now();
const problems = [];
const pages = [];
const step = (text) => console.log(`- ${text} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
const check = (condition, message) => {
  if (!condition) throw new Error(message);
};
// The page background (`--bg`) of each theme, as getComputedStyle reports it.
const LIGHT_BG = 'rgb(238, 240, 246)';
const DARK_BG = 'rgb(9, 11, 16)';
const pageBackground = (page) => page.evaluate(() => getComputedStyle(document.body).backgroundColor);
const run = Date.now().toString(36);
const alice = { name: 'Alice Martin', email: `alice.${run}@example.com`, password: 'correct horse' };
const bob = { name: 'Bob Chen', email: `bob.${run}@example.com`, password: 'battery staple' };

// Console noise that is expected: the session check before signing in (and a tab's requests
// after another tab signed out or in as someone else), and requests made while a test has cut
// the network.
const EXPECTED_CONSOLE = [/status of 401/, /status of 409/, /ERR_INTERNET_DISCONNECTED/, /WebSocket connection to .* failed/, /ERR_NETWORK_CHANGED/];
// Errors a step provokes on purpose (a taken email, a wrong password), allowed once each.
const allowed = [];
const allowOnce = (label, pattern) => allowed.push({ label, pattern });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
  headless: true,
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-dev-shm-usage',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--no-first-run',
    '--disable-quic',
  ],
});

async function newPerson(label, options = {}) {
  const context = await browser.newContext({
    viewport: { width: 1280, height: 800 },
    colorScheme: 'light',
    locale: 'en-US',
    ...options,
  });
  // The client must work offline from the internet: nothing may leave this server.
  await context.route('**/*', (route) => {
    const url = new URL(route.request().url());
    if (url.origin !== base && !url.protocol.startsWith('data') && !url.protocol.startsWith('blob')) {
      problems.push(`${label}: request outside the server: ${url.href}`);
      return route.abort();
    }
    return route.continue();
  });
  await context.addInitScript(() => {
    window.__xss = 0;
    window.__notifications = [];
    if (typeof window.Notification === 'function') {
      const Native = window.Notification;
      window.Notification = class extends Native {
        constructor(title, options) {
          super(title, options);
          window.__notifications.push({ title, body: options && options.body });
        }
      };
    }
  });
  const page = await context.newPage();
  watch(page, label);
  pages.push({ page, label });
  return { context, page, label };
}

function watch(page, label) {
  page.setDefaultTimeout(10000);
  page.on('pageerror', (error) => problems.push(`${label}: page error: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() !== 'error') return;
    const text = message.text();
    if (EXPECTED_CONSOLE.some((pattern) => pattern.test(text))) return;
    const index = allowed.findIndex((entry) => entry.label === label && entry.pattern.test(text));
    if (index >= 0) allowed.splice(index, 1);
    else problems.push(`${label}: console error: ${text}`);
  });
  page.on('dialog', (dialog) => {
    problems.push(`${label}: unexpected dialog: ${dialog.message()}`);
    dialog.dismiss().catch(() => {});
  });
}

const messageTexts = (page) => page.$$eval('[data-testid="message-list"] [data-testid="message-text"]', (nodes) => nodes.map((node) => node.textContent));
const messageTextLocator = (page, text) => page.locator('[data-testid="message-text"]').filter({ hasText: text });
const contact = (page, userId) => page.locator(`[data-testid="contact"][data-user-id="${userId}"]`);

async function countOf(page, text) {
  return (await messageTexts(page)).filter((shown) => shown === text).length;
}

async function expectOnce(page, texts, who) {
  for (const text of texts) await messageTextLocator(page, text).first().waitFor();
  // A late duplicate would arrive within moments of the original.
  await page.waitForTimeout(400);
  for (const text of texts) {
    const count = await countOf(page, text);
    check(count === 1, `${who} shows "${text}" ${count} times`);
  }
  const ids = await page.$$eval('[data-testid="message"][data-id]', (nodes) => nodes.map((node) => node.dataset.id));
  check(new Set(ids).size === ids.length, `${who} shows a message id twice`);
}

/** Types into the composer and presses Enter; waits until the server took it. */
async function send(page, text) {
  const composer = page.getByTestId('composer');
  await composer.fill(text);
  await composer.press('Enter');
  const bubble = page.locator('[data-testid="message"].mine').filter({ hasText: text }).last();
  await bubble.and(page.locator('[data-status="delivered"], [data-status="seen"]')).waitFor();
}

async function signUp(person, user, { first = false } = {}) {
  const { page } = person;
  await page.getByTestId('fullName-input').fill(user.name);
  await page.getByTestId('email-input').fill(user.email);
  await page.getByTestId('password-input').fill(user.password);
  await page.getByTestId('auth-submit').click();
  if (!first) await page.getByTestId('app').waitFor();
}

/** A PNG drawn in the page (a landscape, or a face-like avatar), as a Buffer. */
async function drawPng(page, kind, width, height) {
  const base64 = await page.evaluate(({ kind, width, height }) => {
    const canvas = document.createElement('canvas');
    canvas.width = width;
    canvas.height = height;
    const g = canvas.getContext('2d');
    if (kind === 'landscape') {
      const sky = g.createLinearGradient(0, 0, 0, height);
      sky.addColorStop(0, '#1e3a8a');
      sky.addColorStop(0.55, '#f472b6');
      sky.addColorStop(0.75, '#fdba74');
      g.fillStyle = sky;
      g.fillRect(0, 0, width, height);
      g.fillStyle = '#fde68a';
      g.beginPath();
      g.arc(width * 0.68, height * 0.62, height * 0.12, 0, Math.PI * 2);
      g.fill();
      const ridges = [['#3b1d5a', 0.7], ['#2a1546', 0.8], ['#160b2b', 0.9]];
      ridges.forEach(([color, level], index) => {
        g.fillStyle = color;
        g.beginPath();
        g.moveTo(0, height);
        for (let x = 0; x <= width; x += width / 12) {
          g.lineTo(x, height * level - Math.abs(Math.sin((x / width) * (5 + index * 2) + index)) * height * 0.18);
        }
        g.lineTo(width, height);
        g.fill();
      });
    } else {
      const background = g.createLinearGradient(0, 0, width, height);
      background.addColorStop(0, '#fbcfe8');
      background.addColorStop(1, '#a5b4fc');
      g.fillStyle = background;
      g.fillRect(0, 0, width, height);
      g.fillStyle = '#7c3aed';
      g.beginPath();
      g.arc(width / 2, height * 1.05, width * 0.42, 0, Math.PI * 2);
      g.fill();
      g.fillStyle = '#fcd9b8';
      g.beginPath();
      g.arc(width / 2, height * 0.42, width * 0.2, 0, Math.PI * 2);
      g.fill();
      g.fillStyle = '#3f2a1d';
      g.beginPath();
      g.arc(width / 2, height * 0.36, width * 0.21, Math.PI, Math.PI * 2);
      g.fill();
    }
    return canvas.toDataURL('image/png').split(',')[1];
  }, { kind, width, height });
  return Buffer.from(base64, 'base64');
}

let exitCode = 0;
try {
  const a = await newPerson('alice');
  const b = await newPerson('bob');

  step('sign-up validates inline and shows the server’s errors');
  await a.page.goto(`${base}/`);
  await a.page.waitForURL(`${base}/login`);
  await a.page.getByTestId('login-page').waitFor();
  await a.page.screenshot({ path: `${screenshots}/login-desktop-light.png` });
  await a.page.getByTestId('to-signup').click();
  await a.page.getByTestId('signup-page').waitFor();
  await a.page.getByTestId('auth-submit').click();
  await a.page.getByTestId('fullName-error').filter({ hasText: 'Enter your name' }).waitFor();
  await a.page.getByTestId('email-input').fill('not-an-email');
  await a.page.getByTestId('password-input').fill('123');
  await a.page.getByTestId('password-input').blur();
  await a.page.getByTestId('email-error').filter({ hasText: 'does not look like an email' }).waitFor();
  await a.page.getByTestId('password-error').filter({ hasText: 'at least 6' }).waitFor();
  await a.page.screenshot({ path: `${screenshots}/signup-validation-desktop-light.png` });
  await signUp(a, alice);
  await a.page.waitForURL(`${base}/`);
  alice.id = await a.page.evaluate(async () => (await (await fetch('/api/auth/check')).json())._id);

  await b.page.goto(`${base}/signup`);
  allowOnce('bob', /status of 400/);
  await signUp(b, { ...bob, email: alice.email.toUpperCase() }, { first: true });
  await b.page.getByTestId('email-error').filter({ hasText: 'Email already exists' }).waitFor();
  await b.page.getByTestId('email-input').fill(bob.email);
  await b.page.getByTestId('auth-submit').click();
  await b.page.getByTestId('app').waitFor();
  bob.id = await b.page.evaluate(async () => (await (await fetch('/api/auth/check')).json())._id);

  step('Alice sets a profile photo (downscaled in the browser)');
  await a.page.getByTestId('open-profile').click();
  await a.page.getByTestId('profile-page').waitFor();
  const avatarPng = await drawPng(a.page, 'avatar', 900, 700);
  await a.page.getByTestId('profile-file').setInputFiles({ name: 'me.png', mimeType: 'image/png', buffer: avatarPng });
  await a.page.getByTestId('profile-status').filter({ hasText: 'Profile photo updated' }).waitFor();
  const picture = await a.page.locator('.profile-picture img.avatar-img').getAttribute('src');
  check(picture && picture.startsWith('/uploads/'), `profile picture URL: ${picture}`);
  await a.page.screenshot({ path: `${screenshots}/profile-desktop-light.png` });
  step('the profile asks Alice to confirm her address; a made-up link says so');
  await a.page.getByTestId('email-settings').filter({ hasText: 'Confirm' }).waitFor();
  await a.page.getByTestId('resend-verification').waitFor();
  const linkPage = await a.context.newPage();
  await linkPage.goto(`${base}/verify-email#token=made-up-token`);
  await linkPage.locator('[data-testid="link-status"][data-outcome="failed"]').waitFor();
  const linkText = await linkPage.getByTestId('link-status').textContent();
  check(/invalid or has expired/.test(linkText), `a made-up link is refused: ${linkText}`);
  check(!(await linkPage.evaluate(() => location.hash)), 'the token leaves the address bar');
  await linkPage.close();
  step('Alice renames herself and back');
  for (const name of ['Alice M.', alice.name]) {
    await a.page.getByTestId('edit-name').click();
    await a.page.getByTestId('name-input').fill(name);
    await a.page.getByTestId('save-name').click();
    await a.page.getByTestId('profile-name').filter({ hasText: name }).getByTestId('edit-name').waitFor();
    const title = await a.page.locator('#profile-title').textContent();
    check(title === name, `the profile title follows the new name (${title})`);
  }
  await a.page.getByTestId('profile-back').click();

  step('Alice sees Bob online and opens the conversation');
  await contact(a.page, bob.id).and(a.page.locator('[data-online="true"]')).waitFor();
  const listedName = await contact(a.page, bob.id).locator('.contact-name').textContent();
  check(listedName === bob.name, `the sidebar shows Bob's name as it is, not ${JSON.stringify(listedName)}`);
  await contact(a.page, bob.id).click();
  await a.page.waitForURL(`${base}/chat/${bob.id}`);
  await a.page.getByTestId('chat-name').filter({ hasText: bob.name }).waitFor();
  await a.page.getByTestId('chat-status').filter({ hasText: 'Online' }).waitFor();
  await a.page.getByTestId('conversation-start').waitFor();

  step('Alice sends a text and a photo');
  const hello = 'Hi Bob! Are you still up for the hike on Saturday?';
  await send(a.page, hello);
  const photo = await drawPng(a.page, 'landscape', 2600, 1600);
  await a.page.getByTestId('image-input').setInputFiles({ name: 'ridge.png', mimeType: 'image/png', buffer: photo });
  await a.page.getByTestId('attachment-preview').waitFor();
  const previewSrc = await a.page.locator('[data-testid="attachment-preview"] img').getAttribute('src');
  check(previewSrc.startsWith('data:image/'), 'the preview shows the picked photo');
  const caption = 'This was the view from the ridge last time';
  await send(a.page, caption);
  check(await a.page.getByTestId('attachment-preview').isHidden(), 'the preview is cleared after sending');

  step('Bob sees both in real time, with the online dot and the unread badge');
  const bobsAlice = contact(b.page, alice.id);
  await bobsAlice.getByTestId('unread-badge').filter({ hasText: /^2$/ }).waitFor();
  await bobsAlice.and(b.page.locator('[data-online="true"]')).waitFor();
  const bobPreview = await bobsAlice.getByTestId('contact-preview').textContent();
  check(bobPreview.includes(caption), `sidebar preview: ${bobPreview}`);
  await b.page.screenshot({ path: `${screenshots}/sidebar-unread-desktop-light.png` });
  await bobsAlice.click();
  await expectOnce(b.page, [hello, caption], 'Bob');
  await b.page.getByTestId('unread-marker').waitFor();
  const image = b.page.locator('[data-testid="message-image"]').first();
  await image.waitFor();
  await b.page.waitForFunction(() => {
    const img = document.querySelector('[data-testid="message-image"]');
    return img && img.complete && img.naturalWidth > 0;
  });
  const size = await image.evaluate((img) => [img.naturalWidth, img.naturalHeight]);
  check(size[0] <= 2048 && size[1] <= 2048, `the photo was downscaled before upload: ${size}`);
  await bobsAlice.getByTestId('unread-badge').waitFor({ state: 'hidden' });

  step('the photo opens full size');
  await image.click();
  await b.page.getByTestId('lightbox').waitFor();
  await b.page.keyboard.press('Escape');
  await b.page.getByTestId('lightbox').waitFor({ state: 'hidden' });

  step('Alice sees that Bob read her messages');
  await a.page.locator('[data-testid="message"].mine[data-status="seen"]').filter({ hasText: caption }).waitFor();
  await a.page.getByTestId('seen').waitFor();

  step('Bob types (Alice sees it) and replies; Shift+Enter makes a newline');
  await b.page.getByTestId('composer').pressSequentially('Abso', { delay: 20 });
  await a.page.getByTestId('typing').waitFor();
  await a.page.getByTestId('chat-status').filter({ hasText: 'typing' }).waitFor();
  await a.page.screenshot({ path: `${screenshots}/typing-desktop-light.png` });
  const reply = 'Absolutely! That view is unreal. I will bring the snacks.';
  await send(b.page, reply);
  await messageTextLocator(a.page, reply).waitFor();
  await a.page.getByTestId('typing').waitFor({ state: 'hidden' });
  await b.page.getByTestId('composer').fill('Meet at the trailhead?');
  await b.page.getByTestId('composer').press('Shift+Enter');
  await b.page.getByTestId('composer').pressSequentially('8:30 works for me');
  await b.page.getByTestId('composer').press('Enter');
  const twoLines = 'Meet at the trailhead?\n8:30 works for me';
  await messageTextLocator(a.page, '8:30 works for me').waitFor();
  check((await countOf(a.page, twoLines)) === 1, 'a Shift+Enter message arrives as one message with a newline');
  step('Bob sees Alice’s read receipt');
  await b.page.locator('[data-testid="message"].mine[data-status="seen"]').filter({ hasText: '8:30 works' }).waitFor();

  step('markup in a message renders as text');
  const script = '<script>alert(1)</script>';
  const img = '<img src=x onerror="window.__xss=1;alert(2)"> see https://example.com/?q=<b>bold</b>';
  await send(a.page, script);
  await send(a.page, img);
  await expectOnce(b.page, [script, img], 'Bob');
  for (const page of [a.page, b.page]) {
    check((await page.locator('[data-testid="message-list"] script').count()) === 0, 'a <script> element was created');
    check((await page.locator('img[src="x"]').count()) === 0, 'an <img> element was created from a message');
    check((await page.locator('[data-testid="message-list"] b, [data-testid="message-list"] a').count()) === 0, 'markup or a link was created');
    check((await page.evaluate(() => window.__xss)) === 0, 'script from a message ran');
  }

  step('Bob’s network drops while Alice writes; on return each message appears once');
  await b.context.setOffline(true);
  await b.page.getByTestId('connection-banner').waitFor();
  await a.page.getByTestId('chat-status').filter({ hasText: 'Offline' }).waitFor();
  const whileOffline = ['Are you there?', 'I found a shorter route', 'It skips the scree field'];
  for (const text of whileOffline) await send(a.page, text);
  await b.page.waitForTimeout(300);
  check((await countOf(b.page, whileOffline[0])) === 0, 'Bob got a message while offline');
  await b.page.screenshot({ path: `${screenshots}/offline-banner-desktop-light.png` });
  await b.context.setOffline(false);
  await b.page.getByTestId('connection-banner').waitFor({ state: 'hidden' });
  await expectOnce(b.page, [hello, caption, reply, ...whileOffline], 'Bob after reconnecting');
  await a.page.getByTestId('chat-status').filter({ hasText: 'Online' }).waitFor();

  step('Bob reloads while Alice writes; nothing is lost or doubled');
  const duringReload = ['Also: bring a jacket', 'It gets windy up there'];
  const reload = b.page.reload();
  for (const text of duringReload) await send(a.page, text);
  await reload;
  await b.page.getByTestId('chat-name').filter({ hasText: alice.name }).waitFor();
  await expectOnce(b.page, [hello, caption, ...whileOffline, ...duringReload], 'Bob after reloading');
  await send(b.page, 'Will do. See you Saturday!');

  step('a send that fails offline is retried');
  await a.context.setOffline(true);
  const retried = 'Sent once the network is back';
  await a.page.getByTestId('composer').fill(retried);
  await a.page.getByTestId('composer').press('Enter');
  const failed = a.page.locator('[data-testid="message"][data-status="failed"]').filter({ hasText: retried });
  await failed.waitFor();
  await a.page.waitForTimeout(300);
  await a.page.screenshot({ path: `${screenshots}/failed-retry-desktop-light.png` });
  await a.context.setOffline(false);
  await a.page.getByTestId('connection-banner').waitFor({ state: 'hidden' });
  await failed.getByTestId('retry').click();
  await a.page.locator('[data-testid="message"].mine').filter({ hasText: retried })
    .and(a.page.locator('[data-status="delivered"], [data-status="seen"]')).waitFor();
  await expectOnce(b.page, [retried], 'Bob after the retry');
  await expectOnce(a.page, [retried], 'Alice after the retry');

  step('screenshots: desktop light and dark (the theme toggle is remembered)');
  await a.page.getByTestId('composer').fill('');
  await a.page.mouse.move(0, 0);
  await a.page.screenshot({ path: `${screenshots}/chat-desktop-light.png` });
  check(await pageBackground(a.page) === LIGHT_BG, 'the light theme paints the light background');
  await a.page.getByTestId('theme-toggle').click();
  check((await a.page.evaluate(() => document.documentElement.dataset.theme)) === 'dark', 'the toggle switches to dark');
  check(await pageBackground(a.page) === DARK_BG, 'the dark theme paints the dark background');
  await a.page.reload();
  await a.page.getByTestId('chat-name').filter({ hasText: bob.name }).waitFor();
  check((await a.page.evaluate(() => document.documentElement.dataset.theme)) === 'dark', 'the dark theme is remembered');
  await messageTextLocator(a.page, retried).waitFor();
  await a.page.waitForTimeout(300);
  await a.page.screenshot({ path: `${screenshots}/chat-desktop-dark.png` });
  await b.page.emulateMedia({ colorScheme: 'dark' });
  await b.page.waitForTimeout(250);
  check(await pageBackground(b.page) === DARK_BG, 'with no choice the page follows a dark system theme');
  await b.page.screenshot({ path: `${screenshots}/chat-desktop-dark-bob.png` });
  await a.page.emulateMedia({ colorScheme: 'dark' });
  await a.page.getByTestId('theme-toggle').click();
  check(await pageBackground(a.page) === LIGHT_BG, 'a light choice wins over a dark system theme');
  await a.page.getByTestId('theme-toggle').click();
  await a.page.emulateMedia({ colorScheme: 'light' });
  check(await pageBackground(a.page) === DARK_BG, 'a dark choice wins over a light system theme');

  step('Bob signs in on a phone (wrong password first)');
  const phone = await newPerson('bob-phone', {
    viewport: { width: 390, height: 844 },
    deviceScaleFactor: 2,
    isMobile: true,
    hasTouch: true,
  });
  await phone.page.goto(`${base}/chat/${alice.id}`);
  await phone.page.waitForURL(`${base}/login`);
  await phone.page.getByTestId('email-input').fill(bob.email);
  await phone.page.getByTestId('password-input').fill('not my password');
  allowOnce('bob-phone', /status of 400/);
  await phone.page.getByTestId('auth-submit').click();
  await phone.page.getByTestId('form-error').filter({ hasText: 'Invalid credentials' }).waitFor();
  await phone.page.screenshot({ path: `${screenshots}/login-error-phone-light.png` });
  await phone.page.getByTestId('password-input').fill(bob.password);
  await phone.page.getByTestId('auth-submit').click();
  await phone.page.getByTestId('app').waitFor();
  await contact(phone.page, alice.id).waitFor();
  check(await phone.page.getByTestId('conversation').isHidden(), 'a phone shows one pane at a time');
  await phone.page.screenshot({ path: `${screenshots}/sidebar-phone-light.png` });
  await contact(phone.page, alice.id).click();
  await phone.page.getByTestId('chat-name').filter({ hasText: alice.name }).waitFor();
  check(await phone.page.getByTestId('sidebar').isHidden(), 'the conversation replaces the sidebar on a phone');
  await messageTextLocator(phone.page, retried).waitFor();
  await phone.page.waitForTimeout(300);
  await phone.page.screenshot({ path: `${screenshots}/chat-phone-light.png` });
  await phone.page.emulateMedia({ colorScheme: 'dark' });
  await phone.page.waitForTimeout(250);
  await phone.page.screenshot({ path: `${screenshots}/chat-phone-dark.png` });
  await phone.page.getByTestId('back').click();
  await phone.page.getByTestId('sidebar').waitFor();
  // The sidebar re-renders on the next frame, so wait for it rather than read it at once.
  const noneCurrent = await phone.page
    .waitForFunction(() => document.querySelectorAll('[data-testid="contact"][aria-current]').length === 0, null, { timeout: 5000 })
    .then(() => true, () => false);
  check(noneCurrent, 'no conversation is current after going back');
  await phone.page.screenshot({ path: `${screenshots}/sidebar-phone-dark.png` });

  step('a message in another conversation raises a desktop notification');
  await a.context.grantPermissions(['notifications'], { origin: base });
  await a.page.goto(`${base}/`);
  await a.page.getByTestId('no-conversation').waitFor();
  await send(b.page, 'Ping from the other side');
  await contact(a.page, bob.id).getByTestId('unread-badge').filter({ hasText: /^1$/ }).waitFor();
  await a.page.waitForFunction(() => window.__notifications.some((n) => n.title === 'Bob Chen'));
  await a.page.screenshot({ path: `${screenshots}/home-desktop-dark.png` });
  check((await a.page.title()).startsWith('(1)'), `the title counts unread messages: ${await a.page.title()}`);

  step('the keyboard alone finds and opens a conversation');
  await a.page.getByTestId('search').focus();
  await a.page.keyboard.type('bob');
  await a.page.keyboard.press('ArrowDown');
  check((await a.page.evaluate(() => document.activeElement?.dataset.userId)) === bob.id, 'ArrowDown moves to the first match');
  await a.page.keyboard.press('Enter');
  await a.page.getByTestId('chat-name').filter({ hasText: bob.name }).waitFor();
  await contact(a.page, bob.id).getByTestId('unread-badge').waitFor({ state: 'hidden' });
  check(!(await a.page.title()).startsWith('('), 'reading clears the unread count in the title');

  step('older history loads when scrolling up');
  const older = await a.page.evaluate(async (bobId) => {
    for (let i = 1; i <= 60; i += 1) {
      const response = await fetch(`/api/messages/send/${bobId}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ text: `Backlog ${i}` }),
      });
      if (response.status !== 202) return response.status;
    }
    return 202;
  }, bob.id);
  check(older === 202, `seeding history answered ${older}`);
  const total = await b.page.evaluate(async (aliceId) => {
    for (let attempt = 0; attempt < 100; attempt += 1) {
      const messages = await (await fetch(`/api/messages/${aliceId}?after=0&limit=200`)).json();
      if (messages.some((message) => message.text === 'Backlog 60')) return messages.length;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    return 0;
  }, alice.id);
  await b.page.reload();
  await messageTextLocator(b.page, 'Backlog 60').waitFor();
  const firstPage = (await messageTexts(b.page)).length;
  check(firstPage === 50, `the first page holds the latest 50 messages, not ${firstPage}`);
  for (let attempt = 0; attempt < 10; attempt += 1) {
    await b.page.getByTestId('history').evaluate((history) => {
      history.scrollTop = 0;
    });
    if ((await b.page.getByTestId('conversation-start').count()) > 0) break;
    await b.page.waitForTimeout(200);
  }
  await b.page.getByTestId('conversation-start').waitFor();
  await expectOnce(b.page, [hello, 'Backlog 1', 'Backlog 60'], 'Bob after scrolling up');
  const shown = (await messageTexts(b.page)).length;
  check(shown === total, `all ${total} messages are shown after scrolling up, not ${shown}`);
  const separators = await b.page.getByTestId('day-separator').count();
  check(separators === 1, `one day separator for today, not ${separators}`);

  step('Bob blocks Alice from the conversation header, then unblocks her');
  allowOnce(a.label, /status of 403/);
  await b.page.getByTestId('block-toggle').filter({ hasText: 'Block' }).click();
  await b.page.getByTestId('block-toggle').filter({ hasText: 'Unblock' }).waitFor();
  const refused = await a.page.evaluate(async (to) => (await fetch(`/api/messages/send/${to}`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ text: 'blocked?' }),
  })).status, bob.id);
  check(refused === 403, `a blocked sender is refused (got ${refused})`);
  await b.page.getByTestId('block-toggle').click();
  await b.page.getByTestId('block-toggle').filter({ hasText: /^Block$/ }).waitFor();

  step('logout returns to the login page');
  await phone.page.getByTestId('logout').click();
  await phone.page.waitForURL(`${base}/login`);
  const after = await phone.page.evaluate(async () => (await fetch('/api/auth/check')).status);
  check(after === 401, `the session is gone after logout (check answered ${after})`);
  await phone.page.screenshot({ path: `${screenshots}/login-phone-dark.png` });

  step('Bob changes his password on the profile page; his phone is signed out at once');
  await phone.page.getByTestId('email-input').fill(bob.email);
  await phone.page.getByTestId('password-input').fill(bob.password);
  await phone.page.getByTestId('auth-submit').click();
  await phone.page.getByTestId('app').waitFor();
  await b.page.getByTestId('open-profile').click();
  await b.page.getByTestId('security').waitFor();
  await b.page.locator('[data-testid="session"]').nth(1).waitFor();
  const sessionCount = await b.page.locator('[data-testid="session"]').count();
  check(sessionCount === 2, `Bob's profile lists his two sessions (${sessionCount})`);
  await b.page.locator('[data-testid="session"][data-current="true"]').filter({ hasText: 'This browser' }).waitFor();
  allowOnce(b.label, /status of 400/);
  await b.page.getByTestId('currentPassword-input').fill('not it');
  await b.page.getByTestId('newPassword-input').fill('a new battery staple');
  await b.page.getByTestId('password-submit').click();
  await b.page.getByTestId('currentPassword-error').filter({ hasText: 'not correct' }).waitFor();
  await b.page.getByTestId('currentPassword-input').fill(bob.password);
  await b.page.getByTestId('password-submit').click();
  await b.page.locator('[data-testid="session"]').nth(1).waitFor({ state: 'detached' });
  await phone.page.waitForURL(`${base}/login`);
  await b.page.screenshot({ path: `${screenshots}/profile-security-desktop-light.png` });
  bob.password = 'a new battery staple';
  await b.page.getByTestId('profile-back').click();

  step('a tab follows when another tab signs out and in as someone else');
  const tab = await a.context.newPage();
  watch(tab, 'alice-tab');
  pages.push({ page: tab, label: 'alice-tab' });
  await tab.goto(base);
  await tab.getByTestId('me-name').filter({ hasText: alice.name }).waitFor();
  await tab.getByTestId('logout').click();
  await tab.waitForURL(`${base}/login`);
  await a.page.waitForURL(`${base}/login`);
  await tab.getByTestId('email-input').fill(bob.email);
  await tab.getByTestId('password-input').fill(bob.password);
  await tab.getByTestId('auth-submit').click();
  await tab.getByTestId('app').waitFor();
  await a.page.getByTestId('me-name').filter({ hasText: bob.name }).waitFor();
  const shownAs = await a.page.getByTestId('me-name').textContent();
  check(shownAs === bob.name, `the first tab now shows who the cookie belongs to (${shownAs})`);
  await tab.close();

  step('a forgotten password: the login page offers a link, a made-up reset link is refused');
  await phone.page.getByTestId('to-forgot').click();
  await phone.page.getByTestId('forgot-page').waitFor();
  await phone.page.getByTestId('email-input').fill(bob.email);
  await phone.page.getByTestId('forgot-submit').click();
  await phone.page.getByTestId('forgot-status').filter({ hasText: 'If an account has this address' }).waitFor();
  allowOnce('bob-phone', /status of 400/);
  await phone.page.goto(`${base}/reset-password#token=made-up-token`);
  await phone.page.getByTestId('reset-page').waitFor();
  check(!(await phone.page.evaluate(() => location.hash)), 'the reset token leaves the address bar');
  await phone.page.getByTestId('password-input').fill('whatever it is');
  await phone.page.getByTestId('reset-submit').click();
  await phone.page.locator('[data-testid="reset-status"][data-outcome="failed"]').filter({ hasText: 'invalid or has expired' }).waitFor();

  if (problems.length) throw new Error(`problems:\n  ${problems.join('\n  ')}`);
  console.log(`ok: the chat client works (${((Date.now() - started) / 1000).toFixed(1)} s); screenshots in ${screenshots}`);
} catch (error) {
  console.error(`FAILED: ${error.stack || error}`);
  for (const { page, label } of pages) {
    await page.screenshot({ path: `${screenshots}/failure-${label}.png` }).catch(() => {});
  }
  if (problems.length) console.error(`problems:\n  ${problems.join('\n  ')}`);
  exitCode = 1;
} finally {
  await browser.close();
}
process.exit(exitCode);
