// The JSON API, same origin, authenticated by the http-only `jwt` cookie.

/** A failed request: `status` 0 means the network, not the server. */
export class ApiError extends Error {
  constructor(status, message, retryAfter = null) {
    super(message);
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

const REQUEST_TIMEOUT_MS = 30000;
/** Uploads (up to `FILE_MAX_MB`) may take minutes on a slow link. */
const UPLOAD_TIMEOUT_MS = 10 * 60 * 1000;
/** The server's answer (409) when the cookie now belongs to someone else than this tab's user. */
export const IDENTITY_CHANGED = 'You are signed in as someone else in another tab';
let unauthorizedHandler = null;
let identityChangedHandler = null;
let expectedUser = null;

/** Called when an authenticated request answers 401 (the session ended). */
export function onUnauthorized(handler) {
  unauthorizedHandler = handler;
}

/** Called when the cookie signs in someone else than this tab's user (another tab did). */
export function onIdentityChanged(handler) {
  identityChangedHandler = handler;
}

/**
 * The user this tab shows (`null` when signed out). Every request names it, and the server
 * refuses one whose cookie now belongs to someone else instead of acting as them.
 */
export function setExpectedUser(id) {
  expectedUser = id || null;
}

export async function api(method, path, body) {
  const init = { method, headers: { accept: 'application/json' }, credentials: 'same-origin' };
  if (expectedUser) init.headers['x-courier-user'] = expectedUser;
  if (body instanceof FormData) {
    // Multipart: the browser sets the content type with its boundary.
    init.body = body;
  } else if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  if (typeof AbortSignal !== 'undefined' && AbortSignal.timeout) {
    init.signal = AbortSignal.timeout(body instanceof FormData ? UPLOAD_TIMEOUT_MS : REQUEST_TIMEOUT_MS);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, navigator.onLine === false
      ? 'You are offline. Check your connection and try again.'
      : 'Could not reach the server. Try again in a moment.');
  }
  const text = await response.text().catch(() => '');
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const message = (data && typeof data.message === 'string' && data.message)
      || `Something went wrong (${response.status}).`;
    // A 401 anywhere but the login and sign-up forms means the session has ended.
    const isForm = path === '/api/auth/login' || path === '/api/auth/signup';
    if (response.status === 401 && !isForm && unauthorizedHandler) {
      unauthorizedHandler();
    }
    if (response.status === 409 && message === IDENTITY_CHANGED && identityChangedHandler) {
      identityChangedHandler();
    }
    throw new ApiError(response.status, message, response.headers.get('retry-after'));
  }
  return data;
}

export const get = (path) => api('GET', path);
export const post = (path, body) => api('POST', path, body);
export const put = (path, body) => api('PUT', path, body);
export const del = (path) => api('DELETE', path);
