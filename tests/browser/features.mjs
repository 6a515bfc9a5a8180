// End-to-end test of the chat client's message life-cycle and groups in headless Chromium,
// against a real Courier server.
//
//   node tests/browser/features.mjs <base-url> [screenshot-dir]
//
// Run by `tests/web_client.rs` (groups_and_message_actions_work_in_a_real_browser), which starts
// the server. Alice, Bob and Carol sign up. In a direct conversation Bob replies to Alice with a
// quote and reacts to her message, Alice edits it, attaches a file (Bob downloads it from the
// card) and deletes it again: Bob sees every change live. Alice makes a group with both; all
// three talk in it (names over bubbles, unread badges, a system message for each change); Alice
// removes Carol, whose client drops the group at once and gets nothing more. Bob searches all
// his messages and opens a hit; Alice searches the group from its header. Screenshots
// (desktop and phone, light and dark) go to the screenshot directory.
import { mkdirSync } from 'node:fs';
import { chromium } from 'playwright-core';

const [base, screenshotArg] = process.argv.slice(2);
if (!base) {
  console.error('usage: node tests/browser/features.mjs <base-url> [screenshot-dir]');
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
const EXPECTED_CONSOLE = [/status of 401/];
// Errors a step provokes on purpose, allowed once each.
const allowed = [];
const allowOnce = (label, pattern) => allowed.push({ label, pattern });
const run = Date.now().toString(36);
const people = {
  alice: { name: 'Alice Martin', email: `alice.${run}@example.com`, password: 'correct horse' },
  bob: { name: 'Bob Chen', email: `bob.${run}@example.com`, password: 'battery staple' },
  carol: { name: 'Carol Diaz', email: `carol.${run}@example.com`, password: 'purple monkey' },
};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
});

