// The demo page (/demo/) in real headless Chromium, against a real worker with JetStream:
// connect as a name, receive a durable and an ephemeral notification as cards, survive a
// worker killed and restarted (NATS kept) with the message published meanwhile shown exactly
// once, and take a screenshot. With NOTIFY_AUTH=jwt and NOTIFY_DEMO=on the page connects with
// a token instead.
//
// Needs Debian's chromium (`apt-get install chromium`), or CHROMIUM_PATH naming another
// Chromium. UPDATE_SCREENSHOT=1 also writes the screenshot to docs/demo.png.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { accessSync, constants, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { chromium } from 'playwright-core'
import {
  natsConnect, publishCore, publishDurable, repoRoot, startNATS, startWorker
} from '../helpers/worker.mjs'
import { signToken, testSecret } from '../helpers/jwt.mjs'

const chromiumPath = process.env.CHROMIUM_PATH || '/usr/bin/chromium'
const chromiumArgs = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'
]
// Every wait on the page is bounded by this; reconnecting after the restart includes the
// client's backoff, so it gets longer.
const WAIT = 15_000
const RECONNECT_WAIT = 45_000
const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])

const scratch = mkdtempSync(join(tmpdir(), 'nw-demo-browser-'))
after(() => rmSync(scratch, { recursive: true, force: true }))

before(() => {
  try {
    accessSync(chromiumPath, constants.X_OK)
  } catch (err) {
    throw new Error(`headless Chromium is needed at ${chromiumPath} (${err.code}): ` +
      'apt-get install chromium, or set CHROMIUM_PATH to a Chromium binary')
  }
})

/**
 * Launches Chromium with a fresh profile and opens a page that records console errors and
 * uncaught exceptions. close() shuts the browser down.
 */
async function openBrowser (t) {
  const profile = mkdtempSync(join(scratch, 'profile-'))
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: chromiumPath,
    headless: true,
    args: chromiumArgs,
    viewport: { width: 1280, height: 860 },
    timeout: WAIT
  })
  t.after(() => context.close())
  const page = context.pages()[0] ?? await context.newPage()
  page.setDefaultTimeout(WAIT)
  const problems = []
  page.on('console', (msg) => {
    if (msg.type() === 'error') problems.push(msg.text())
  })
  page.on('pageerror', (err) => problems.push(`uncaught: ${err.message}`))
  return { context, page, problems }
}

/**
 * The console errors a test did not expect: Chromium logs each WebSocket connection that
 * fails, which the page's own reconnects do while the worker is down (wsURL).
 */
function unexpected (problems, wsURL) {
  const refused = `WebSocket connection to '${wsURL}' failed`
  return problems.filter((p) => !p.startsWith(refused))
}

/** The cards on the page, newest first, as the test reads them: data attributes and text. */
function cards (page) {
  return page.$$eval('#cards > .card', (nodes) => nodes.map((n) => ({
    kind: n.dataset.kind,
    seq: n.dataset.seq === undefined ? undefined : Number(n.dataset.seq),
    replay: n.dataset.replay === 'true',
    tag: n.querySelector('.tag').textContent,
    body: n.querySelector('.card-body').textContent
  })))
}

async function facts (page) {
  return page.evaluate(() => ({
    state: document.getElementById('state').dataset.state,
    cursor: document.getElementById('cursor').dataset.cursor,
    recovered: document.getElementById('recovered').dataset.recovered,
    reason: document.getElementById('recovered').dataset.reason,
    replayed: document.getElementById('replayed').dataset.replayed,
    count: document.getElementById('count').dataset.count
  }))
}

/** Waits until the card with stream sequence seq is on the page. */
function waitForSeq (page, seq, timeout = WAIT) {
  return page.waitForSelector(`#cards > .card[data-kind="durable"][data-seq="${seq}"]`, { timeout })
}

function waitForState (page, state, timeout = WAIT) {
  return page.waitForSelector(`#state[data-state="${state}"]`, { timeout })
}

/** Checks that png is a non-empty PNG and returns it. */
/**
 * Runs body; a failure carries what the page showed and the worker's last log lines.
 */
