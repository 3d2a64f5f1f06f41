#!/usr/bin/env node
// bench/loadgen/loadgen.js — the load generator: N WebSocket clients in one Node.js process.
//
// Why a hand-written RFC 6455 client on `net` instead of the `ws` package: the generator must
// absorb what a server can push (up to ~10^6 small frames/s) on the single core it shares with
// the feed, and it needs only three things from each frame — its type, its `timestamp`, its
// arrival time. Scanning frames straight out of each socket read costs a third of what an
// event-per-message client does (numbers: bench/README.md). Parser checks: selftest.js.
//
// Usage: node loadgen.js --url ws://127.0.0.1:P/path [--url ...] [--spread blocks|round-robin]
//   --protocol 003|000 --clients N --per-client K --symbols A,B,... --tick-rate R
//   [--warmup s] [--duration s] [--stalled M] [--stats-url URL]... [--out report.json]
//
// Several --url (the edges of a cluster): the clients are spread over them, healthy and
// stalled ones each on their own. `blocks` (default) gives URL u the u-th contiguous share of
// client numbers, so with the symbol assignment below every URL sees every symbol (the load
// balancer case: each edge carries the whole audience). `round-robin` gives client i URL
// i mod U, which with K·U a divisor of S hands each URL a disjoint share of the symbols.
//
// Protocols (one generator drives every stack):
//   003  /api/v2/realtime/ws/prices  send {"action":"subscribe","symbols":[...]}, wait for
//        {"type":"subscription"...}; count {"type":"price_update"}, latency from `timestamp`.
//   000  /ws/stock/                  send {"action":"subscribe","codes":[...]}, wait for
//        {"type":"subscription_result"...}; count {"type":"stock_price"}, latency from
//        `timestamp` (an extra field; seed 000's `time` is HHMMSS, too coarse to measure).
//
// `timestamp` is normalised by magnitude (protocols/fmp.md §4: ns > 1e17 > us > 1e14 > ms >
// 1e11 > s). Latency = receipt wall-clock time (sub-ms) − upstream emit time. When the server
// truncates emit time to whole milliseconds (seed 003's epoch ms) the measured latency
// over-states the true one by up to 1 ms; we never correct for it.
//
// Phases (events as JSON lines on stdout, for the harness): connect → subscribed → warm-up →
// window of D seconds → report (one JSON object written to --out, or stdout last line).
'use strict';

const net = require('net');
const http = require('http');
const crypto = require('crypto');
const fs = require('fs');
const { performance } = require('perf_hooks');

// ---------------------------------------------------------------- options
function parseArgs(argv) {
  const o = {
    urls: [], // default: ws://127.0.0.1:8000/api/v2/realtime/ws/prices
    spread: 'blocks',
    protocol: '003',
    clients: 10,
    perClient: 1,
    symbols: ['AAPL'],
    tickRate: 0, // aggregate ticks/s over all symbols (for the expected rate)
    warmup: 2,
    duration: 5,
    stalled: 0, // extra clients that stop reading at the window start
    stalledPerClient: 0, // their symbol count (0: same as perClient)
    connectConcurrency: 100,
    subscribeTimeout: 60,
    freshMs: 100,
    statsUrl: [],
    out: null,
    hold: 0, // idle workload: seconds to hold after all subscribed, before the window
  };
  for (let i = 2; i < argv.length; i++) {
    const k = argv[i];
    const v = argv[i + 1];
    const take = () => { i++; return v; };
    switch (k) {
      case '--url': o.urls.push(take()); break;
      case '--spread': o.spread = take(); break;
      case '--protocol': o.protocol = take(); break;
      case '--clients': o.clients = +take(); break;
      case '--per-client': o.perClient = +take(); break;
      case '--symbols': o.symbols = take().split(',').filter(Boolean); break;
      case '--tick-rate': o.tickRate = +take(); break;
      case '--warmup': o.warmup = +take(); break;
      case '--duration': o.duration = +take(); break;
      case '--stalled': o.stalled = +take(); break;
      case '--stalled-per-client': o.stalledPerClient = +take(); break;
      case '--connect-concurrency': o.connectConcurrency = +take(); break;
      case '--subscribe-timeout': o.subscribeTimeout = +take(); break;
      case '--fresh-ms': o.freshMs = +take(); break;
      case '--stats-url': o.statsUrl.push(take()); break;
      case '--out': o.out = take(); break;
      default: throw new Error(`unknown option ${k}`);
    }
  }
  if (!['003', '000'].includes(o.protocol)) throw new Error('--protocol is 003 or 000');
  if (!['blocks', 'round-robin'].includes(o.spread)) throw new Error('--spread is blocks or round-robin');
  if (o.urls.length === 0) o.urls.push('ws://127.0.0.1:8000/api/v2/realtime/ws/prices');
  if (o.perClient > o.symbols.length) throw new Error('--per-client exceeds the symbol count');
  if (o.clients + o.stalled > 20000) throw new Error('at most 20000 clients');
  return o;
}

