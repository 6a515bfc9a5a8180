// Courier queue dashboard. Plain JavaScript, no dependencies, no network beyond this server.
//
// Rule: everything that comes from a job (ids, names, data, reasons, logs) reaches the page as
// text (text nodes / textContent), never as markup, so a message holding `<script>` or
// `<img onerror>` stays inert. The page's CSP refuses inline script besides.
//
// The entry module: sign-in, routing, queues, jobs, actions and live updates. Its helpers are
// modules of their own (dom, format, api, charts); users.js, a classic script loaded first,
// provides the Users page.

import { $, h } from './dom.js';
import { ago, dateTime, number, pretty, stateBadge } from './format.js';
import {
  CLEANABLE, HEALTH_EVERY_MS, HEALTH_MIN_GAP_MS, METRICS_EVERY_MS, POLL_EVERY_MS, STATES,
  api, jobPath, onSessionEnd, queuePath, view,
} from './api.js';
import { drawCharts, loadMetrics } from './charts.js';

// ---- The Users page (users.js, loaded first) ------------------------------------------------

const users = window.CourierUsers({
  h, api, toast, confirmDialog, number, ago, dateTime, isReadOnly: () => view.readOnly,
});


// ---- Toasts and confirmation -------------------------------------------------------------

function toast(text, ok = true) {
  const element = h('div', { class: `toast ${ok ? 'toast-ok' : 'toast-bad'}`, role: 'status' }, text);
  $('toasts').append(element);
  setTimeout(() => element.remove(), ok ? 3500 : 7000);
}

function confirmDialog({ title, text, extra = [], okLabel = 'Confirm' }) {
  return new Promise((resolve) => {
    const dialog = $('confirm');
    $('confirm-title').textContent = title;
    $('confirm-text').textContent = text;
    $('confirm-extra').replaceChildren(...extra);
    $('confirm-ok').textContent = okLabel;
    dialog.returnValue = '';
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true });
    dialog.showModal();
  });
}

// ---- Theme -------------------------------------------------------------------------------

function applyStoredTheme() {
  const stored = localStorage.getItem('courier-theme');
  if (stored === 'light' || stored === 'dark') document.documentElement.dataset.theme = stored;
}

function toggleTheme() {
  const current = document.documentElement.dataset.theme
    || (matchMedia('(prefers-color-scheme: dark)').matches ? 'dark' : 'light');
  const next = current === 'dark' ? 'light' : 'dark';
  document.documentElement.dataset.theme = next;
  localStorage.setItem('courier-theme', next);
}

// ---- Sign-in -----------------------------------------------------------------------------

function showLogin(message) {
  view.signedIn = false;
  $('app-view').hidden = true;
  $('logout').hidden = true;
  $('readonly-badge').hidden = true;
  $('login-view').hidden = false;
  const error = $('login-error');
  error.hidden = !message;
  error.textContent = message || '';
  $('login-key').focus();
}

function signedOut(message) {
  stopLive();
  if (view.healthTimer) clearInterval(view.healthTimer);
  view.healthTimer = null;
  renderHealth(null);
  showLogin(message);
}

async function login(event) {
  event.preventDefault();
  const key = $('login-key').value.trim();
  if (!key) return;
  const response = await fetch('/admin/login', {
    method: 'POST',
    credentials: 'same-origin',
    body: new URLSearchParams({ key }),
  });
  let data = null;
  try {
    data = await response.json();
  } catch (_) {
    data = null;
  }
  if (!response.ok) {
    const message = response.status === 401 ? 'That key is not valid.' : (data && data.message) || 'Sign-in failed.';
    showLogin(message);
    return;
  }
  $('login-key').value = '';
  await start(data);
}

async function logout() {
  try {
    await fetch('/admin/logout', { method: 'POST', credentials: 'same-origin' });
  } finally {
    signedOut();
  }
}