async function explained (page, worker, body) {
  try {
    await body()
  } catch (err) {
    const shown = await Promise.all([facts(page), cards(page)]).catch((e) => [`(page unreadable: ${e.message})`])
    err.message += `\npage: ${JSON.stringify(shown)}\nworker log:\n${worker.logs().slice(-30).join('\n')}`
    throw err
  }
}

function checkPNG (png) {
  assert.ok(png.length > 1000, `screenshot of ${png.length} bytes`)
  assert.deepEqual(png.subarray(0, 8), PNG_SIGNATURE, 'screenshot is not a PNG')
  return png
}

test('the demo page connects, shows durable and ephemeral cards, and survives a worker restart', { timeout: 180_000 }, async (t) => {
  const nats = await startNATS()
  const worker = await startWorker({ natsURL: nats.url })
  const nc = await natsConnect(nats.url)
  const js = nc.jetstream()
  const { context, page, problems } = await openBrowser(t)
  const name = 'alice'
  await explained(page, worker, async () => {
    // The page loads its settings and prefills the name from ?name=.
    const resp = await page.goto(`${worker.httpURL}/demo/?name=${name}`)
    assert.equal(resp.status(), 200)
    assert.match(resp.headers()['content-security-policy'], /script-src 'self'/)
    await page.waitForSelector('body[data-ready="true"]')
    assert.equal(await page.inputValue('#name'), name)
    const command = (kind) => page.textContent(`.command[data-command="${kind}"] code`)
    assert.equal(await command('user-core'), `nats pub notify.user.${name} '{"title":"hello-${name}"}'`)
    assert.equal(await command('user-durable'), `nats request durable.notify.user.${name} '{"title":"stored-for-${name}"}'`)
    assert.equal(await command('all-core'), 'nats pub notify.all \'{"title":"hello-everyone"}\'')
    assert.equal(await command('all-durable'), 'nats request durable.notify.all \'{"title":"stored-for-everyone"}\'')
    assert.equal((await facts(page)).state, 'idle')

    // A copy button puts its command on the clipboard.
    await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: worker.httpURL })
    await page.click('.command[data-command="user-durable"] .copy')
    await page.waitForSelector('.command[data-command="user-durable"] .copy.copied')
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), await command('user-durable'))

    await page.click('#connect')
    await waitForState(page, 'connected')
    let f = await facts(page)
    assert.equal(f.recovered, 'true')
    assert.equal(f.replayed, '0')
    assert.equal(await page.isDisabled('#connect'), true)
    assert.equal(await page.isEnabled('#disconnect'), true)

    // A durable notification shows its sequence; an ephemeral one says so.
    const seq1 = await publishDurable(js, name, { title: 'order shipped', order: 1234 })
    await waitForSeq(page, seq1)
    await publishCore(nc, name, { typing: true })
    await page.waitForSelector('#cards > .card[data-kind="ephemeral"]')
    await publishCore(nc, name, new Uint8Array([0xde, 0xad, 0xbe, 0xef]))
    await page.waitForSelector('#count[data-count="3"]')
    let shown = await cards(page)
    assert.deepEqual(shown.map((c) => [c.kind, c.seq]), [['ephemeral', undefined], ['ephemeral', undefined], ['durable', seq1]])
    assert.equal(shown[2].tag, `seq ${seq1}`)
    assert.equal(shown[2].body, JSON.stringify({ title: 'order shipped', order: 1234 }, null, 2))
    assert.equal(shown[1].tag, 'ephemeral')
    assert.equal(shown[1].body, '{\n  "typing": true\n}')
    assert.equal(shown[0].body, 'hex    de ad be ef\nbase64 3q2+7w==')
    assert.equal(Number((await facts(page)).cursor) >= seq1, true)

    // Killed: the page notices, and a durable message is stored while no worker runs.
    await worker.kill('SIGKILL')
    await page.waitForSelector('#state:not([data-state="connected"])')
    const seq2 = await publishDurable(js, name, { title: 'published while the worker was down' })
    assert.ok(seq2 > seq1)

    // Restarted on the same port: the page reconnects by itself and resumes from its cursor.
    await worker.restart()
    await waitForState(page, 'connected', RECONNECT_WAIT)
    await waitForSeq(page, seq2)
    f = await facts(page)
    assert.equal(f.recovered, 'true', `welcome after the restart: ${JSON.stringify(f)}`)
    // The restarted worker may close a session once more while it settles (1012, resume);
    // the last welcome then has nothing left to replay.
    assert.ok(['0', '1'].includes(f.replayed), `welcome after the restart: ${JSON.stringify(f)}`)
    // The dropped connection was reported on the page.
    assert.ok(await page.$('#errors > li[data-code="1006"]'), 'no 1006 in the errors shown')

    // A message after the replay fences it: anything the page would show twice has arrived by
    // the time this one has.
    const seq3 = await publishDurable(js, name, { title: 'live again' })
    await waitForSeq(page, seq3)
    shown = await cards(page)
    assert.deepEqual(shown.filter((c) => c.kind === 'durable').map((c) => c.seq), [seq3, seq2, seq1])
    assert.equal(shown.filter((c) => c.seq === seq2).length, 1, 'the message published during the outage is shown once')
    assert.equal(shown.find((c) => c.seq === seq2).replay, true)
    assert.equal(shown.find((c) => c.seq === seq3).replay, false)
    assert.equal(shown.length, 5)
    assert.ok(Number((await facts(page)).cursor) >= seq3)

    const png = checkPNG(await page.screenshot({ fullPage: true, animations: 'disabled' }))
    writeFileSync(join(scratch, 'demo.png'), png)
    if (process.env.UPDATE_SCREENSHOT === '1') writeFileSync(join(repoRoot, 'docs', 'demo.png'), png)
    checkPNG(readFileSync(join(scratch, 'demo.png')))

    // On a phone-sized screen the page is one column and nothing overflows sideways.
    await page.setViewportSize({ width: 390, height: 844 })
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth)
    assert.ok(overflow <= 0, `the page is ${overflow} px wider than a 390 px screen`)
    await page.setViewportSize({ width: 1280, height: 860 })

    // Disconnect closes the client: state closed, connect offered again.
    await page.click('#disconnect')
    await waitForState(page, 'closed')
    assert.equal(await page.isEnabled('#connect'), true)

    assert.deepEqual(unexpected(problems, worker.url), [], 'console errors')
  })
})

