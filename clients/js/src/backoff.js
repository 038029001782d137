/** First reconnect delay bound, in milliseconds. */
export const BACKOFF_BASE = 500
/** Largest reconnect delay bound, in milliseconds. */
export const BACKOFF_MAX = 30000

/**
 * Full-jitter exponential backoff: a delay drawn uniformly from
 * [0, min(BACKOFF_MAX, BACKOFF_BASE * 2^attempt)).
 * @param {number} attempt failed attempts so far, from 0
 * @param {() => number} random a value in [0, 1)
 * @returns {number} milliseconds
 */
export function backoffDelay (attempt, random) {
  return random() * Math.min(BACKOFF_MAX, BACKOFF_BASE * Math.pow(2, attempt))
}