async function start(session) {
  view.signedIn = true;
  view.readOnly = Boolean(session.readOnly);
  $('login-view').hidden = true;
  $('app-view').hidden = false;
  $('logout').hidden = false;
  $('readonly-badge').hidden = !view.readOnly;
  await loadQueues();
  const route = parseHash();
  const first = route.queue && view.queues.some((queue) => queue.name === route.queue)
    ? route.queue
    : (view.queues[0] && view.queues[0].name);
  if (route.users) showUsers();
  else if (first) selectQueue(first, route.state || view.jobState, route.job);
  startLive();
  loadHealth();
  if (!view.healthTimer) view.healthTimer = setInterval(() => loadHealth(), HEALTH_EVERY_MS);
}

// ---- Health: the server's own verdict (the checks that drive alerts), shown unless healthy --

async function loadHealth() {
  if (!view.signedIn) return;
  view.healthLoadedAt = Date.now();
  let body;
  try {
    // Unhealthy answers 503 with the same body, so the status code is not an error here.
    const response = await fetch('/api/messages/queue/health', { headers: { Accept: 'application/json' } });
    body = await response.json();
  } catch (_) {
    return;
  }
  renderHealth(body);
}

// After activity: now, or once the gap since the last check has passed (so the state after
// a burst of changes is the one shown).
function loadHealthSoon() {
  if (view.healthSoon) return;
  const wait = Math.max(0, view.healthLoadedAt + HEALTH_MIN_GAP_MS - Date.now());
  view.healthSoon = setTimeout(() => {
    view.healthSoon = null;
    loadHealth();
  }, wait);
}

function renderHealth(body) {
  const banner = $('health-banner');
  const status = body && body.overall;
  if (!status || status === 'healthy') {
    banner.hidden = true;
    banner.replaceChildren();
    return;
  }
  const issues = [];
  for (const [name, queue] of Object.entries(body.queues || {})) {
    for (const issue of queue.issues || []) issues.push([name, issue]);
  }
  for (const issue of (body.storage && body.storage.issues) || []) issues.push(['storage', issue]);
  banner.dataset.status = status;
  banner.replaceChildren(
    h('strong', null, `Health: ${status}`),
    h('ul', null, issues.map(([subject, issue]) => h('li', { 'data-check': issue.check }, `${subject}: ${issue.message}`))),
  );
  banner.hidden = false;
}

// ---- Routing (#/queue/state[/job], or #/users) ----------------------------------------------

function parseHash() {
  const parts = location.hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent);
  if (parts[0] === 'users' && parts.length === 1) return { users: true, queue: null, state: null, job: null };
  return {
    queue: parts[0] || null,
    state: STATES.includes(parts[1]) ? parts[1] : null,
    job: parts[2] || null,
  };
}

function writeHash() {
  if (!view.queue) return;
  const parts = [view.queue, view.jobState];
  if (view.detailId) parts.push(view.detailId);
  history.replaceState(null, '', `#/${parts.map(encodeURIComponent).join('/')}`);
}

// ---- Queues ------------------------------------------------------------------------------

async function loadQueues() {
  const data = await api('GET', '/admin/api/queues');
  view.readOnly = Boolean(data.readOnly);
  view.queues = data.queues;
  renderQueues();
}

function currentQueue() {
  return view.queues.find((queue) => queue.name === view.queue) || null;
}

function renderQueues() {
  const list = $('queue-list');
  list.replaceChildren(...view.queues.map((queue) => {
    const chips = STATES.map((state) => h('span', { class: `chip chip-${state}`, title: state },
      state, ' ', h('b', { 'data-testid': `count-${queue.name}-${state}` }, number(queue.counts[state]))));
    return h('button', {
      class: 'queue-card',
      type: 'button',
      'data-testid': `queue-card-${queue.name}`,
      'aria-current': queue.name === view.queue ? 'true' : 'false',
      onclick: () => selectQueue(queue.name, view.jobState),
    },
    h('div', { class: 'queue-card-head' },
      h('span', { class: 'queue-name' }, queue.name),
      queue.counts.paused ? h('span', { class: 'badge badge-warn', 'data-testid': `paused-${queue.name}` }, 'paused') : null),
    h('div', { class: 'chips' }, chips));
  }));
  renderQueueHeader();
  renderTabs();
}

