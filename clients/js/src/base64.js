const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
let table

/**
 * Decodes standard base64 (padding optional) into bytes. Written out rather than taken from
 * atob or Buffer so that it runs the same in browsers, mini-programs and Node.
 * @param {string} s
 * @returns {Uint8Array}
 * @throws {SyntaxError} on a character outside the alphabet or an impossible length
 */
export function decodeBase64 (s) {
  if (!table) {
    table = new Uint8Array(128).fill(255)
    for (let i = 0; i < ALPHABET.length; i++) table[ALPHABET.charCodeAt(i)] = i
  }
  let len = s.length
  while (len > 0 && s.charCodeAt(len - 1) === 61 /* = */) len--
  if (len % 4 === 1 || s.length - len > 2) throw new SyntaxError('invalid base64')
  const out = new Uint8Array((len * 3) >> 2)
  let acc = 0
  let bits = 0
  let j = 0
  for (let i = 0; i < len; i++) {
    const c = s.charCodeAt(i)
    const v = c < 128 ? table[c] : 255
    if (v === 255) throw new SyntaxError('invalid base64')
    acc = ((acc << 6) | v) & 0xffffff
    bits += 6
    if (bits >= 8) {
      bits -= 8
      out[j++] = (acc >> bits) & 0xff
    }
  }
  return out
}
