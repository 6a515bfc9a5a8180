// Drives the dashboard's Users page in headless Chromium: sign in, open Users, see the accounts
// (a name holding markup stays text), search for one, end its sessions, disable and enable it,
// delete another with its messages, create an invitation link and copy it. Saves a screenshot.
//
// Run by `tests/admin.rs` (the_users_page_works_in_a_real_browser), which starts the server,
// creates the accounts and passes: COURIER_URL, COURIER_ADMIN_KEY, SCREENSHOT_DIR; optionally
// CHROMIUM_PATH (default /usr/bin/chromium). After each action the test asks the Rust side to
// check the server's view of it: it prints `CHECK <what> [argument]` and waits for a line on
// stdin, `ok` or `fail`.
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const base = process.env.COURIER_URL;
const key = process.env.COURIER_ADMIN_KEY;
const screenshots = process.env.SCREENSHOT_DIR || '.';
if (!base || !key) {
  console.error('COURIER_URL and COURIER_ADMIN_KEY are required');
  process.exit(2);
}

const problems = [];
// Failed requests that are expected in the step running now (and so not a problem).
const expectedStatuses = new Set([401]);
const step = (text) => console.log(`- ${text}`);

function check(condition, message) {
  if (!condition) throw new Error(message);
}

const replies = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

// Asks the Rust side to check what the server now does (a refused token, a refused login…).
async function serverCheck(what, argument) {
  console.log(`CHECK ${what}${argument ? ` ${argument}` : ''}`);
  const { value, done } = await replies.next();
  check(!done && value === 'ok', `the server-side check "${what}" failed (${done ? 'no answer' : value})`);
}

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

