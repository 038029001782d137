// The admin page: polls this worker's counters and the fleet's recent events, and calls the
// presence and publish routes under /admin/api/. Everything shown is set as text, never as
// HTML: names and event bodies come from clients.
'use strict'

const POLL_MS = 1000
const $ = (id) => document.getElementById(id)

async function call (path, options) {
  const resp = await fetch('api/' + path, { credentials: 'same-origin', cache: 'no-store', ...options })
  let body
  try {
    body = await resp.json()
  } catch {
    body = { error: 'answer is not JSON (HTTP ' + resp.status + ')' }
  }
  return { status: resp.status, body }
}

function show (el, ok, text) {
  el.className = 'result ' + (ok ? 'ok' : 'bad')
  el.textContent = text
}

let last = null // the previous stats answer, for the rate

async function pollStats () {
  try {
    const { status, body } = await call('stats')
    if (status !== 200) throw new Error(body.error)
    $('worker-id').textContent = body.worker
    $('prefix').textContent = body.subject_prefix
    $('nats-state').textContent = body.nats_connected ? 'connected' : 'down'
    $('stat-connections').textContent = String(body.connections)
    $('stat-names').textContent = String(body.names)
    $('stat-drops').textContent = String(body.dropped_total + body.nats_dropped_total)
    $('stat-deliveries').textContent = String(body.deliveries_total)
    $('stat-dropped').textContent = String(body.dropped_total)
    $('stat-nats-dropped').textContent = String(body.nats_dropped_total)
    if (last) {
      const seconds = (Date.parse(body.at) - Date.parse(last.at)) / 1000
      if (seconds > 0) {
        const rate = Math.max(0, body.deliveries_total - last.deliveries_total) / seconds
        $('stat-rate').textContent = rate < 10 ? rate.toFixed(1) : String(Math.round(rate))
      }
    }
    last = body
  } catch (err) {
    $('nats-state').textContent = 'unknown (' + err.message + ')'
  }
}

function eventLine (ev) {
  const li = document.createElement('li')
  li.dataset.kind = ev.kind
  li.dataset.name = ev.name
  const cells = [
    ['ev-time', new Date(ev.received).toLocaleTimeString()],
    ['ev-kind kind-' + ev.kind, ev.kind],
    ['ev-name', ev.name],
    ['ev-data', ev.data === null ? '(not JSON)' : summary(ev)]
  ]
  for (const [cls, text] of cells) {
    const span = document.createElement('span')
    span.className = cls
    span.textContent = text
    span.title = text
    li.append(span)
  }
  return li
}

function summary (ev) {
  const d = ev.data || {}
  const parts = []
  if (d.worker !== undefined) parts.push('worker ' + d.worker)
  if (d.sessions !== undefined) parts.push('sessions ' + d.sessions)
  if (d.seq !== undefined) parts.push('seq ' + d.seq)
  if (d.code !== undefined) parts.push('code ' + d.code)
  if (d.reason) parts.push(d.reason)
  return parts.length ? parts.join(' · ') : JSON.stringify(d)
}

async function pollEvents () {
  try {
    const { status, body } = await call('events')
    if (status !== 200) return
    const list = $('events')
    list.replaceChildren(...body.events.map(eventLine))
    $('events-empty').hidden = body.events.length > 0
  } catch {
    // the next poll tries again
  }
}

$('presence-form').addEventListener('submit', async (e) => {
  e.preventDefault()
  const out = $('presence-result')
  const name = $('presence-name').value.trim()
  const { status, body } = await call('presence/' + encodeURIComponent(name))
  if (status !== 200) return show(out, false, 'HTTP ' + status + ': ' + body.error)
  if (!body.online) return show(out, false, name + ' is offline on every worker that answered')
  const where = body.workers.map((w) => w.worker + ' (' + w.sessions + ')').join(', ')
  show(out, true, name + ' is online: ' + body.sessions + ' session' + (body.sessions === 1 ? '' : 's') + ' on ' + where)
})

$('publish-all').addEventListener('change', () => {
  $('publish-name').disabled = $('publish-all').checked
})

$('publish-form').addEventListener('submit', async (e) => {
  e.preventDefault()
  const out = $('publish-result')
  let data
  try {
    data = JSON.parse($('publish-data').value)
  } catch (err) {
    return show(out, false, 'data is not JSON: ' + err.message)
  }
  const mode = document.querySelector('input[name=mode]:checked').value
  const req = { data }
  if ($('publish-all').checked) req.all = true
  else req.name = $('publish-name').value.trim()
  if (mode === 'durable') req.durable = true
  if (mode === 'receipt') req.receipt = true
  const { status, body } = await call('publish', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(req)
  })
  if (status !== 200) return show(out, false, 'HTTP ' + status + ': ' + body.error)
  if (body.seq !== undefined) {
    return show(out, true, 'stored as seq ' + body.seq + ' in ' + body.stream + (body.duplicate ? ' (duplicate)' : ''))
  }
  if (body.online === false) return show(out, false, 'no worker holds that name: delivered to nobody')
  if (body.online) {
    const per = body.receipts.map((r) => r.worker + ': ' + r.delivered).join(', ')
    return show(out, true, 'delivered to ' + body.delivered + ' session' + (body.delivered === 1 ? '' : 's') + ' (' + per + ')')
  }
  show(out, true, 'published')
})

pollStats()
pollEvents()
setInterval(pollStats, POLL_MS)
setInterval(pollEvents, POLL_MS)
