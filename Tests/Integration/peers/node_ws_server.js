#!/usr/bin/env node
// Node `ws` server for the wsinspect integration tests (driven by py_scenarios.py).
//
//   NODE_PATH=/usr/share/nodejs node node_ws_server.js --host 127.0.0.1 --log FILE [--deflate]
//
// Listens on port 0, prints "LISTENING <port>", serves ONE connection, writes its
// peer log (same event format as py_scenarios.py) to FILE when that connection is
// closed, and exits.
//
// Behaviour: echoes every message, except these text commands:
//   "fragments please": sends a text message in 3 frames and a binary one in 2,
//                       with ws.send(data, {fin: false}) (no empty final frame)
//   "ping me":          ws.ping("node-ping"), then sends "pinged"
//   "close please":     ws.close(4001, "node says bye")
// Pings from the client are answered by ws itself (autoPong).
'use strict';

const fs = require('fs');
const { WebSocketServer } = require('ws');

const args = process.argv.slice(2);
function opt(name, def) {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : def;
}
const host = opt('--host', '127.0.0.1');
const logPath = opt('--log');
const deflate = args.includes('--deflate');

const log = { connections: [] };
const b64 = (buf) => Buffer.from(buf).toString('base64');
const ep = (addr, port) => (addr.includes(':') ? `[${addr}]:${port}` : `${addr}:${port}`);

const wss = new WebSocketServer({
  host,
  port: 0,
  // threshold 0: compress every message (ws defaults to 1024 bytes)
  perMessageDeflate: deflate ? { threshold: 0 } : false,
  maxPayload: 64 * 1024 * 1024,
});

wss.on('listening', () => {
  process.stdout.write(`LISTENING ${wss.address().port}\n`);
});

wss.on('connection', (ws, req) => {
  const sock = req.socket;
  const conn = {
    client: ep(sock.remoteAddress, sock.remotePort),
    server: ep(sock.localAddress, sock.localPort),
    server_events: [],
  };
  log.connections.push(conn);
  const ev = (op, type, data, extra) => {
    const buf = Buffer.from(data || []);
    conn.server_events.push(Object.assign({ op, type, data: b64(buf), length: buf.length, captured: true }, extra || {}));
  };
  const send = (data, isBinary) => {
    ws.send(data, { binary: isBinary });
    ev('send', isBinary ? 'binary' : 'text', data);
  };
  const sendFragments = (frags, isBinary) => {
    frags.forEach((f, i) => ws.send(f, { binary: isBinary, fin: i === frags.length - 1 }));
    ev('send', isBinary ? 'binary' : 'text', Buffer.concat(frags.map((f) => Buffer.from(f))), {
      fragments: frags.map((f) => b64(Buffer.from(f))),
      emptyFinal: false,
    });
  };

  ws.on('message', (data, isBinary) => {
    ev('recv', isBinary ? 'binary' : 'text', data);
    const text = isBinary ? null : data.toString('utf8');
    if (text === 'fragments please') {
      sendFragments([Buffer.from('Node '), Buffer.from('frag'), Buffer.from('ments ✓')], false);
      sendFragments([Buffer.from([1, 2, 3]), Buffer.alloc(500, 0x42)], true);
    } else if (text === 'ping me') {
      ws.ping(Buffer.from('node-ping'));
      ev('send', 'ping', Buffer.from('node-ping'));
      send(Buffer.from('pinged'), false);
    } else if (text === 'close please') {
      const reason = 'node says bye';
      ws.close(4001, reason);
      const body = Buffer.concat([Buffer.from([0x0f, 0xa1]), Buffer.from(reason)]);
      ev('send', 'close', body, { code: 4001, reason });
    } else {
      send(data, isBinary);
    }
  });
  ws.on('ping', (data) => {
    ev('recv', 'ping', data);
    ev('send', 'pong', data, { auto: true });
  });
  ws.on('pong', (data) => ev('recv', 'pong', data));
  ws.on('close', (code, reason) => {
    const empty = code === 1005;
    const body = empty ? Buffer.alloc(0) : Buffer.concat([Buffer.from([code >> 8, code & 0xff]), reason]);
    ev('recv', 'close', body, { code: empty ? null : code, reason: reason.toString('utf8') });
    fs.writeFileSync(logPath, JSON.stringify(log, null, 1));
    wss.close(() => process.exit(0));
  });
});

setTimeout(() => {
  process.stderr.write('node_ws_server: timeout\n');
  process.exit(2);
}, 60000).unref();
