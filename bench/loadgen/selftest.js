#!/usr/bin/env node
// bench/loadgen/selftest.js — checks of the load generator's frame parser and statistics,
// without a network: frames are fed to a Client in every possible split. Run with node's
// test runner:  node --test bench/loadgen/selftest.js
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const { Client, Hist, STATS, HIST, timestampMs, now, parseArgs, targetOf, assign } = require('./loadgen.js');

function serverFrame(text, { opcode = 1, fin = true } = {}) {
  const p = Buffer.from(text);
  let h;
  if (p.length < 126) h = Buffer.from([(fin ? 0x80 : 0) | opcode, p.length]);
  else if (p.length < 65536) { h = Buffer.alloc(4); h[0] = (fin ? 0x80 : 0) | opcode; h[1] = 126; h.writeUInt16BE(p.length, 2); }
  else { h = Buffer.alloc(10); h[0] = (fin ? 0x80 : 0) | opcode; h[1] = 127; h.writeUInt32BE(p.length, 6); }
  return Buffer.concat([h, p]);
}

function fakeClient(protocol = '003') {
  const opts = { protocol, freshMs: 100 };
  const c = new Client(0, opts, ['XAAA'], false);
  c.handshaken = true; c.subscribed = true;
  c.written = [];
  c.sock = { write: (b) => c.written.push(Buffer.from(b)), end: () => { c.ended = true; }, destroy: () => {} };
  return c;
}

function measuring(seconds = 5) {
  STATS.measuring = true; STATS.windowStart = now(); STATS.fresh = 0;
  STATS.sec = Array.from({ length: seconds }, () => ({ count: 0, fresh: 0, hist: new Hist() }));
}

const update = (ts, pad = '') =>
  `{"type":"price_update","symbol":"XAAA","timestamp":${ts},"data_type":"T","last_price":1.5,"pad":"${pad}"}`;

test('counts every update whatever the read boundaries', () => {
  const ts = Math.floor(now());
  const stream = Buffer.concat([
    serverFrame(update(ts)),
    serverFrame('{"type":"pong"}'),
    serverFrame(update(ts, 'x'.repeat(300))), // 16-bit length
    serverFrame(update(ts, 'y'.repeat(70000))), // 64-bit length
    serverFrame(update(ts)),
  ]);
  for (const step of [1, 2, 3, 7, 64, 1000, stream.length]) {
    const c = fakeClient(); measuring();
    for (let i = 0; i < stream.length; i += step) c.onData(stream.subarray(i, i + step));
    assert.equal(c.count, 4, `split every ${step} bytes`);
    assert.equal(c.noTs, 0);
    assert.equal(c.rest, null, 'nothing left over');
  }
});

test('a fragmented message counts once', () => {
  const c = fakeClient(); measuring();
  const text = update(Math.floor(now()));
  c.onData(Buffer.concat([
    serverFrame(text.slice(0, 20), { fin: false }),
    serverFrame(text.slice(20, 50), { opcode: 0, fin: false }),
    serverFrame(text.slice(50), { opcode: 0, fin: true }),
  ]));
  assert.equal(c.count, 1);
});

test('stock_price counts for protocol 000, price_update does not', () => {
  const c = fakeClient('000'); measuring();
  const ts = Math.floor(now());
  c.onData(serverFrame(`{"type":"stock_price","stock_code":"100000","price":1,"timestamp":${ts}}`));
  c.onData(serverFrame(update(ts)));
  assert.equal(c.count, 1);
});

test('updates outside the window are not counted', () => {
  const c = fakeClient(); STATS.measuring = false;
  c.onData(serverFrame(update(Math.floor(now()))));
  assert.equal(c.count, 0);
  assert.equal(c.total, 1);
});

test('ping is answered with a masked pong carrying the same payload', () => {
  const c = fakeClient();
  c.onData(serverFrame('abc', { opcode: 9 }));
  assert.equal(c.written.length, 1);
  const f = c.written[0];
  assert.equal(f[0], 0x8a);
  assert.equal(f[1], 0x80 | 3);
  const mask = f.subarray(2, 6);
  const body = Buffer.from(f.subarray(6).map((b, i) => b ^ mask[i & 3]));
  assert.equal(body.toString(), 'abc');
});

test('close frame records the code and ends the socket', () => {
  const c = fakeClient();
  const payload = Buffer.from([0x03, 0xf5]); // 1013
  c.onData(Buffer.concat([Buffer.from([0x88, 2]), payload]));
  assert.equal(c.closeCode, 1013);
  assert.ok(c.ended);
});

test('timestamps are normalised by magnitude (protocols/fmp.md §4)', () => {
  const f = (s) => timestampMs(Buffer.from(s), 0, s.length);
  assert.equal(f('"timestamp":1700000000123'), 1700000000123);
  assert.equal(f('"timestamp":1700000000123456'), 1700000000123.456);
  assert.ok(Math.abs(f('"timestamp":1700000000123456789') - 1700000000123.4568) < 0.001);
  assert.equal(f('"timestamp":1700000000'), 1700000000000);
  assert.ok(Number.isNaN(f('"timestamp":null')));
});

test('latency is receipt minus emit and lands in the histogram', () => {
  HIST.b.fill(0); HIST.n = 0; HIST.max = -Infinity; HIST.sum = 0;
  const c = fakeClient(); measuring();
  c.onData(serverFrame(update(Math.floor(now()) - 50)));
  assert.equal(HIST.n, 1);
  assert.ok(HIST.max >= 50 && HIST.max < 60, `latency ${HIST.max}`);
});

test('histogram percentiles are within 1 %', () => {
  const h = new Hist();
  for (let i = 1; i <= 1000; i++) h.add(i);
  for (const [p, v] of [[0.5, 500], [0.9, 900], [0.99, 990]]) {
    assert.ok(Math.abs(h.pct(p) - v) / v < 0.011, `p${p * 100}: ${h.pct(p)}`);
  }
  assert.equal(h.pct(1), 1000);
});

test('several --url: blocks give every URL every symbol, round-robin a disjoint share', () => {
  const argv = (...more) => ['node', 'loadgen.js', '--url', 'ws://a:1/p', '--url', 'ws://b:2/p', ...more];
  assert.deepEqual(parseArgs(argv()).urls, ['ws://a:1/p', 'ws://b:2/p']);
  assert.equal(parseArgs(argv()).spread, 'blocks');
  assert.equal(parseArgs(['node', 'loadgen.js']).urls.length, 1);
  assert.throws(() => parseArgs(argv('--spread', 'random')));
  const symbols = Array.from({ length: 100 }, (_, i) => `S${i}`);
  const seen = (spread) => [0, 1].map((t) => {
    const mine = new Set();
    for (let i = 0; i < 200; i++) if (targetOf(i, 200, 2, spread) === t) assign(i, 10, symbols).forEach((s) => mine.add(s));
    return mine;
  });
  const [b0, b1] = seen('blocks');
  assert.equal(b0.size, 100); assert.equal(b1.size, 100);
  const [r0, r1] = seen('round-robin');
  assert.equal(r0.size, 50); assert.equal(r1.size, 50);
  assert.equal([...r0].filter((s) => r1.has(s)).length, 0);
  assert.equal(Array.from({ length: 200 }, (_, i) => targetOf(i, 200, 2, 'blocks')).filter((t) => t === 0).length, 100);
});