function selectQueue(name, state, jobId) {
  const changed = view.queue !== name;
  users.hide();
  $('nav-users').setAttribute('aria-current', 'false');
  view.queue = name;
  view.jobState = state || 'waiting';
  view.page = 0;
  view.search = null;
  $('search-input').value = '';
  $('queue-empty').hidden = true;
  $('queue-panel').hidden = false;
  renderQueues();
  if (changed) closeDetail(false);
  loadJobs();
  loadMetrics(true);
  if (jobId) openDetail(jobId);
  writeHash();
}

// The Users page takes the place of the queue panel; no queue is selected meanwhile.
function showUsers() {
  view.queue = null;
  closeDetail(false);
  $('queue-empty').hidden = true;
  $('queue-panel').hidden = true;
  $('nav-users').setAttribute('aria-current', 'true');
  renderQueues();
  users.show();
  history.replaceState(null, '', '#/users');
}

function renderQueueHeader() {
  const queue = currentQueue();
  if (!queue) return;
  const title = $('queue-title');
  title.replaceChildren(queue.name);
  if (queue.counts.paused) title.append(h('span', { class: 'badge badge-warn' }, 'paused'));
  const meta = [`concurrency ${queue.concurrency}`];
  if (queue.rateLimit) meta.push(`at most ${queue.rateLimit.max} jobs per ${queue.rateLimit.duration} ms`);
  meta.push(`${number(STATES.reduce((sum, state) => sum + queue.counts[state], 0))} jobs`);
  $('queue-meta').textContent = meta.join(' · ');

  const actions = $('queue-actions');
  if (view.readOnly) {
    actions.replaceChildren(h('span', { class: 'badge badge-muted' }, 'read-only: actions are disabled'));
    return;
  }
  const name = queue.name;
  actions.replaceChildren(
    queue.counts.paused
      ? h('button', { class: 'button', type: 'button', 'data-testid': 'action-resume', onclick: () => act(`Resumed ${name}`, 'POST', `${queuePath(name)}/resume`) }, 'Resume')
      : h('button', { class: 'button', type: 'button', 'data-testid': 'action-pause', onclick: () => act(`Paused ${name}`, 'POST', `${queuePath(name)}/pause`) }, 'Pause'),
    h('button', {
      class: 'button', type: 'button', 'data-testid': 'action-retry-all', disabled: queue.counts.failed === 0,
      onclick: () => act('Retried failed jobs', 'POST', `${queuePath(name)}/retry-failed`, undefined, {
        title: `Retry ${number(queue.counts.failed)} failed jobs?`,
        text: 'They go back to waiting with fresh attempts.',
        okLabel: 'Retry all',
      }),
    }, `Retry failed (${number(queue.counts.failed)})`),
    h('button', {
      class: 'button', type: 'button', 'data-testid': 'action-promote-all', disabled: queue.counts.delayed === 0,
      onclick: () => act('Promoted delayed jobs', 'POST', `${queuePath(name)}/promote-delayed`, undefined, {
        title: `Run ${number(queue.counts.delayed)} delayed jobs now?`,
        text: 'They move to waiting at once instead of at their due time.',
        okLabel: 'Promote all',
      }),
    }, `Promote delayed (${number(queue.counts.delayed)})`),
    h('button', { class: 'button button-danger', type: 'button', 'data-testid': 'action-clean', onclick: () => cleanDialog(name) }, 'Clean…'),
    h('button', {
      class: 'button button-danger', type: 'button', 'data-testid': 'action-drain', disabled: queue.counts.waiting + queue.counts.delayed === 0,
      onclick: () => drainDialog(name),
    }, 'Empty…'),
  );
}

