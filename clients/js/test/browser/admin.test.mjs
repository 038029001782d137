// The admin page (/admin/) in real headless Chromium, against a real worker with JetStream and
// real WebSocket clients: the password prompt (HTTP Basic, the API key), the live counts, a
// presence lookup, publishing with receipts and durably, the recent events shown as text, and a
// screenshot.
//
// Needs Debian's chromium (`apt-get install chromium`), or CHROMIUM_PATH naming another
// Chromium. UPDATE_SCREENSHOT=1 also writes the screenshot to docs/admin.png.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { accessSync, constants, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { chromium } from 'playwright-core'
import WebSocket from 'ws'
import { natsConnect, repoRoot, startNATS, startWorker } from '../helpers/worker.mjs'

const chromiumPath = process.env.CHROMIUM_PATH || '/usr/bin/chromium'
const chromiumArgs = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'
]
const WAIT = 15_000
// Starting Chromium on a busy machine can take longer than any wait on the page.
const LAUNCH_WAIT = 60_000
const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])
const KEY = 'admin-test-key-0123456789abcdef0123456789'

const scratch = mkdtempSync(join(tmpdir(), 'nw-admin-browser-'))
after(() => rmSync(scratch, { recursive: true, force: true }))

before(() => {
  try {
    accessSync(chromiumPath, constants.X_OK)
  } catch (err) {
    throw new Error(`headless Chromium is needed at ${chromiumPath} (${err.code}): ` +
      'apt-get install chromium, or set CHROMIUM_PATH to a Chromium binary')
  }
})

/** Chromium with a fresh profile, and the password when given; records console errors. */
async function openBrowser (t, password) {
  const profile = mkdtempSync(join(scratch, 'profile-'))
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: chromiumPath,
    headless: true,
    args: chromiumArgs,
    viewport: { width: 1280, height: 900 },
    timeout: LAUNCH_WAIT,
    ...(password ? { httpCredentials: { username: 'ops', password } } : {})
  })
  t.after(() => context.close())
  const page = context.pages()[0] ?? await context.newPage()
  page.setDefaultTimeout(WAIT)
  const problems = []
  page.on('console', (msg) => {
    if (msg.type() === 'error') problems.push(msg.text())
  })
  page.on('pageerror', (err) => problems.push(`uncaught: ${err.message}`))
  return { page, problems }
}

