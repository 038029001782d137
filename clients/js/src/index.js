/**
 * notify-worker-client: a client for notify-worker's WebSocket protocol v2 (resume by
 * stream sequence), for browsers, WeChat mini-programs and Node.
 *
 * Sequences are JavaScript numbers: cursors above 2^53 (Number.MAX_SAFE_INTEGER) are not
 * supported.
 */
export { NotifyClient, SEND_BUFFER_SIZE, WELCOME_TIMEOUT, STABLE_AFTER, STORE_INTERVAL, RESTART_JITTER } from './client.js'
export { backoffDelay, BACKOFF_BASE, BACKOFF_MAX } from './backoff.js'