const now = () => performance.timeOrigin + performance.now(); // epoch ms, sub-ms resolution
function event(name, extra) {
  process.stdout.write(JSON.stringify(Object.assign({ ev: name, t: now() / 1000 }, extra || {})) + '\n');
}

// ---------------------------------------------------------------- latency histogram
// Log buckets of 1 % width from 1 us up to ~10^4 s; bucket 0 holds latencies <= 1 us
// (including negative ones, counted apart in `negative`).
const LOG_STEP = Math.log(1.01);
const NBUCKETS = Math.ceil(Math.log(1e10) / LOG_STEP) + 2;
const bucketOf = (ms) => {
  const us = ms * 1000;
  return us <= 1 ? 0 : Math.min(NBUCKETS - 1, 1 + Math.floor(Math.log(us) / LOG_STEP));
};
const bucketUpperMs = (b) => (b === 0 ? 0.001 : Math.exp(b * LOG_STEP) / 1000);

class Hist {
  constructor() { this.b = new Float64Array(NBUCKETS); this.n = 0; this.max = -Infinity; this.sum = 0; }
  add(ms) { this.b[bucketOf(ms)]++; this.n++; this.sum += ms; if (ms > this.max) this.max = ms; }
  pct(p) {
    if (this.n === 0) return null;
    const target = p * this.n;
    let acc = 0;
    for (let i = 0; i < NBUCKETS; i++) { acc += this.b[i]; if (acc >= target) return Math.min(bucketUpperMs(i), this.max); }
    return this.max;
  }
  summary() {
    return {
      count: this.n,
      mean_ms: this.n ? this.sum / this.n : null,
      p50_ms: this.pct(0.5), p90_ms: this.pct(0.9), p99_ms: this.pct(0.99), p999_ms: this.pct(0.999),
      max_ms: this.n ? this.max : null,
    };
  }
  cdf() { // [[upper_ms, cumulative_fraction], ...] for non-empty buckets
    const out = []; let acc = 0;
    for (let i = 0; i < NBUCKETS; i++) if (this.b[i]) { acc += this.b[i]; out.push([bucketUpperMs(i), acc / this.n]); }
    return out;
  }
}

// ---------------------------------------------------------------- byte patterns
const enc = (s) => Buffer.from(s, 'latin1');
const PAT_TYPE = enc('"type":');
const PAT_TS = enc('"timestamp":');
const UPDATE_TYPE = { '003': enc('price_update'), '000': enc('stock_price') };
const ACK_TYPE = { '003': enc('subscription'), '000': enc('subscription_result') };

function indexIn(buf, pat, from, to) { // first index of pat in buf[from, to), or -1
  const p0 = pat[0]; const pl = pat.length; const last = to - pl;
  outer: for (let i = from; i <= last; i++) {
    if (buf[i] !== p0) continue;
    for (let j = 1; j < pl; j++) if (buf[i + j] !== pat[j]) continue outer;
    return i;
  }
  return -1;
}
function startsWithAt(buf, at, pat, to) {
  if (at + pat.length > to) return false;
  for (let j = 0; j < pat.length; j++) if (buf[at + j] !== pat[j]) return false;
  return true;
}
// The value of the "type" key (start offset of its string content), or -1.
function typeAt(buf, s, e) {
  let i = indexIn(buf, PAT_TYPE, s, e);
  if (i < 0) return -1;
  i += PAT_TYPE.length;
  while (i < e && buf[i] === 0x20) i++;
  return buf[i] === 0x22 ? i + 1 : -1;
}
// The number after "timestamp": in buf[s, e), normalised to epoch ms; NaN if absent.
function timestampMs(buf, s, e) {
  let i = indexIn(buf, PAT_TS, s, e);
  if (i < 0) return NaN;
  i += PAT_TS.length;
  while (i < e && buf[i] === 0x20) i++;
  let v = 0; let digits = 0;
  for (; i < e; i++) { const c = buf[i] - 48; if (c < 0 || c > 9) break; v = v * 10 + c; digits++; }
  if (digits === 0) return NaN;
  if (v > 1e17) return v / 1e6;
  if (v > 1e14) return v / 1e3;
  if (v > 1e11) return v;
  return v * 1e3;
}

