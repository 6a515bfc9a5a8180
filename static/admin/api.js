// The dashboard's shared state and its calls to the server's admin API.
//
// Same rule as app.js: job data reaches the page as text only, never as markup.

export const STATES = ['waiting', 'active', 'delayed', 'completed', 'failed'];
export const CLEANABLE = ['completed', 'failed', 'delayed', 'waiting'];
export const METRICS_EVERY_MS = 10000;
export const POLL_EVERY_MS = 5000;
// Health is rechecked at most this often after activity, and at least this often anyway.
export const HEALTH_MIN_GAP_MS = 2000;
export const HEALTH_EVERY_MS = 15000;

export const view = {
  queues: [],
  readOnly: false,
  queue: null,
  jobState: 'waiting',
  page: 0,
  pageSize: 20,
  total: 0,
  search: null,
  detailId: null,
  source: null,
  pollTimer: null,
  refreshTimer: null,
  metricsLoadedAt: 0,
  lastMetrics: null,
  signedIn: false,
  healthTimer: null,
  healthSoon: null,
  healthLoadedAt: 0,
};

// ---- API ---------------------------------------------------------------------------------

// What a 401 does while signed in; the entry module sets it (it owns the sign-in form).
let sessionEnded = () => {};

export function onSessionEnd(callback) {
  sessionEnded = callback;
}

export class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export async function api(method, path, body) {
  const options = { method, headers: { Accept: 'application/json' }, credentials: 'same-origin' };
  if (body !== undefined) {
    options.headers['Content-Type'] = 'application/json';
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  let data = null;
  try {
    data = await response.json();
  } catch (_) {
    data = null;
  }
  if (!response.ok) {
    const message = data && data.message ? data.message : `request failed (${response.status})`;
    if (response.status === 401 && view.signedIn) sessionEnded();
    throw new HttpError(response.status, message);
  }
  return data;
}

export const queuePath = (queue) => `/admin/api/queues/${encodeURIComponent(queue)}`;
export const jobPath = (queue, id) => `${queuePath(queue)}/jobs/${encodeURIComponent(id)}`;
