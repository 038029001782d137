/**
 * Cursor stores. Each has get(key) -> string | null (or a Promise of one) and
 * set(key, value: string) (its result may be a Promise).
 */

/** A store that lives as long as the client object. */
export function memoryStorage () {
  const values = new Map()
  return {
    get: (key) => (values.has(key) ? values.get(key) : null),
    set: (key, value) => { values.set(key, value) }
  }
}

/** wx.getStorageSync / wx.setStorageSync; a missing key reads as '' there, returned as null. */
export function wxStorage (wx) {
  return {
    get (key) {
      const v = wx.getStorageSync(key)
      return typeof v === 'string' && v !== '' ? v : null
    },
    set (key, value) { wx.setStorageSync(key, value) }
  }
}

/** A Web Storage object (localStorage). */
export function webStorage (ls) {
  return {
    get: (key) => ls.getItem(key),
    set: (key, value) => { ls.setItem(key, value) }
  }
}

/**
 * The default store: the mini-program's storage when wx is there, else localStorage when it
 * can be used (reading it throws in some sandboxed pages), else memory.
 * @param {any} wx the wx object, or undefined
 */
export function defaultStorage (wx) {
  if (wx && typeof wx.getStorageSync === 'function' && typeof wx.setStorageSync === 'function') {
    return wxStorage(wx)
  }
  try {
    const ls = globalThis.localStorage
    if (ls && typeof ls.getItem === 'function') return webStorage(ls)
  } catch (_) {
    // localStorage access denied: fall through to memory
  }
  return memoryStorage()
}