// ---------------------------------------------------------------- client frames (masked)
function clientFrame(opcode, payload) {
  const len = payload.length;
  const hdrLen = len < 126 ? 2 : len < 65536 ? 4 : 10;
  const f = Buffer.allocUnsafe(hdrLen + 4 + len);
  f[0] = 0x80 | opcode;
  if (len < 126) f[1] = 0x80 | len;
  else if (len < 65536) { f[1] = 0x80 | 126; f.writeUInt16BE(len, 2); }
  else { f[1] = 0x80 | 127; f.writeUInt32BE(0, 2); f.writeUInt32BE(len, 6); }
  const mask = crypto.randomBytes(4);
  mask.copy(f, hdrLen);
  for (let i = 0; i < len; i++) f[hdrLen + 4 + i] = payload[i] ^ mask[i & 3];
  return f;
}

// ---------------------------------------------------------------- one client
const READ_BUFFER = Buffer.allocUnsafe(256 * 1024); // shared: reads are handled synchronously
const STATS = { measuring: false, windowStart: 0, sec: [], fresh: 0, reads: 0, sample: null };
const HIST = new Hist();

class Client {
  constructor(id, opts, symbols, stalled) {
    this.id = id; this.opts = opts; this.symbols = symbols; this.stalled = stalled;
    this.proto = opts.protocol;
    this.updType = UPDATE_TYPE[this.proto]; this.ackType = ACK_TYPE[this.proto];
    this.rest = null; this.handshaken = false; this.subscribed = false;
    this.count = 0; this.total = 0; this.noTs = 0;
    this.closeCode = null; this.error = null; this.closedAt = null;
    this.fragments = null; this.fragOpcode = 0;
  }

  connect(u) {
    return new Promise((resolve) => {
      this.onSubscribed = resolve;
      // `onread` hands each read to us in one reused buffer: no stream machinery, no
      // allocation per read (what remains of a partial frame is copied out).
      const sock = net.connect({ host: u.hostname, port: +u.port,
        onread: { buffer: READ_BUFFER, callback: (n, buf) => { this.onData(buf.subarray(0, n)); } } });
      this.sock = sock;
      sock.setNoDelay(true);
      sock.on('connect', () => {
        const key = crypto.randomBytes(16).toString('base64');
        sock.write(`GET ${u.pathname}${u.search} HTTP/1.1\r\nHost: ${u.host}\r\n` +
          `Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\n` +
          `Sec-WebSocket-Version: 13\r\nOrigin: http://${u.host}\r\n\r\n`);
      });
      sock.on('error', (e) => { this.error = this.error || String(e.message || e); this.finish(); });
      sock.on('close', () => { if (this.closedAt === null) this.closedAt = now(); this.finish(); });
    });
  }

  finish() { if (this.onSubscribed) { const r = this.onSubscribed; this.onSubscribed = null; r(this); } }

  send(obj) { this.sock.write(clientFrame(1, Buffer.from(JSON.stringify(obj)))); }

  subscribe() {
    if (this.proto === '003') this.send({ action: 'subscribe', symbols: this.symbols });
    else this.send({ action: 'subscribe', codes: this.symbols });
  }