/** A v1 client identified as name that keeps every frame it receives. */
async function wsClient (t, url, name) {
  const ws = new WebSocket(url)
  t.after(() => ws.terminate())
  const frames = []
  const waiters = []
  ws.on('message', (data) => {
    frames.push(data.toString())
    for (const w of waiters.splice(0)) w()
  })
  await new Promise((resolve, reject) => {
    ws.once('open', resolve)
    ws.once('error', reject)
  })
  ws.send(JSON.stringify({ name }))
  const client = {
    frames,
    /** Resolves once a frame equal to want has arrived; rejects after WAIT. */
    next (want) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${name} did not receive ${want}; got ${JSON.stringify(frames)}`)), WAIT)
        const check = () => {
          if (frames.includes(want)) {
            clearTimeout(timer)
            resolve()
          } else {
            waiters.push(check)
          }
        }
        check()
      })
    }
  }
  await client.next(JSON.stringify({ type: 'welcome', name }))
  return client
}

const text = (page, sel) => page.textContent(sel)

test('the admin page asks for the key, shows live counts, presence, receipts and events', { timeout: 120_000 }, async (t) => {
  const nats = await startNATS()
  const worker = await startWorker({ natsURL: nats.url, env: { NOTIFY_API_KEY: KEY, NOTIFY_WORKER_ID: 'admin-test' } })
  const nc = await natsConnect(nats.url)

  // Without the password: 401 with the Basic challenge that makes a browser prompt for it
  // (headless Chromium cannot show the prompt, so plain requests check the challenge).
  for (const path of ['/admin/', '/admin/api/stats']) {
    const resp = await fetch(`${worker.httpURL}${path}`)
    assert.equal(resp.status, 401)
    assert.match(resp.headers.get('www-authenticate'), /^Basic realm="notify-worker admin"/)
  }
  {
    const wrong = Buffer.from('ops:not-the-key-0123456789abcdef0123456789').toString('base64')
    const resp = await fetch(`${worker.httpURL}/admin/`, { headers: { Authorization: `Basic ${wrong}` } })
    assert.equal(resp.status, 401)
  }

  const { page, problems } = await openBrowser(t, KEY)
  try {
    const resp = await page.goto(`${worker.httpURL}/admin/`)
    assert.equal(resp.status(), 200)
    assert.match(resp.headers()['content-security-policy'], /default-src 'none'; script-src 'self'/)
    await page.waitForFunction(() => document.getElementById('worker-id').textContent === 'admin-test')
    assert.equal(await text(page, '#nats-state'), 'connected')

    const alice1 = await wsClient(t, worker.url, 'alice')
    const alice2 = await wsClient(t, worker.url, 'alice')
    await wsClient(t, worker.url, 'bob')
    await page.waitForFunction(() => document.getElementById('stat-connections').textContent === '3' &&
      document.getElementById('stat-names').textContent === '2')

    // Presence, fleet-wide: nobody is offline; alice has two sessions here.
    await page.fill('#presence-name', 'nobody')
    await page.click('#presence-form button')
    await page.waitForSelector('#presence-result.bad')
    assert.equal(await text(page, '#presence-result'), 'nobody is offline on every worker that answered')
    await page.fill('#presence-name', 'alice')
    await page.click('#presence-form button')
    await page.waitForSelector('#presence-result.ok')
    assert.equal(await text(page, '#presence-result'), 'alice is online: 2 sessions on admin-test (2)')

    // Publish with receipts: both sessions get it and the receipt says so.
    await page.fill('#publish-name', 'alice')
    await page.fill('#publish-data', '{"title":"from the admin page"}')
    await page.check('input[name=mode][value=receipt]')
    await page.click('#publish-form button')
    await page.waitForSelector('#publish-result.ok')
    assert.equal(await text(page, '#publish-result'), 'delivered to 2 sessions (admin-test: 2)')
    await alice1.next('{"title":"from the admin page"}')
    await alice2.next('{"title":"from the admin page"}')

    // Durable: stored, with its sequence.
    await page.check('input[name=mode][value=durable]')
    await page.fill('#publish-data', '{"title":"stored"}')
    await page.click('#publish-form button')
    await page.waitForFunction(() => document.getElementById('publish-result').textContent.startsWith('stored as seq'))
    assert.match(await text(page, '#publish-result'), /^stored as seq \d+ in NOTIFY$/)
    await alice1.next('{"title":"stored"}')

    // The counters follow: two deliveries with receipts, two durable ones.
    await page.waitForFunction(() => document.getElementById('stat-deliveries').textContent === '4')
    assert.equal(await text(page, '#stat-drops'), '0')

    // Recent events: the fleet's, newest first; a body is shown as text, never as HTML.
    nc.publish('notify.event.offline.carol', JSON.stringify({
      name: 'carol', worker: 'w9', sessions: 0, at: new Date().toISOString(), code: 1001, reason: '<img src=x onerror="window.pwned=1">'
    }))
    nc.publish('notify.event.ack.alice', JSON.stringify({ name: 'alice', seq: 7, worker: 'w9', at: new Date().toISOString() }))
    await nc.flush()
    await page.waitForSelector('#events li[data-kind="ack"][data-name="alice"]')
    const lines = await page.$$eval('#events li', (nodes) => nodes.map((n) => [n.dataset.kind, n.dataset.name, n.querySelector('.ev-data').textContent]))
    const ack = lines.findIndex(([k, n]) => k === 'ack' && n === 'alice')
    const offline = lines.findIndex(([k, n]) => k === 'offline' && n === 'carol')
    assert.ok(ack >= 0 && offline > ack, `events newest first: ${JSON.stringify(lines)}`)
    assert.equal(lines[ack][2], 'worker w9 · seq 7')
    assert.equal(lines[offline][2], 'worker w9 · sessions 0 · code 1001 · <img src=x onerror="window.pwned=1">')
    assert.equal(await page.$('#events img'), null)
    assert.equal(await page.evaluate(() => window.pwned), undefined)
    assert.equal(await page.isHidden('#events-empty'), true)
    // The worker's own events: alice's and bob's first sessions here.
    for (const name of ['alice', 'bob']) {
      const online = lines.find(([k, n]) => k === 'online' && n === name)
      assert.ok(online, `no online event of ${name}: ${JSON.stringify(lines)}`)
      assert.match(online[2], /^worker admin-test · sessions 1$/)
    }

    const png = await page.screenshot({ fullPage: true, animations: 'disabled' })
    assert.ok(png.length > 1000)
    assert.deepEqual(png.subarray(0, 8), PNG_SIGNATURE)
    writeFileSync(join(scratch, 'admin.png'), png)
    if (process.env.UPDATE_SCREENSHOT === '1') writeFileSync(join(repoRoot, 'docs', 'admin.png'), png)

    // A bad name is the API's 400, shown as such.
    await page.check('input[name=mode][value=plain]')
    await page.fill('#publish-name', 'not valid')
    await page.evaluate(() => { document.getElementById('publish-name').removeAttribute('pattern') })
    await page.click('#publish-form button')
    await page.waitForSelector('#publish-result.bad')
    assert.match(await text(page, '#publish-result'), /^HTTP 400: name: /)

    // On a phone-sized screen nothing overflows sideways.
    await page.setViewportSize({ width: 390, height: 844 })
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth)
    assert.ok(overflow <= 0, `the page is ${overflow} px wider than a 390 px screen`)

    // Chromium logs the one 400 the test provoked on purpose.
    const provoked = 'Failed to load resource: the server responded with a status of 400 (Bad Request)'
    assert.deepEqual(problems.filter((p) => p !== provoked), [], 'console errors')
  } catch (err) {
    const shown = await page.evaluate(() => document.body.innerText).catch((e) => `(page unreadable: ${e.message})`)
    err.message += `\npage:\n${shown}\nworker log:\n${worker.logs().slice(-30).join('\n')}`
    throw err
  }
})
