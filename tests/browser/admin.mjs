// Drives the admin dashboard in headless Chromium: sign in, see the three queues with their
// counts and the health banner, open a failed job whose data holds markup, check that the markup stayed text, retry the
// job and see it complete. Saves screenshots as evidence.
//
// Run by `tests/admin.rs` (the_dashboard_works_in_a_real_browser), which starts the server and
// passes: COURIER_URL, COURIER_ADMIN_KEY, COURIER_JOB_ID (a failed job of the `message` queue),
// SCREENSHOT_DIR; optionally CHROMIUM_PATH (default /usr/bin/chromium).
import { chromium } from 'playwright-core';

const base = process.env.COURIER_URL;
const key = process.env.COURIER_ADMIN_KEY;
const jobId = process.env.COURIER_JOB_ID;
const screenshots = process.env.SCREENSHOT_DIR || '.';
if (!base || !key || !jobId) {
  console.error('COURIER_URL, COURIER_ADMIN_KEY and COURIER_JOB_ID are required');
  process.exit(2);
}

const problems = [];
const step = (text) => console.log(`- ${text}`);

function check(condition, message) {
  if (!condition) throw new Error(message);
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
  const page = await context.newPage();
  page.setDefaultTimeout(10000);
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    // 401s are expected here: the session check before signing in, and the wrong key tried.
    if (message.type() === 'error' && !message.text().includes('status of 401')) {
      problems.push(`console error: ${message.text()}`);
    }
  });
  // An injected `alert(...)` would open a dialog.
  page.on('dialog', (dialog) => {
    problems.push(`unexpected dialog: ${dialog.message()}`);
    dialog.dismiss().catch(() => {});
  });
  await page.addInitScript(() => {
    window.__xss = 0;
  });
  // The dashboard must work offline: any request that leaves this server is a failure.
  await context.route('**/*', (route) => {
    const url = new URL(route.request().url());
    if (url.origin !== base) {
      problems.push(`request outside the server: ${url.href}`);
      return route.abort();
    }
    return route.continue();
  });

  step('open the dashboard and sign in');
  await page.goto(`${base}/admin/queues`);
  await page.getByTestId('login-key').fill('not-the-key');
  await page.getByTestId('login-submit').click();
  await page.locator('#login-error').filter({ hasText: 'not valid' }).waitFor();
  await page.getByTestId('login-key').fill(key);
  await page.getByTestId('login-submit').click();

  step('see the three queues with their counts');
  for (const name of ['message', 'notification', 'email']) {
    await page.getByTestId(`queue-card-${name}`).waitFor();
  }
  await page.getByTestId('count-message-failed').filter({ hasText: /^1$/ }).waitFor();
  await page.getByTestId('count-message-completed').filter({ hasText: /^1$/ }).waitFor();
  await page.getByTestId('count-email-waiting').filter({ hasText: /^0$/ }).waitFor();
  await page.locator('#live[data-state="live"]').waitFor();

  step('the health banner says why the server is degraded (one failed job, the threshold here)');
  await page.locator('[data-testid="health-banner"] li[data-check="failedJobs"]').waitFor();
  const health = await page.getByTestId('health-banner').textContent();
  check(health.includes('Health: degraded') && health.includes('message: 1 failed jobs'), `health banner: ${health}`);

  step('open the failed job');
  await page.getByTestId('queue-card-message').click();
  await page.getByTestId('tab-failed').click();
  await page.locator(`[data-testid="job-row"][data-id="${jobId}"]`).click();
  await page.getByTestId('job-state').filter({ hasText: 'failed' }).waitFor();
  const data = await page.getByTestId('job-data').textContent();
  check(data.includes('<img src=x onerror='), `job data shown as text: ${data}`);
  check(data.includes('<script>'), `script tag shown as text: ${data}`);
  const reason = await page.getByTestId('job-failed-reason').textContent();
  check(reason.includes('failing on purpose'), `failed reason: ${reason}`);
  check((await page.locator('img[src="x"]').count()) === 0, 'an <img> element was created from job data');
  check((await page.locator('#detail script, #job-rows script').count()) === 0, 'a <script> element was created from job data');
  check((await page.evaluate(() => window.__xss)) === 0, 'script from job data ran');
  await page.screenshot({ path: `${screenshots}/admin-dashboard-failed-job.png`, fullPage: true });

  step('search for the job by text in its data');
  await page.getByTestId('search-input').fill('onerror');
  await page.getByTestId('search-input').press('Enter');
  await page.locator(`[data-testid="job-row"][data-id="${jobId}"]`).waitFor();
  await page.locator('#list-caption').filter({ hasText: '1 match' }).waitFor();

  step('retry it and see it complete');
  await page.getByTestId('action-retry').click();
  await page.getByTestId('job-state').filter({ hasText: 'completed' }).waitFor();
  await page.getByTestId('job-return-value').filter({ hasText: 'delivered' }).waitFor();
  await page.getByTestId('count-message-failed').filter({ hasText: /^0$/ }).waitFor();
  // Healthy again: the banner goes (on the next activity or the periodic check).
  await page.getByTestId('health-banner').waitFor({ state: 'hidden', timeout: 20000 });
  await page.getByTestId('count-message-completed').filter({ hasText: /^2$/ }).waitFor();
  check((await page.evaluate(() => window.__xss)) === 0, 'script from job data ran after the retry');
  // The per-minute processing time chart plots the minutes in which jobs finished.
  await page.locator('[data-testid="latency-trend-chart"] :is(polyline, circle)').first().waitFor();
  await page.screenshot({ path: `${screenshots}/admin-dashboard.png`, fullPage: true });
  const background = () => page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  check(await background() === 'rgb(246, 247, 251)', 'the light theme paints the light background');

  step('the dark theme renders too');
  await page.emulateMedia({ colorScheme: 'dark' });
  await page.waitForTimeout(400); // let the buttons' colour transitions finish
  check(await background() === 'rgb(15, 17, 23)', 'a dark system theme paints the dark background');
  await page.click('#theme-toggle');
  check(await background() === 'rgb(246, 247, 251)', 'a light choice wins over a dark system theme');
  await page.click('#theme-toggle');
  await page.waitForTimeout(400);
  await page.screenshot({ path: `${screenshots}/admin-dashboard-dark.png`, fullPage: true });

  check(problems.length === 0, `problems in the page:\n  ${problems.join('\n  ')}`);
  console.log('browser test passed');
} finally {
  await browser.close();
}