async function cleanDialog(name) {
  const select = h('select', { id: 'clean-state' }, CLEANABLE.map((state) => h('option', { value: state, selected: state === view.jobState }, state)));
  const grace = h('input', { id: 'clean-grace', type: 'number', min: '0', value: '0', step: '1' });
  const ok = await confirmDialog({
    title: `Clean jobs from ${name}`,
    text: 'Removes the jobs of a state for good, with their logs. Active jobs cannot be cleaned: cancel them instead.',
    extra: [h('label', null, 'State', select), h('label', null, 'Only jobs older than (minutes)', grace)],
    okLabel: 'Clean',
  });
  if (!ok) return;
  const minutes = Math.max(0, Number(grace.value) || 0);
  await act(`Cleaned ${select.value} jobs`, 'POST', `${queuePath(name)}/clean`, { state: select.value, graceMs: minutes * 60000 });
}

async function drainDialog(name) {
  const box = h('input', { type: 'checkbox', id: 'drain-delayed' });
  const ok = await confirmDialog({
    title: `Empty ${name}?`,
    text: 'Removes every waiting job for good.',
    extra: [h('label', null, h('span', null, box, ' delayed jobs too'))],
    okLabel: 'Empty queue',
  });
  if (!ok) return;
  await act(`Emptied ${name}`, 'POST', `${queuePath(name)}/drain`, { includeDelayed: box.checked });
}

function renderTabs() {
  const queue = currentQueue();
  if (!queue) return;
  $('state-tabs').replaceChildren(...STATES.map((state) => h('button', {
    class: 'tab',
    type: 'button',
    role: 'tab',
    'data-testid': `tab-${state}`,
    'aria-selected': !view.search && view.jobState === state ? 'true' : 'false',
    onclick: () => {
      view.jobState = state;
      view.page = 0;
      view.search = null;
      $('search-input').value = '';
      renderTabs();
      loadJobs();
      writeHash();
    },
  }, state, h('span', { class: 'count' }, number(queue.counts[state])))));
}

// ---- Job list ----------------------------------------------------------------------------

async function loadJobs() {
  const queue = view.queue;
  if (!queue) return;
  try {
    if (view.search) {
      const params = new URLSearchParams({ q: view.search, limit: '100' });
      const data = await api('GET', `${queuePath(queue)}/search?${params}`);
      if (queue !== view.queue) return;
      const caption = `${data.jobs.length} ${data.jobs.length === 1 ? 'match' : 'matches'} for “${data.query}” in ${number(data.scanned)} jobs${data.truncated ? ' (stopped early: refine the search)' : ''}`;
      renderRows(data.jobs, caption, 'No job matches.');
      $('page-info').textContent = '';
      $('page-prev').disabled = true;
      $('page-next').disabled = true;
    } else {
      const params = new URLSearchParams({
        state: view.jobState,
        offset: String(view.page * view.pageSize),
        limit: String(view.pageSize),
      });
      const data = await api('GET', `${queuePath(queue)}/jobs?${params}`);
      if (queue !== view.queue) return;
      view.total = data.total;
      const lastPage = Math.max(0, Math.ceil(data.total / view.pageSize) - 1);
      if (view.page > lastPage) {
        view.page = lastPage;
        if (data.jobs.length === 0 && data.total > 0) return loadJobs();
      }
      renderRows(data.jobs, '', `No ${view.jobState} jobs.`);
      const from = data.total === 0 ? 0 : data.offset + 1;
      const to = data.offset + data.jobs.length;
      $('page-info').textContent = `${number(from)}–${number(to)} of ${number(data.total)}`;
      $('page-prev').disabled = view.page === 0;
      $('page-next').disabled = to >= data.total;
    }
  } catch (error) {
    if (error.status !== 401) renderRows([], '', `Cannot load jobs: ${error.message}`);
  }
}

