#!/usr/bin/env node
// bench/loadgen/ws_compare.js — the same measurement as loadgen.js's hot path, but on the `ws`
// package (one 'message' event per frame). Used once to choose the load generator's design:
//   npm install --prefix /tmp/wsprobe ws@8
//   NODE_PATH=/tmp/wsprobe/node_modules node ws_compare.js --url ws://127.0.0.1:PORT/ --clients 50 --duration 5
'use strict';
const WebSocket = require('ws');
const arg = (k, d) => { const i = process.argv.indexOf(k); return i > 0 ? process.argv[i + 1] : d; };
const url = arg('--url'); const n = +arg('--clients', 50); const dur = +arg('--duration', 5);
const PAT = Buffer.from('"timestamp":');
let count = 0; let measuring = false; let latSum = 0;
for (let i = 0; i < n; i++) {
  const ws = new WebSocket(url, { perMessageDeflate: false, skipUTF8Validation: true });
  ws.on('open', () => ws.send(JSON.stringify({ action: 'subscribe', symbols: ['XAAA'] })));
  ws.on('message', (data) => {
    if (!measuring) return;
    const j = data.indexOf(PAT);
    if (j >= 0) { count++; latSum += Date.now() - parseInt(data.toString('latin1', j + PAT.length, j + PAT.length + 13), 10); }
  });
}
setTimeout(() => {
  measuring = true; const c0 = process.cpuUsage(); const t0 = Date.now();
  setTimeout(() => {
    const c = process.cpuUsage(c0); const s = (Date.now() - t0) / 1000; const cpu = (c.user + c.system) / 1e6;
    console.log(JSON.stringify({ client: 'ws', per_s: count / s, cpu_fraction: cpu / s, cpu_us_per_msg: cpu * 1e6 / count }));
    process.exit(0);
  }, dur * 1000);
}, 2000);