try {
  const context = await browser.newContext({ viewport: { width: 1440, height: 900 }, colorScheme: 'light' });
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: base });
  const page = await context.newPage();
  page.setDefaultTimeout(10000);
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    // The session check before signing in answers 401.
    const status = /status of (\d{3})/.exec(message.text());
    if (message.type() === 'error' && !(status && expectedStatuses.has(Number(status[1])))) {
      problems.push(`console error: ${message.text()}`);
    }
  });
  page.on('dialog', (dialog) => {
    problems.push(`unexpected dialog: ${dialog.message()}`);
    dialog.dismiss().catch(() => {});
  });
  await page.addInitScript(() => {
    window.__xss = 0;
  });
  await context.route('**/*', (route) => {
    const url = new URL(route.request().url());
    if (url.origin !== base) {
      problems.push(`request outside the server: ${url.href}`);
      return route.abort();
    }
    return route.continue();
  });

  const rows = page.getByTestId('user-row');
  const rowOf = (email) => page.locator(`[data-testid="user-row"][data-email="${email}"]`);
  const toast = (text) => page.locator('.toast').filter({ hasText: text });

  step('sign in and open Users');
  await page.goto(`${base}/admin/queues`);
  await page.getByTestId('login-key').fill(key);
  await page.getByTestId('login-submit').click();
  await page.getByTestId('queue-card-message').waitFor();
  await page.getByTestId('nav-users').click();
  await page.getByTestId('users-panel').waitFor();
  check(await page.getByTestId('nav-users').getAttribute('aria-current') === 'true', 'Users is the current page');
  check(new URL(page.url()).hash === '#/users', `the address names the page: ${page.url()}`);

  step('see the three accounts, newest first, and the sign-up mode');
  await page.getByTestId('users-page-info').filter({ hasText: '1–3 of 3' }).waitFor();
  check(await rows.count() === 3, 'three rows');
  const emails = await rows.evaluateAll((all) => all.map((row) => row.dataset.email));
  check(emails.join(' ') === 'carol@example.com bob@example.com alice@example.com', `order: ${emails}`);
  const meta = await page.getByTestId('users-meta').textContent();
  check(meta.includes('3 accounts') && meta.includes('sign-up: open'), `meta: ${meta}`);
  check(await page.getByTestId('signup-mode').getAttribute('data-mode') === 'open', 'sign-up mode shown');
  check((await page.getByTestId('signup-mode').textContent()).startsWith('Sign-up is open'), 'sign-up mode explained');

  step('a name holding markup stays text');
  const carolName = await rowOf('carol@example.com').getByTestId('user-name').textContent();
  check(carolName.includes('<img src=x onerror='), `name shown as text: ${carolName}`);
  check((await page.locator('#user-rows img').count()) === 0, 'an <img> element was created from a name');
  check((await page.evaluate(() => window.__xss)) === 0, 'script from a name ran');

  step('search for Alice: one row, with her two sessions');
  await page.getByTestId('users-search').fill('alice');
  await page.getByTestId('users-search').press('Enter');
  await page.getByTestId('users-caption').filter({ hasText: '1 match for “alice”' }).waitFor();
  await page.getByTestId('users-page-info').filter({ hasText: '1–1 of 1' }).waitFor();
  check(await rows.count() === 1, 'one row for the search');
  const alice = rowOf('alice@example.com');
  check((await alice.getByTestId('user-name').textContent()) === 'Alice Archer', 'the name');
  check((await alice.getByTestId('user-sessions').textContent()) === '2', 'two sessions');
  check((await alice.getByTestId('user-status').textContent()) === 'active', 'active');
  check(['verified', 'unverified'].includes(await alice.getByTestId('user-verified').textContent()), 'a verified badge');

  step('end her sessions: the page says how many, the server refuses her tokens');
  await alice.getByTestId('user-end-sessions').click();
  await toast('Alice Archer: 2 sessions ended').waitFor();
  await alice.getByTestId('user-sessions').filter({ hasText: /^0$/ }).waitFor();
  check(await alice.getByTestId('user-end-sessions').isDisabled(), 'nothing left to end');
  await serverCheck('sessions-ended');

  step('disable her: the row says so, the server refuses her sign-in');
  await alice.getByTestId('user-disable').click();
  await toast('Alice Archer: account disabled').waitFor();
  await alice.getByTestId('user-status').filter({ hasText: 'disabled' }).waitFor();
  await alice.getByTestId('user-enable').waitFor();
  check(await alice.getByTestId('user-disable').count() === 0, 'no Disable on a disabled account');
  await serverCheck('disabled');

  step('enable her again: she can sign in');
  await alice.getByTestId('user-enable').click();
  await toast('Alice Archer: account enabled').waitFor();
  await alice.getByTestId('user-status').filter({ hasText: 'active' }).waitFor();
  await alice.getByTestId('user-disable').waitFor();
  await serverCheck('enabled');

  step('clear the search and delete Bob, confirming first');
  await page.getByTestId('users-clear-search').click();
  await page.getByTestId('users-page-info').filter({ hasText: 'of 3' }).waitFor();
  const bob = rowOf('bob@example.com');
  await bob.getByTestId('user-delete').click();
  await page.locator('#confirm[open]').waitFor();
  const title = await page.locator('#confirm-title').textContent();
  const text = await page.locator('#confirm-text').textContent();
  check(title.includes('Bob Baker'), `the confirmation names the account: ${title}`);
  check(text.includes('bob@example.com') && text.includes('messages it sent or received are deleted too'), `the confirmation says the messages go: ${text}`);
  // Cancelling deletes nothing.
  await page.locator('#confirm button[value="cancel"]').click();
  await page.locator('#confirm[open]').waitFor({ state: 'detached' });
  check(await bob.count() === 1, 'still listed after Cancel');
  await bob.getByTestId('user-delete').click();
  await page.getByTestId('confirm-ok').click();
  await toast('Bob Baker: account deleted, 3 messages deleted').waitFor();
  await page.getByTestId('users-page-info').filter({ hasText: '1–2 of 2' }).waitFor();
  check(await bob.count() === 0, 'Bob is gone from the list');
  await serverCheck('deleted');

  step('create an invitation for one address and copy its link');
  await page.getByTestId('invite-email').fill('dana@example.com');
  await page.getByTestId('invite-days').fill('3');
  await page.getByTestId('invite-submit').click();
  await toast('Invitation link created').waitFor();
  await page.getByTestId('invite-result').waitFor();
  const url = await page.getByTestId('invite-url').inputValue();
  check(/\/signup#invite=[^\s]+$/.test(url), `an invitation link: ${url}`);
  check(await page.getByTestId('invite-url').getAttribute('readonly') !== null, 'the link field is read-only');
  const expires = await page.getByTestId('invite-expires').textContent();
  check(expires.includes('only for dana@example.com'), `for whom: ${expires}`);
  await page.getByTestId('invite-copy').click();
  await toast('Link copied').waitFor();
  const copied = await page.evaluate(() => navigator.clipboard.readText());
  check(copied === url, `the clipboard holds the link: ${copied}`);
  await serverCheck('invite', url);

  step('an error shows the server\'s message');
  await page.getByTestId('invite-email').fill('');
  await page.getByTestId('invite-days').fill('1000');
  // Past the field's own max, so the server is the one that refuses.
  await page.getByTestId('invite-days').evaluate((field) => field.removeAttribute('max'));
  expectedStatuses.add(400);
  await page.getByTestId('invite-submit').click();
  await toast('days must be between 1 and 90').waitFor();
  expectedStatuses.delete(400);

  step('the invited person is listed after a refresh');
  await page.getByTestId('users-refresh').click();
  await page.getByTestId('users-page-info').filter({ hasText: '1–3 of 3' }).waitFor();
  await rowOf('dana@example.com').waitFor();
  await page.evaluate(() => document.getElementById('toasts').replaceChildren());
  await page.screenshot({ path: `${screenshots}/admin-dashboard-users.png`, fullPage: true });

  step('a reload comes back to Users; a queue card leaves it');
  await page.reload();
  await page.getByTestId('users-panel').waitFor();
  await rowOf('dana@example.com').waitFor();
  await page.getByTestId('queue-card-message').click();
  await page.getByTestId('users-panel').waitFor({ state: 'hidden' });
  await page.locator('#queue-panel').waitFor();

  check((await page.evaluate(() => window.__xss)) === 0, 'script from a name ran');
  check(problems.length === 0, `problems in the page:\n  ${problems.join('\n  ')}`);
  console.log('browser test passed');
} finally {
  await browser.close();
  replies.return?.();
  process.stdin.destroy();
}