function renderRows(jobs, caption, emptyText) {
  $('list-caption').replaceChildren(caption ? caption : '');
  if (view.search) {
    $('list-caption').append(' ', h('button', { class: 'button button-ghost', type: 'button', onclick: clearSearch }, 'Clear search'));
  }
  const rows = $('job-rows');
  if (jobs.length === 0) {
    rows.replaceChildren(h('tr', { class: 'placeholder' }, h('td', { colspan: '6' }, emptyText)));
    return;
  }
  rows.replaceChildren(...jobs.map((job) => h('tr', {
    'data-testid': 'job-row',
    'data-id': job.id,
    'aria-selected': job.id === view.detailId ? 'true' : 'false',
    onclick: () => openDetail(job.id),
  },
  h('td', { class: 'mono', title: job.id }, job.id),
  h('td', { title: job.name }, job.name),
  h('td', null, stateBadge(job.state)),
  h('td', { class: 'numeric' }, `${job.attemptsMade} / ${job.attempts}`),
  h('td', { title: job.createdAt }, ago(job.createdAt)),
  job.failedReason
    ? h('td', { class: 'reason', title: job.failedReason }, job.failedReason)
    : h('td', { class: 'mono muted', title: job.dataPreview }, job.dataPreview))));
}

function clearSearch() {
  view.search = null;
  $('search-input').value = '';
  renderTabs();
  loadJobs();
}

function scheduleRefresh() {
  if (view.refreshTimer) return;
  view.refreshTimer = setTimeout(() => {
    view.refreshTimer = null;
    loadJobs();
    if (view.detailId) openDetail(view.detailId, true);
    if (Date.now() - view.metricsLoadedAt > METRICS_EVERY_MS) loadMetrics();
  }, 400);
}

// ---- Job detail --------------------------------------------------------------------------

async function openDetail(id, quiet = false) {
  const queue = view.queue;
  view.detailId = id;
  writeHash();
  for (const row of document.querySelectorAll('#job-rows tr')) {
    row.setAttribute('aria-selected', row.dataset.id === id ? 'true' : 'false');
  }
  let job;
  try {
    job = await api('GET', jobPath(queue, id));
  } catch (error) {
    if (error.status === 404 && view.detailId === id) {
      renderGoneDetail(queue, id);
    } else if (!quiet && error.status !== 401) {
      toast(error.message, false);
    }
    return;
  }
  if (view.detailId !== id || view.queue !== queue) return;
  renderDetail(job);
}

function showDetailPane() {
  $('detail').hidden = false;
  $('app-view').classList.add('with-detail');
}

function closeDetail(updateHash = true) {
  view.detailId = null;
  $('detail').hidden = true;
  $('app-view').classList.remove('with-detail');
  for (const row of document.querySelectorAll('#job-rows tr')) row.setAttribute('aria-selected', 'false');
  if (updateHash) writeHash();
}

function renderGoneDetail(queue, id) {
  showDetailPane();
  $('detail-queue').textContent = queue;
  $('detail-title').textContent = id;
  $('detail-state').className = 'state state-waiting';
  $('detail-state').textContent = 'removed';
  $('detail-actions').replaceChildren();
  $('detail-body').replaceChildren(h('p', { class: 'muted' }, 'This job no longer exists (removed, cleaned or trimmed by retention).'));
}

function section(title, ...content) {
  return h('section', { class: 'detail-section' }, h('h3', null, title), ...content);
}