/** A browser context for `who`, signed up through the page's own origin (so the cookie is set). */
async function person(who, options = {}) {
  const user = people[who];
  const context = await browser.newContext({
    viewport: { width: 1280, height: 800 },
    colorScheme: 'light',
    locale: 'en-US',
    acceptDownloads: true,
    ...options,
  });
  await context.route('**/*', (route) => {
    const url = new URL(route.request().url());
    if (url.origin !== base && !url.protocol.startsWith('data') && !url.protocol.startsWith('blob')) {
      problems.push(`${who}: request outside the server: ${url.href}`);
      return route.abort();
    }
    return route.continue();
  });
  const page = await context.newPage();
  page.setDefaultTimeout(10000);
  page.on('pageerror', (error) => problems.push(`${who}: page error: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() !== 'error') return;
    if (EXPECTED_CONSOLE.some((pattern) => pattern.test(message.text()))) return;
    const index = allowed.findIndex((entry) => entry.label === who && entry.pattern.test(message.text()));
    if (index >= 0) allowed.splice(index, 1);
    else problems.push(`${who}: console error: ${message.text()}`);
  });
  page.on('dialog', (dialog) => {
    problems.push(`${who}: unexpected dialog: ${dialog.message()}`);
    dialog.dismiss().catch(() => {});
  });
  pages.push({ page, label: who });
  await page.goto(`${base}/signup`);
  await page.getByTestId('fullName-input').fill(user.name);
  await page.getByTestId('email-input').fill(user.email);
  await page.getByTestId('password-input').fill(user.password);
  await page.getByTestId('auth-submit').click();
  await page.getByTestId('app').waitFor();
  user.id = await page.evaluate(async () => (await (await fetch('/api/auth/check')).json())._id);
  return { context, page, who };
}

/** The message whose own text (not a quote of it) is `text`. */
const bubble = (page, text) => page.locator('[data-testid="message"]')
  .filter({ has: page.locator('[data-testid="message-text"]', { hasText: text }) }).last();

async function send(page, text) {
  const composer = page.getByTestId('composer');
  await composer.fill(text);
  await composer.press('Enter');
  await bubble(page, text).and(page.locator('[data-status="delivered"], [data-status="seen"]')).waitFor();
}

/** Opens the menu of the message showing `text` and clicks `item` in it. */
async function menu(page, text, item) {
  const message = bubble(page, text);
  await message.hover();
  await message.getByTestId('message-actions').click();
  await page.getByTestId('message-menu').waitFor();
  await item(page.getByTestId('message-menu'));
}

let exitCode = 0;
try {
  step('three people sign up');
  const a = await person('alice');
  const b = await person('bob');
  const c = await person('carol');
  const { alice, bob, carol } = people;

  step('direct: Bob replies to Alice with a quote');
  await a.page.goto(`${base}/chat/${bob.id}`);
  await b.page.goto(`${base}/chat/${alice.id}`);
  await send(a.page, 'Lunch at noon?');
  await bubble(b.page, 'Lunch at noon?').waitFor();
  await menu(b.page, 'Lunch at noon?', (m) => m.getByTestId('menu-reply').click());
  await b.page.getByTestId('compose-mode').filter({ hasText: 'Replying to Alice Martin' }).waitFor();
  await send(b.page, 'Sounds good');
  const quoted = bubble(a.page, 'Sounds good').getByTestId('reply-quote');
  await quoted.filter({ hasText: 'Lunch at noon?' }).waitFor();

  step('Bob reacts; Alice sees the count and adds hers');
  await menu(b.page, 'Lunch at noon?', (m) => m.locator('[data-testid="quick-reaction"][data-emoji="👍"]').click());
  const aliceReaction = bubble(a.page, 'Lunch at noon?').getByTestId('reaction');
  await aliceReaction.filter({ hasText: '1' }).waitFor();
  await aliceReaction.click();
  await bubble(b.page, 'Lunch at noon?').getByTestId('reaction').filter({ hasText: '2' }).waitFor();
  await aliceReaction.click();
  await bubble(b.page, 'Lunch at noon?').getByTestId('reaction').filter({ hasText: '1' }).waitFor();

  step('Alice edits her message; Bob sees the new text, marked edited, and the quote follows');
  await menu(a.page, 'Lunch at noon?', (m) => m.getByTestId('menu-edit').click());
  await a.page.getByTestId('compose-mode').filter({ hasText: 'Editing message' }).waitFor();
  const composer = a.page.getByTestId('composer');
  check((await composer.inputValue()) === 'Lunch at noon?', 'the composer holds the text to edit');
  await composer.fill('Lunch at 12:30?');
  await composer.press('Enter');
  await bubble(b.page, 'Lunch at 12:30?').getByTestId('message-edited').waitFor();
  await bubble(b.page, 'Sounds good').getByTestId('reply-quote').filter({ hasText: 'Lunch at 12:30?' }).waitFor();
  check(await bubble(a.page, 'Lunch at 12:30?').getByTestId('message-edited').isVisible(), 'Alice sees it edited too');

  step('Alice attaches a file; Bob downloads it from the card');
  const notes = Buffer.from('<html><script>alert(1)</script>shopping list: bread, cheese</html>\n');
  await a.page.getByTestId('file-input').setInputFiles({ name: 'notes.html', mimeType: 'text/html', buffer: notes });
  await a.page.getByTestId('file-preview').filter({ hasText: 'notes.html' }).waitFor();
  await a.page.waitForFunction(() => !document.querySelector('[data-testid="file-preview"]').textContent.includes('uploading'));
  await send(a.page, 'the list');
  const card = bubble(b.page, 'the list').getByTestId('message-file');
  await card.filter({ hasText: 'notes.html' }).waitFor();
  const href = await card.getByTestId('file-download').getAttribute('href');
  check(href && href.startsWith('/api/files/'), `the card links to Courier's file route (${href})`);
  const [download] = await Promise.all([b.page.waitForEvent('download'), card.getByTestId('file-download').click()]);
  const path = await download.path();
  const { readFileSync } = await import('node:fs');
  check(readFileSync(path).equals(notes), 'the downloaded file has the uploaded bytes');
  await a.page.screenshot({ path: `${screenshots}/message-actions-desktop-light.png` });

  step('Alice deletes the file message for everyone');
  await menu(a.page, 'the list', (m) => m.getByTestId('menu-delete').click());
  await a.page.getByTestId('menu-delete-confirm').click();
  await b.page.getByTestId('message-deleted').waitFor();
  check(await bubble(b.page, 'the list').count() === 0, 'the deleted text is gone for Bob');
  await b.page.emulateMedia({ colorScheme: 'dark' });
  await b.page.screenshot({ path: `${screenshots}/message-actions-desktop-dark.png` });
  await b.page.emulateMedia({ colorScheme: 'light' });

  step('Alice makes a group with Bob and Carol');
  await a.page.getByTestId('new-group').click();
  const dialog = a.page.getByTestId('create-group-dialog');
  await dialog.getByTestId('group-name').fill('Weekend hikers');
  await dialog.getByTestId('group-description').fill('Saturday trails');
  await dialog.locator(`input[data-user-id="${bob.id}"]`).check();
  await dialog.locator(`input[data-user-id="${carol.id}"]`).check();
  await a.page.screenshot({ path: `${screenshots}/group-create-desktop-light.png` });
  await dialog.getByTestId('create-group').click();
  await a.page.waitForURL(/\/groups\//);
  const groupId = a.page.url().split('/groups/')[1];
  await a.page.getByTestId('chat-name').filter({ hasText: 'Weekend hikers' }).waitFor();
  await send(a.page, "Who's in for Saturday?");

  step('Bob and Carol get it live, with an unread badge and the sender named');
  for (const other of [b, c]) {
    const row = other.page.locator(`[data-testid="group-contact"][data-group-id="${groupId}"]`);
    // Alice's message (and, as the server counts them, her system notice) is unread.
    await row.locator('[data-testid="unread-badge"]:not([hidden])').waitFor();
  }
  await c.page.locator(`[data-testid="group-contact"][data-group-id="${groupId}"]`).click();
  await bubble(c.page, "Who's in for Saturday?").getByTestId('message-sender').filter({ hasText: alice.name }).waitFor();
  await send(c.page, 'Me!');
  await bubble(a.page, 'Me!').getByTestId('message-sender').filter({ hasText: carol.name }).waitFor();
  await b.page.goto(`${base}/groups/${groupId}`);
  await bubble(b.page, 'Me!').waitFor();
  await a.page.screenshot({ path: `${screenshots}/group-desktop-light.png` });
  await a.page.emulateMedia({ colorScheme: 'dark' });
  await a.page.screenshot({ path: `${screenshots}/group-desktop-dark.png` });
  await a.page.emulateMedia({ colorScheme: 'light' });

  step('Alice removes Carol: Carol loses the group at once and gets nothing more');
  await a.page.getByTestId('group-settings-open').click();
  const settings = a.page.getByTestId('group-settings');
  await settings.getByTestId('group-member-list').locator(`[data-user-id="${carol.id}"]`).waitFor();
  await a.page.screenshot({ path: `${screenshots}/group-settings-desktop-light.png` });
  await settings.locator(`[data-user-id="${carol.id}"]`).getByTestId('remove-member').click();
  await settings.getByTestId('group-member-list').locator(`[data-user-id="${carol.id}"]`).waitFor({ state: 'detached' });
  await a.page.keyboard.press('Escape');
  await c.page.waitForURL(`${base}/`);
  await c.page.locator(`[data-testid="group-contact"][data-group-id="${groupId}"]`).waitFor({ state: 'detached' });
  await send(a.page, 'Carol is out of the loop');
  await bubble(b.page, 'Carol is out of the loop').waitFor();
  await c.page.waitForTimeout(500);
  const leaked = await c.page.evaluate(() => document.body.textContent.includes('Carol is out of the loop'));
  check(!leaked, 'a removed member sees nothing more of the group');
  allowOnce('carol', /status of 404/);
  const answer = await c.page.evaluate(async (id) => (await fetch(`/api/groups/${id}/messages`)).status, groupId);
  check(answer === 404, `a removed member's history request is refused (${answer})`);

  step('Bob searches all his messages: the edited text is found, the old one not; a hit opens it');
  await b.page.getByTestId('search-messages').click();
  const search = b.page.getByTestId('message-search-dialog');
  await search.getByTestId('message-search-input').fill('noon');
  await search.getByTestId('message-search-status').filter({ hasText: 'No messages found.' }).waitFor();
  await search.getByTestId('message-search-input').fill('LUNCH 12');
  const hit = search.getByTestId('message-search-hit').filter({ hasText: 'Lunch at 12:30?' });
  await hit.waitFor();
  check(await search.getByTestId('message-search-hit').count() === 1, 'one message has both words');
  const marks = await hit.locator('mark').allTextContents();
  check(marks.join(',') === 'Lunch,12', `the matched words are marked (${marks})`);
  await b.page.screenshot({ path: `${screenshots}/search-desktop-light.png` });
  await b.page.emulateMedia({ colorScheme: 'dark' });
  await b.page.screenshot({ path: `${screenshots}/search-desktop-dark.png` });
  await b.page.emulateMedia({ colorScheme: 'light' });
  await hit.click();
  await b.page.waitForURL(`${base}/chat/${alice.id}`);
  await b.page.locator('[data-testid="message"].flash').filter({ hasText: 'Lunch at 12:30?' }).waitFor();

  step('Alice searches the group from its header; markup in a message stays text');
  await send(a.page, '<b>bold</b> trail map <img src=x onerror=alert(1)>');
  await a.page.getByTestId('conversation-search').click();
  const groupSearch = a.page.getByTestId('message-search-dialog');
  await groupSearch.getByTestId('message-search-input').fill('trail');
  const trail = groupSearch.getByTestId('message-search-hit').filter({ hasText: '<b>bold</b> trail map' });
  await trail.waitFor();
  check(await trail.locator('b, img').count() === 0, 'a message found is shown as text, never markup');
  await groupSearch.getByTestId('message-search-input').fill('saturday');
  await groupSearch.getByTestId('message-search-hit').filter({ hasText: "Who's in for Saturday?" }).waitFor();
  check(await groupSearch.getByTestId('message-search-hit').count() === 1, 'only this group is searched');
  await a.page.keyboard.press('Escape');

  step('phone layout');
  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true, colorScheme: 'light' });
  const cookies = await b.context.cookies();
  await phone.addCookies(cookies);
  const phonePage = await phone.newPage();
  pages.push({ page: phonePage, label: 'bob-phone' });
  await phonePage.goto(`${base}/groups/${groupId}`);
  await bubble(phonePage, 'Carol is out of the loop').waitFor();
  await phonePage.screenshot({ path: `${screenshots}/group-phone-light.png` });
  await phonePage.emulateMedia({ colorScheme: 'dark' });
  await phonePage.screenshot({ path: `${screenshots}/group-phone-dark.png` });
  await phonePage.emulateMedia({ colorScheme: 'light' });
  await phonePage.getByTestId('conversation-search').click();
  await phonePage.getByTestId('message-search-input').fill('loop');
  await phonePage.getByTestId('message-search-hit').filter({ hasText: 'Carol is out of the loop' }).waitFor();
  await phonePage.screenshot({ path: `${screenshots}/search-phone-light.png` });
  await phonePage.emulateMedia({ colorScheme: 'dark' });
  await phonePage.screenshot({ path: `${screenshots}/search-phone-dark.png` });

  if (problems.length) throw new Error(`problems:\n  ${problems.join('\n  ')}`);
  console.log(`ok: groups and message actions work (${((Date.now() - started) / 1000).toFixed(1)} s)`);
} catch (error) {
  console.error(`FAILED: ${error.stack || error}`);
  for (const { page, label } of pages) {
    await page.screenshot({ path: `${screenshots}/failure-features-${label}.png` }).catch(() => {});
  }
  if (problems.length) console.error(`problems:\n  ${problems.join('\n  ')}`);
  exitCode = 1;
} finally {
  await browser.close();
}
process.exit(exitCode);
