#!/usr/bin/env python3
"""A small broadcast chat: serves index.html on / and a WebSocket on /chat.

Every message a client sends is broadcast to every connected client as
{"from": NAME, "text": TEXT}. Used by the README's proxy walkthrough:

    python3 samples/chat/server.py 8080            # the app
    wsinspect proxy --listen 127.0.0.1:9000 --upstream ws://127.0.0.1:8080
    # open http://127.0.0.1:9000/ in a browser (or two): the page and its
    # socket both go through the proxy, which prints every frame.

Needs `pip install websockets` (version 13 or newer).
"""
import asyncio
import http
import json
import pathlib
import sys

from websockets.asyncio.server import broadcast, serve
from websockets.datastructures import Headers
from websockets.http11 import Response

PAGE = (pathlib.Path(__file__).parent / "index.html").read_bytes()
clients = set()


def serve_page(connection, request):
    """Plain HTTP for everything but the socket: the page itself."""
    if request.path == "/chat":
        return None
    if request.path in ("/", "/index.html"):
        headers = Headers({"Content-Type": "text/html; charset=utf-8", "Content-Length": str(len(PAGE))})
        return Response(http.HTTPStatus.OK, "OK", headers, PAGE)
    body = b"not found\n"
    return Response(http.HTTPStatus.NOT_FOUND, "Not Found", Headers({"Content-Length": str(len(body))}), body)


async def chat(websocket):
    name = f"guest-{len(clients) + 1}"
    clients.add(websocket)
    broadcast(clients, json.dumps({"from": "server", "text": f"{name} joined"}))
    try:
        async for text in websocket:
            broadcast(clients, json.dumps({"from": name, "text": str(text)}))
    finally:
        clients.discard(websocket)
        broadcast(clients, json.dumps({"from": "server", "text": f"{name} left"}))


async def main(port):
    async with serve(chat, "127.0.0.1", port, process_request=serve_page) as server:
        print(f"chat server on http://127.0.0.1:{port}/", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 8080))
