#!/usr/bin/env node
// bench/loadgen/blaster.js — a WebSocket server that pushes seed 003 `price_update` frames to
// every client as fast as its socket takes them. It has one use: measuring how many updates
// per second a client (the load generator, or a `ws`-based one) can absorb, and at what CPU
// cost per update (see bench/README.md, "Is the load generator the bottleneck?").
//   node blaster.js [--port 0]   → prints {"port": N}
'use strict';
const net = require('net');
const crypto = require('crypto');

const port = +(process.argv[process.argv.indexOf('--port') + 1] || 0) || 0;
const BATCH = 64; // frames per write

function frame(text) {
  const p = Buffer.from(text);
  const h = p.length < 126 ? Buffer.from([0x81, p.length]) : Buffer.from([0x81, 126, p.length >> 8, p.length & 255]);
  return Buffer.concat([h, p]);
}
let cached = null; let cachedTs = 0;
function batch() { // rebuilt once per millisecond, so `timestamp` stays current
  const ts = Date.now();
  if (ts === cachedTs) return cached;
  const frames = [];
  for (let i = 0; i < BATCH; i++) {
    frames.push(frame(JSON.stringify({ type: 'price_update', symbol: 'XAAA', timestamp: ts, data_type: 'T',
      last_price: 123.45, last_size: 100, ask_price: null, ask_size: null, bid_price: null, bid_size: null,
      cached_at: new Date(ts).toISOString() })));
  }
  cachedTs = ts; cached = Buffer.concat(frames);
  return cached;
}

net.createServer((sock) => {
  let head = Buffer.alloc(0); let open = false;
  const pump = () => { while (sock.write(batch())) { /* until the kernel buffer is full */ } };
  sock.on('drain', pump);
  sock.on('error', () => {});
  sock.on('data', (d) => {
    if (open) { // the client's subscribe: acknowledge, then blast
      if (!sock.ackd) { sock.ackd = true; sock.write(frame('{"type":"subscription","action":"subscribed","symbols":["XAAA"],"subscribed_total":1}')); pump(); }
      return;
    }
    head = Buffer.concat([head, d]);
    const end = head.indexOf('\r\n\r\n');
    if (end < 0) return;
    const key = /sec-websocket-key:\s*(\S+)/i.exec(head.toString('latin1'))[1];
    const accept = crypto.createHash('sha1').update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
    sock.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
    open = true;
  });
}).listen(port, '127.0.0.1', function () { console.log(JSON.stringify({ port: this.address().port })); });