function renderDetail(job) {
  showDetailPane();
  $('detail-queue').textContent = `${job.queue} · ${job.name}`;
  $('detail-title').textContent = job.id;
  const badge = $('detail-state');
  badge.className = `state state-${job.state}`;
  badge.textContent = job.state;

  const actions = [];
  if (!view.readOnly) {
    const base = jobPath(job.queue, job.id);
    if (job.state === 'failed') {
      actions.push(h('button', { class: 'button button-primary', type: 'button', 'data-testid': 'action-retry', onclick: () => act('Job sent back to waiting', 'POST', `${base}/retry`) }, 'Retry'));
    }
    if (job.state === 'delayed') {
      actions.push(h('button', { class: 'button', type: 'button', 'data-testid': 'action-promote', onclick: () => act('Job promoted', 'POST', `${base}/promote`) }, 'Run now'));
    }
    if (job.state === 'active') {
      actions.push(h('button', {
        class: 'button button-danger', type: 'button', 'data-testid': 'action-cancel',
        onclick: () => act('Job cancelled', 'POST', `${base}/cancel`, { reason: 'cancelled by an admin' }, {
          title: 'Cancel this running job?', text: 'It fails now (no retry); its processor stops at its next await point.', okLabel: 'Cancel job',
        }),
      }, 'Cancel'));
    } else {
      actions.push(h('button', {
        class: 'button button-danger', type: 'button', 'data-testid': 'action-remove',
        onclick: () => act('Job removed', 'DELETE', base, undefined, {
          title: 'Remove this job?', text: 'The job and its logs are deleted for good.', okLabel: 'Remove',
        }),
      }, 'Remove'));
    }
  }
  $('detail-actions').replaceChildren(...actions);

  const facts = [
    ['Attempts', `${job.attemptsMade} of ${job.attempts}`],
    ['Stalled', String(job.stalledCount)],
    ['Created', dateTime(job.timestamps.createdAt)],
    ['Processed', dateTime(job.timestamps.processedAt)],
    ['Finished', dateTime(job.timestamps.finishedAt)],
    [`${job.state} since`, dateTime(job.timestamps.stateSince)],
  ];
  if (job.state === 'delayed') facts.push(['Due', dateTime(job.timestamps.readyAt)]);
  const body = [
    section('Overview', h('dl', { class: 'facts' }, facts.map(([term, value]) => [h('dt', null, term), h('dd', null, value)]))),
    section('Progress', progressView(job.progress)),
  ];
  if (job.failedReason) {
    body.push(section('Failed reason', h('pre', { class: 'bad', 'data-testid': 'job-failed-reason' }, job.failedReason)));
  }
  if (job.stacktrace && job.stacktrace.length) {
    body.push(section(`Errors of each attempt (${job.stacktrace.length})`, h('pre', null, job.stacktrace.map((trace, index) => `#${index + 1} ${trace}`).join('\n\n'))));
  }
  body.push(section('Data', h('pre', { 'data-testid': 'job-data' }, pretty(job.data))));
  if (job.returnValue !== null && job.returnValue !== undefined) {
    body.push(section('Return value', h('pre', { 'data-testid': 'job-return-value' }, pretty(job.returnValue))));
  }
  body.push(section('Options', h('pre', null, pretty(job.options))));
  body.push(section(`Logs (${job.logs.length})`, job.logs.length
    ? h('ol', { class: 'logs' }, job.logs.map((line) => h('li', null, line)))
    : h('p', { class: 'muted' }, 'No log lines.')));
  $('detail-body').replaceChildren(...body);
}

function progressView(progress) {
  if (typeof progress === 'number') {
    const percent = Math.max(0, Math.min(100, progress));
    // Through the CSSOM: the CSP refuses inline style attributes.
    const bar = h('span');
    bar.style.width = `${percent}%`;
    return h('div', null, `${progress}%`, h('div', { class: 'progress' }, bar));
  }
  return h('pre', null, pretty(progress));
}

// ---- Actions -----------------------------------------------------------------------------

async function act(success, method, path, body, confirmation) {
  if (view.readOnly) return;
  if (confirmation && !(await confirmDialog(confirmation))) return;
  try {
    const result = await api(method, path, body);
    const count = result && typeof result.count === 'number' ? ` (${number(result.count)})` : '';
    toast(`${success}${count}`);
  } catch (error) {
    if (error.status !== 401) toast(error.message, false);
  }
  await refreshAll();
}

async function refreshAll() {
  try {
    await loadQueues();
  } catch (_) {
    return;
  }
  loadHealthSoon();
  loadJobs();
  if (view.detailId) openDetail(view.detailId, true);
}


