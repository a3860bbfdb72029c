#!/usr/bin/env node
// Node `ws` client for the fault-injection tests (test_faults.py), driven over stdin/stdout.
//
//   NODE_PATH=/usr/share/nodejs node node_ws_fault_client.js --url ws://HOST:PORT/PATH [--deflate]
//
// Connects with perMessageDeflate off, or (--deflate) on with threshold 0 (every message
// compressed; ws's default is 1024 bytes). Prints one JSON object per line on stdout:
//   {"event":"open","extensions":"…","local":["127.0.0.1",PORT]}
//   {"event":"message","type":"text","text":"…"}  /  {"event":"message","type":"binary","base64":"…"}
//   {"event":"ping","base64":"…"}  /  {"event":"pong","base64":"…"}
//   {"event":"error","code":"WS_ERR_…","status":1007,"message":"…"}  (status: the close code ws
//                                                                     fails the connection with)
//   {"event":"unexpected-response","status":403}
//   {"event":"close","code":4000,"reason":"…"}                       (then exits 0)
// Reads one JSON command per line on stdin:
//   {"op":"send","text":"…"}  /  {"op":"send","base64":"…"}  /  {"op":"close","code":1000,"reason":"…"}
// Pings are answered by ws itself (autoPong). Gives up (exit 2) after 60 s.
'use strict';

const readline = require('readline');
const WebSocket = require('ws');

const args = process.argv.slice(2);
function opt(name, def) {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : def;
}
const url = opt('--url');
const deflate = args.includes('--deflate');

const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
const b64 = (buf) => Buffer.from(buf).toString('base64');

const ws = new WebSocket(url, {
  perMessageDeflate: deflate ? { threshold: 0 } : false,
  maxPayload: 64 * 1024 * 1024,
});
let local = null;

ws.on('upgrade', (res) => {
  local = [res.socket.localAddress, res.socket.localPort];
});
ws.on('open', () => out({ event: 'open', extensions: ws.extensions, local }));
ws.on('message', (data, isBinary) => {
  if (isBinary) out({ event: 'message', type: 'binary', base64: b64(data) });
  else out({ event: 'message', type: 'text', text: data.toString('utf8') });
});
ws.on('ping', (data) => out({ event: 'ping', base64: b64(data) }));
ws.on('pong', (data) => out({ event: 'pong', base64: b64(data) }));
ws.on('unexpected-response', (req, res) => {
  out({ event: 'unexpected-response', status: res.statusCode });
  req.destroy();
});
ws.on('error', (err) => {
  // ws keeps the close code it fails the connection with under a private symbol.
  const sym = Object.getOwnPropertySymbols(err).find((s) => s.description === 'status-code');
  out({ event: 'error', code: err.code || null, status: sym ? err[sym] : null, message: String(err.message) });
});
ws.on('close', (code, reason) => {
  out({ event: 'close', code, reason: reason.toString('utf8') });
  process.exit(0);
});

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  if (!line.trim()) return;
  const cmd = JSON.parse(line);
  try {
    if (cmd.op === 'send') {
      if (cmd.base64 !== undefined) ws.send(Buffer.from(cmd.base64, 'base64'), { binary: true });
      else ws.send(cmd.text);
    } else if (cmd.op === 'close') {
      ws.close(cmd.code === undefined ? 1000 : cmd.code, cmd.reason || '');
    }
  } catch (err) {
    out({ event: 'command-failed', op: cmd.op, message: String(err.message) });
  }
});

setTimeout(() => {
  process.stderr.write('node_ws_fault_client: timeout\n');
  process.exit(2);
}, 60000).unref();
