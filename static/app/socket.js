// The real-time connection (`/ws`): JSON frames `{type, data}`, reconnecting with exponential
// backoff and jitter, a heartbeat that notices a dead connection, and the browser's
// online/offline events. Every (re)connection reports `open`, after which the app catches up
// through the HTTP API, so nothing sent while the socket was down is lost.

const BACKOFF_MS = [500, 1000, 2000, 4000, 8000, 15000];
const PING_EVERY_MS = 25000;
const PONG_WITHIN_MS = 10000;
const SESSION_ENDED = 4401;

export class Realtime {
  /**
   * `onFrame(type, data)` for each server frame; `onState(state, detail)` with `connecting`,
   * `open`, `waiting` (`{retryAt}`) or `offline`; `onFailedConnect()` when a connection never
   * opened or the server ended it because the sign-in session ended (the app checks who is
   * signed in). `userId` is the user this tab shows: the server refuses the socket if the
   * cookie now belongs to someone else.
   */
  constructor({ onFrame, onState, onFailedConnect, userId }) {
    this.onFrame = onFrame;
    this.onState = onState;
    this.onFailedConnect = onFailedConnect;
    this.userId = userId;
    this.socket = null;
    this.attempt = 0;
    this.stopped = true;
    this.retryTimer = null;
    this.pingTimer = null;
    this.pongTimer = null;
    this.state = 'idle';
    this.handleOnline = () => this.reconnectNow();
    this.handleOffline = () => this.drop();
    this.handleVisible = () => {
      if (document.visibilityState === 'visible' && this.state === 'waiting') this.reconnectNow();
    };
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    window.addEventListener('online', this.handleOnline);
    window.addEventListener('offline', this.handleOffline);
    document.addEventListener('visibilitychange', this.handleVisible);
    if (navigator.onLine === false) this.waitOffline();
    else this.connect();
  }

  stop() {
    this.stopped = true;
    window.removeEventListener('online', this.handleOnline);
    window.removeEventListener('offline', this.handleOffline);
    document.removeEventListener('visibilitychange', this.handleVisible);
    this.clearTimers();
    if (this.socket) {
      const socket = this.socket;
      this.socket = null;
      socket.close(1000, 'logout');
    }
    this.state = 'idle';
  }

  get isOpen() {
    return this.socket !== null && this.socket.readyState === WebSocket.OPEN;
  }

  /** Sends a frame if connected; returns whether it went out. */
  send(type, data) {
    if (!this.isOpen) return false;
    this.socket.send(JSON.stringify(data === undefined ? { type } : { type, data }));
    return true;
  }

  /** Connects at once (the user asked, or the network came back). */
  reconnectNow() {
    if (this.stopped) return;
    this.attempt = 0;
    if (this.state === 'open' || this.state === 'connecting') return;
    this.clearTimers();
    this.connect();
  }

  setState(state, detail) {
    this.state = state;
    this.onState(state, detail);
  }

  clearTimers() {
    clearTimeout(this.retryTimer);
    clearInterval(this.pingTimer);
    clearTimeout(this.pongTimer);
    this.retryTimer = this.pingTimer = this.pongTimer = null;
  }

  connect() {
    if (this.stopped) return;
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const socket = new WebSocket(`${scheme}://${location.host}/ws?user=${encodeURIComponent(this.userId)}`);
    this.socket = socket;
    let opened = false;
    this.setState('connecting');
    socket.addEventListener('open', () => {
      if (this.socket !== socket) return;
      opened = true;
      this.attempt = 0;
      this.startHeartbeat();
      this.setState('open');
    });
    socket.addEventListener('message', (event) => {
      if (this.socket !== socket) return;
      // Any frame proves the connection is alive.
      clearTimeout(this.pongTimer);
      this.pongTimer = null;
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      if (frame && typeof frame.type === 'string' && frame.type !== 'pong') {
        this.onFrame(frame.type, frame.data);
      }
    });
    socket.addEventListener('close', (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.clearTimers();
      if (this.stopped) return;
      // 4401: the sign-in session ended (logout elsewhere, password change).
      if (!opened || event.code === SESSION_ENDED) this.onFailedConnect?.();
      if (navigator.onLine === false) {
        this.waitOffline();
        return;
      }
      this.scheduleRetry();
    });
  }

  /** Closes the current socket without waiting for the server (the network is gone). */
  drop() {
    if (this.stopped) return;
    this.clearTimers();
    if (this.socket) {
      const socket = this.socket;
      this.socket = null;
      socket.close();
    }
    this.waitOffline();
  }

  /** Waits for the `online` event, trying now and then in case the browser never sends it. */
  waitOffline() {
    this.retryTimer = setTimeout(() => this.connect(), BACKOFF_MS[BACKOFF_MS.length - 1]);
    this.setState('offline');
  }

  scheduleRetry() {
    const base = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)];
    const delay = Math.round(base * (0.8 + Math.random() * 0.4));
    this.attempt += 1;
    this.retryTimer = setTimeout(() => this.connect(), delay);
    this.setState('waiting', { retryAt: Date.now() + delay });
  }

  startHeartbeat() {
    this.pingTimer = setInterval(() => {
      if (!this.send('ping')) return;
      clearTimeout(this.pongTimer);
      this.pongTimer = setTimeout(() => {
        // No answer: the connection is dead even if the browser has not noticed.
        const socket = this.socket;
        if (!socket) return;
        this.socket = null;
        this.clearTimers();
        socket.close();
        this.scheduleRetry();
      }, PONG_WITHIN_MS);
    }, PING_EVERY_MS);
  }
}