  onData(chunk) {
    const t = now();
    if (STATS.measuring) STATS.reads++;
    let buf = chunk;
    if (this.rest !== null) { buf = Buffer.concat([this.rest, chunk]); this.rest = null; }
    let i = 0;
    if (!this.handshaken) {
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) { this.rest = buf; return; }
      const head = buf.toString('latin1', 0, end);
      if (!/^HTTP\/1\.1 101/.test(head)) {
        this.error = `handshake: ${head.split('\r\n')[0]}`; this.sock.destroy(); return;
      }
      this.handshaken = true; i = end + 4;
      this.subscribe();
    }
    const n = buf.length;
    while (i + 2 <= n) {
      const b0 = buf[i]; const b1 = buf[i + 1];
      let len = b1 & 0x7f; let h = 2;
      if (len === 126) { if (i + 4 > n) break; len = buf.readUInt16BE(i + 2); h = 4; }
      else if (len === 127) { if (i + 10 > n) break; len = buf.readUInt32BE(i + 2) * 4294967296 + buf.readUInt32BE(i + 6); h = 10; }
      if (b1 & 0x80) { this.error = 'masked server frame'; this.sock.destroy(); return; }
      if (i + h + len > n) break;
      const s = i + h; const e = s + len;
      const opcode = b0 & 0x0f; const fin = b0 & 0x80;
      if (opcode === 1 || opcode === 2 || opcode === 0) {
        if (fin && opcode !== 0) this.onMessage(buf, s, e, t);
        else { // fragmented message (rare): collect, then handle as one
          if (opcode !== 0) { this.fragments = []; this.fragOpcode = opcode; }
          if (this.fragments) this.fragments.push(Buffer.from(buf.subarray(s, e)));
          if (fin && this.fragments) {
            const whole = Buffer.concat(this.fragments); this.fragments = null;
            this.onMessage(whole, 0, whole.length, t);
          }
        }
      } else if (opcode === 9) {
        this.sock.write(clientFrame(10, buf.subarray(s, e)));
      } else if (opcode === 8) {
        this.closeCode = len >= 2 ? buf.readUInt16BE(s) : 1005;
        this.sock.write(clientFrame(8, buf.subarray(s, Math.min(e, s + 2))));
        this.sock.end();
      }
      i = e;
    }
    if (i < n) this.rest = Buffer.from(buf.subarray(i)); // copy: don't pin the whole chunk
  }

  onMessage(buf, s, e, t) {
    const ta = typeAt(buf, s, e);
    if (ta >= 0 && startsWithAt(buf, ta, this.updType, e) && buf[ta + this.updType.length] === 0x22) {
      this.total++;
      if (!STATS.measuring) return;
      if (STATS.sample === null) STATS.sample = buf.toString('utf8', s, Math.min(e, s + 600));
      this.count++;
      const ts = timestampMs(buf, s, e);
      const sec = Math.floor((t - STATS.windowStart) / 1000);
      const bin = STATS.sec[sec];
      if (Number.isNaN(ts)) { this.noTs++; if (bin) bin.count++; return; }
      const lat = t - ts;
      HIST.add(lat);
      if (lat <= this.opts.freshMs) STATS.fresh++;
      if (bin) { bin.count++; bin.hist.add(lat); if (lat <= this.opts.freshMs) bin.fresh++; }
      return;
    }
    if (!this.subscribed && ta >= 0 && startsWithAt(buf, ta, this.ackType, e) &&
        buf[ta + this.ackType.length] === 0x22) {
      this.subscribed = true; this.finish();
    } else if (!this.subscribed && ta >= 0 && startsWithAt(buf, ta, enc('error'), e)) {
      this.error = `server error: ${buf.toString('utf8', s, Math.min(e, s + 200))}`;
    }
  }
}

// ---------------------------------------------------------------- stats endpoints
function fetchJson(url) {
  return new Promise((resolve) => {
    const req = http.get(url, { timeout: 3000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { body += d; });
      res.on('end', () => {
        let parsed = body;
        try { parsed = JSON.parse(body); } catch (_) { /* keep text (e.g. Prometheus) */ }
        resolve({ url, status: res.statusCode, body: parsed });
      });
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (e) => resolve({ url, status: null, error: String(e.message || e) }));
  });
}
const fetchAll = (urls) => Promise.all(urls.map(fetchJson));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------- main
function assign(i, k, symbols) { // client i: k consecutive symbols from offset i*k (uniform)
  const out = [];
  for (let j = 0; j < k; j++) out.push(symbols[(i * k + j) % symbols.length]);
  return out;
}

function targetOf(i, count, nTargets, spread) { // which URL the i-th of `count` clients uses
  return spread === 'blocks' ? Math.floor(i * nTargets / count) : i % nTargets;
}

function quantiles(values) {
  if (values.length === 0) return null;
  const v = [...values].sort((a, b) => a - b);
  const q = (p) => v[Math.min(v.length - 1, Math.floor(p * (v.length - 1)))];
  return { min: v[0], p10: q(0.1), p50: q(0.5), p90: q(0.9), max: v[v.length - 1] };
}

