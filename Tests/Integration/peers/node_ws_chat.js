#!/usr/bin/env node
// The classic `ws` broadcast chat server (the ws README's "Server broadcast"
// example: every message goes to every connected client, the sender included),
// for the wsinspect proxy tests.
//
//   NODE_PATH=/usr/share/nodejs node node_ws_chat.js [--deflate]
//
// Listens on 127.0.0.1, port 0, and prints "LISTENING <port>". Runs until killed.
'use strict';

const { WebSocketServer, WebSocket } = require('ws');

const deflate = process.argv.includes('--deflate');
const wss = new WebSocketServer({
  host: '127.0.0.1',
  port: 0,
  perMessageDeflate: deflate ? { threshold: 0 } : false,
});

wss.on('connection', function connection(ws) {
  ws.on('error', console.error);
  ws.on('message', function message(data, isBinary) {
    wss.clients.forEach(function each(client) {
      if (client.readyState === WebSocket.OPEN) {
        client.send(data, { binary: isBinary });
      }
    });
  });
});

wss.on('listening', () => {
  process.stdout.write(`LISTENING ${wss.address().port}\n`);
});
