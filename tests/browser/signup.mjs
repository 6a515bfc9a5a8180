// Sign-up by invitation in headless Chromium, against a Courier server with SIGNUP_MODE=invite.
//
//   node tests/browser/signup.mjs <base-url> <invitation-url> [screenshot-dir]
//
// Run by `tests/web_client.rs` (invitation_only_sign_up_works_in_a_real_browser), which starts
// the server and makes the invitation. The sign-in page offers no sign-up; the sign-up page
// without an invitation says why; the invitation link signs a person up once, and its secret
// leaves the address bar.
import { mkdirSync } from 'node:fs';
import { chromium } from 'playwright-core';

const [base, invitation, screenshotArg] = process.argv.slice(2);
if (!base || !invitation) {
  console.error('usage: node tests/browser/signup.mjs <base-url> <invitation-url> [screenshot-dir]');
  process.exit(2);
}
const screenshots = screenshotArg || 'target/screenshots';
mkdirSync(screenshots, { recursive: true });
const started = Date.now();
const problems = [];
const step = (text) => console.log(`- ${text} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
const check = (condition, message) => {
  if (!condition) throw new Error(message);
};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run'],
});
let exitCode = 0;
const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: 'en-US' });
const page = await context.newPage();
page.setDefaultTimeout(10000);
page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
page.on('console', (message) => {
  // The session check before signing in answers 401; the reused invitation 403.
  if (message.type() === 'error' && !/status of 40[13]/.test(message.text())) {
    problems.push(`console error: ${message.text()}`);
  }
});
try {
  step('the sign-in page offers no sign-up');
  await page.goto(`${base}/login`);
  await page.getByTestId('login-page').waitFor();
  await page.waitForFunction(() => document.querySelector('.auth-switch')?.hidden === true);

  step('the sign-up page without an invitation says why, with no form');
  await page.goto(`${base}/signup`);
  await page.getByTestId('signup-notice').filter({ hasText: 'needs an invitation' }).waitFor();
  check(await page.getByTestId('auth-submit').isHidden(), 'no sign-up form without an invitation');
  await page.screenshot({ path: `${screenshots}/signup-invite-only-desktop.png` });

  step('the invitation link signs a person up, and its secret leaves the address bar');
  await page.goto(invitation);
  await page.getByTestId('fullName-input').fill('Ines Invited');
  check(!(await page.evaluate(() => location.hash)), 'the invitation leaves the address bar');
  await page.getByTestId('email-input').fill(`ines.${Date.now().toString(36)}@example.com`);
  await page.getByTestId('password-input').fill('invited and glad');
  await page.getByTestId('auth-submit').click();
  await page.getByTestId('app').waitFor();
  await page.getByTestId('me-name').filter({ hasText: 'Ines Invited' }).waitFor();

  step('the same link does not work twice');
  await page.getByTestId('logout').click();
  await page.waitForURL(`${base}/login`);
  await page.goto(invitation);
  await page.getByTestId('fullName-input').fill('Someone Else');
  await page.getByTestId('email-input').fill('someone.else@example.com');
  await page.getByTestId('password-input').fill('not invited');
  await page.getByTestId('auth-submit').click();
  await page.getByTestId('form-error').filter({ hasText: 'invitation is invalid or has expired' }).waitFor();

  if (problems.length) throw new Error(`problems:\n  ${problems.join('\n  ')}`);
  console.log(`ok: invitation-only sign-up works (${((Date.now() - started) / 1000).toFixed(1)} s)`);
} catch (error) {
  console.error(`FAILED: ${error.stack || error}`);
  if (problems.length) console.error(`problems:\n  ${problems.join('\n  ')}`);
  await page.screenshot({ path: `${screenshots}/failure-signup.png` }).catch(() => {});
  exitCode = 1;
} finally {
  await browser.close();
}
process.exit(exitCode);