async function main() {
  const opts = parseArgs(process.argv);
  const targets = opts.urls.map((x) => new URL(x));
  const total = opts.clients + opts.stalled;
  const clients = [];
  for (let i = 0; i < total; i++) {
    const stalled = i >= opts.clients;
    const k = stalled && opts.stalledPerClient ? opts.stalledPerClient : opts.perClient;
    const c = new Client(i, opts, assign(i, k, opts.symbols), stalled);
    const [j, of] = stalled ? [i - opts.clients, opts.stalled] : [i, opts.clients];
    c.target = targetOf(j, of, targets.length, opts.spread);
    clients.push(c);
  }
  const cpu0 = process.cpuUsage();
  const t0 = now();
  event('connecting', { clients: total });
  let next = 0; let late = false;
  const worker = async () => { while (next < total && !late) { const c = clients[next++]; await c.connect(targets[c.target]); } };
  const connectDeadline = sleep(opts.subscribeTimeout * 1000).then(() => { late = true; });
  await Promise.race([Promise.all(Array.from({ length: Math.min(opts.connectConcurrency, total) }, worker)), connectDeadline]);
  const subscribed = clients.filter((c) => c.subscribed).length;
  const connectSecs = (now() - t0) / 1000;
  event('subscribed', { subscribed, of: total, seconds: connectSecs, timed_out: late });

  await sleep(opts.warmup * 1000);
  const perSymbolRate = opts.symbols.length ? opts.tickRate / opts.symbols.length : 0;
  const statsStart = await fetchAll(opts.statsUrl);
  for (const c of clients) { c.count = 0; if (c.stalled && c.sock) c.sock.pause(); }
  STATS.sec = Array.from({ length: Math.ceil(opts.duration) }, () => ({ count: 0, fresh: 0, hist: new Hist() }));
  const cpuW0 = process.cpuUsage();
  STATS.windowStart = now();
  STATS.measuring = true;
  event('window_start');
  await sleep(opts.duration * 1000);
  STATS.measuring = false;
  const windowEnd = now();
  const cpuW = process.cpuUsage(cpuW0);
  event('window_end');
  const statsEnd = await fetchAll(opts.statsUrl);
  const window = (windowEnd - STATS.windowStart) / 1000;

  const healthy = clients.filter((c) => !c.stalled);
  const ratios = healthy.filter((c) => c.subscribed).map((c) => {
    const exp = c.symbols.length * perSymbolRate * window;
    return exp > 0 ? c.count / exp : null;
  }).filter((x) => x !== null);
  const delivered = healthy.reduce((a, c) => a + c.count, 0);
  const expectedPerS = healthy.length * opts.perClient * perSymbolRate;
  const closed = clients.filter((c) => c.closedAt !== null && c.closedAt <= windowEnd);
  const closeCodes = {};
  for (const c of closed) closeCodes[c.closeCode ?? 'none'] = (closeCodes[c.closeCode ?? 'none'] || 0) + 1;
  const errors = {};
  for (const c of clients) if (c.error) errors[c.error] = (errors[c.error] || 0) + 1;

  const report = {
    options: Object.assign({}, opts, { symbols: opts.symbols.length }),
    clients: { total, healthy: healthy.length, stalled: opts.stalled, subscribed,
      connect_seconds: connectSecs, closed_by_window_end: closed.length, close_codes: closeCodes,
      closed_stalled: closed.filter((c) => c.stalled).length, errors },
    window: { start: STATS.windowStart / 1000, end: windowEnd / 1000, seconds: window },
    delivered_total: delivered,
    delivered_per_s: delivered / window,
    expected_per_s: expectedPerS,
    delivered_fraction: expectedPerS > 0 ? delivered / window / expectedPerS : null,
    per_url: opts.urls.map((url, t) => {
      const mine = healthy.filter((c) => c.target === t);
      const n = mine.reduce((a, c) => a + c.count, 0);
      return { url, clients: mine.length, subscribed: mine.filter((c) => c.subscribed).length,
        delivered_per_s: n / window, symbols: new Set(mine.flatMap((c) => c.symbols)).size };
    }),
    fresh_ms: opts.freshMs,
    fresh_per_s: STATS.fresh / window,
    updates_without_timestamp: healthy.reduce((a, c) => a + c.noTs, 0),
    per_client_delivered_fraction: quantiles(ratios),
    latency: HIST.summary(),
    latency_cdf: HIST.cdf(),
    per_second: STATS.sec.map((b, i) => Object.assign({ second: i, count: b.count, fresh: b.fresh }, {
      p50_ms: b.hist.pct(0.5), p99_ms: b.hist.pct(0.99), max_ms: b.hist.n ? b.hist.max : null })),
    socket_reads_per_s: STATS.reads / window,
    sample_update: STATS.sample, // the first update of the window, as the server sent it
    loadgen_cpu: { window_user_s: cpuW.user / 1e6, window_system_s: cpuW.system / 1e6,
      window_fraction: (cpuW.user + cpuW.system) / 1e6 / window,
      total_s: (() => { const c = process.cpuUsage(cpu0); return (c.user + c.system) / 1e6; })() },
    server_stats: { start: statsStart, end: statsEnd },
  };
  const text = JSON.stringify(report);
  if (opts.out) fs.writeFileSync(opts.out, text);
  else process.stdout.write(text + '\n');
  event('done');
  for (const c of clients) if (c.sock) c.sock.destroy();
  process.exit(0);
}

if (require.main === module) {
  main().catch((e) => { process.stderr.write(String(e.stack || e) + '\n'); process.exit(2); });
}
module.exports = { Client, Hist, STATS, HIST, timestampMs, clientFrame, now, parseArgs, targetOf, assign };