// ---- Live updates: server-sent events, polling while they are down -------------------------

function setLive(state, text) {
  $('live').dataset.state = state;
  $('live-text').textContent = text;
}

function startLive() {
  stopLive();
  const source = new EventSource('/admin/api/events');
  view.source = source;
  source.addEventListener('open', () => {
    setLive('live', 'live');
    stopPolling();
  });
  source.addEventListener('update', (event) => {
    let update;
    try {
      update = JSON.parse(event.data);
    } catch (_) {
      return;
    }
    if (update.queues && update.queues.length) {
      view.queues = update.queues;
      renderQueues();
      loadHealthSoon();
    }
    const touched = update.unlisted > 0 || update.events.some((item) => item.queue === view.queue);
    if (touched) scheduleRefresh();
  });
  source.addEventListener('error', () => {
    setLive('polling', 'reconnecting');
    startPolling();
    if (source.readyState === EventSource.CLOSED) {
      // The server refused the stream (a lost session, or it restarted): check, then retry.
      setTimeout(() => {
        if (view.signedIn && view.source === source) startLive();
      }, POLL_EVERY_MS);
    }
  });
}

function stopLive() {
  if (view.source) view.source.close();
  view.source = null;
  stopPolling();
  setLive('off', 'offline');
}

function startPolling() {
  if (view.pollTimer) return;
  view.pollTimer = setInterval(() => {
    refreshAll();
    if (Date.now() - view.metricsLoadedAt > METRICS_EVERY_MS) loadMetrics();
  }, POLL_EVERY_MS);
}

function stopPolling() {
  if (view.pollTimer) clearInterval(view.pollTimer);
  view.pollTimer = null;
}

// ---- Wiring --------------------------------------------------------------------------------

function wire() {
  $('login-form').addEventListener('submit', (event) => {
    login(event).catch((error) => showLogin(error.message));
  });
  $('logout').addEventListener('click', logout);
  $('nav-users').addEventListener('click', showUsers);
  $('theme-toggle').addEventListener('click', toggleTheme);
  $('detail-close').addEventListener('click', () => closeDetail());
  $('page-prev').addEventListener('click', () => {
    view.page = Math.max(0, view.page - 1);
    loadJobs();
  });
  $('page-next').addEventListener('click', () => {
    view.page += 1;
    loadJobs();
  });
  $('page-size').addEventListener('change', (event) => {
    view.pageSize = Number(event.target.value) || 20;
    view.page = 0;
    loadJobs();
  });
  $('search-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const text = $('search-input').value.trim();
    view.search = text || null;
    renderTabs();
    loadJobs();
  });
  // Charts are drawn at their container's width; redraw when the layout changes it (a window
  // resize, the detail pane opening).
  let resizeTimer = null;
  const widths = new Map();
  const observer = new ResizeObserver((entries) => {
    const changed = entries.some((entry) => {
      const width = Math.round(entry.contentRect.width);
      const before = widths.get(entry.target);
      widths.set(entry.target, width);
      return before !== undefined && before !== width;
    });
    if (!changed) return;
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      if (view.lastMetrics) drawCharts(view.lastMetrics);
    }, 100);
  });
  observer.observe($('throughput-chart'));
  observer.observe($('latency-chart'));
  document.addEventListener('keydown', (event) => {
    if (event.key === 'Escape' && !$('detail').hidden && !$('confirm').open) closeDetail();
  });
  // Relative times age; refresh them now and then without refetching anything else.
  setInterval(() => {
    if (view.signedIn && !document.hidden && !view.source) loadJobs();
  }, 60000);
}

async function boot() {
  applyStoredTheme();
  wire();
  try {
    const session = await api('GET', '/admin/api/session');
    await start(session);
  } catch (error) {
    showLogin(error.status === 429 ? error.message : '');
  }
}

onSessionEnd(() => signedOut('Your session has ended. Sign in again.'));
boot();