test('with NOTIFY_AUTH=jwt and NOTIFY_DEMO=on the page asks for a token', { timeout: 120_000 }, async (t) => {
  const nats = await startNATS()
  const worker = await startWorker({
    natsURL: nats.url,
    env: { NOTIFY_AUTH: 'jwt', NOTIFY_JWT_SECRET: testSecret, NOTIFY_DEMO: 'on' }
  })
  const nc = await natsConnect(nats.url)
  const { page, problems } = await openBrowser(t)
  const name = 'bob'

  await page.goto(`${worker.httpURL}/demo/`)
  await page.waitForSelector('body[data-ready="true"]')
  assert.equal(await page.isVisible('#token'), true)
  assert.equal(await page.isVisible('#name'), false)

  // A token that is not a JWT is refused on the page; nothing connects.
  await page.fill('#token', 'not-a-token')
  await page.click('#connect')
  await page.waitForSelector('#form-problem:not([hidden])')
  assert.equal((await facts(page)).state, 'idle')

  // The commands follow the token's sub.
  await page.fill('#token', signToken({ sub: name, exp: Math.floor(Date.now() / 1000) + 3600 }))
  assert.equal(await page.textContent('.command[data-command="user-core"] code'),
    `nats pub notify.user.${name} '{"title":"hello-${name}"}'`)
  await page.click('#connect')
  await waitForState(page, 'connected')
  assert.equal(await page.textContent('#session-name'), name)
  await publishCore(nc, name, { title: 'for the real bob' })
  await page.waitForSelector('#cards > .card[data-kind="ephemeral"]')
  assert.equal((await cards(page))[0].body, '{\n  "title": "for the real bob"\n}')

  assert.deepEqual(unexpected(problems, worker.url), [], 'console errors')
})
