"""A local OpenAI-compatible upstream stand-in: a small real HTTP/1.1 server on 127.0.0.1 that records every
request body it receives and answers according to the upstream model name:

- ``echo`` / ``echo-N``: answers ``You said: <last user text>`` (streams it in N-character chunks, default 4);
  with ``tools`` in the request it answers with a tool call whose arguments are ``{"text": <last user text>}``
- ``leak``: answers with ``Upstream.leak_text``
- ``fail-NNN``: answers HTTP NNN with an OpenAI error body
- ``reset``: closes the connection without answering
- ``cut``: streams a few chunks, then closes the connection mid-stream
- ``stall``: sends nothing (non-streamed) or one chunk (streamed), then waits until the client gives up
- ``slow``: streams a chunk every 50 ms for a long time; counts streams the client abandoned in ``cancelled``

Raw asyncio rather than a framework: it must be able to misbehave (resets, cut chunked bodies), and it must be
fast enough to be the baseline of the gateway benchmark.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import struct
import threading
import time
from typing import Any

CANNED_EMBEDDING = [0.25, -0.5, 0.125]


def _last_user_text(body: dict[str, Any]) -> str:
    if "messages" in body:
        for msg in reversed(body["messages"]):
            if msg.get("role") == "user":
                c = msg.get("content")
                if isinstance(c, str):
                    return c
                if isinstance(c, list):
                    return " ".join(p.get("text", "") for p in c if isinstance(p, dict))
        return ""
    p = body.get("prompt", "")
    return p if isinstance(p, str) else " ".join(p)


class Upstream:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.leak_text = ""
        self.cancelled = 0
        self.record = True
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Upstream:
        self._thread = threading.Thread(target=self._run, name="upstream", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("upstream did not start")
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)

        async def main() -> None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=1024)
            self.port = self._server.sockets[0].getsockname()[1]
            self._ready.set()
            async with self._server:
                with contextlib.suppress(asyncio.CancelledError):
                    await self._server.serve_forever()

        with contextlib.suppress(Exception):
            loop.run_until_complete(main())
        # Connections kept alive by clients still have handlers waiting: end them before closing the loop, so
        # nothing is left to be destroyed (and complained about) at interpreter exit.
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        with contextlib.suppress(Exception):
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()

    def stop(self) -> None:
        if self._loop is not None and self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
            for task in asyncio.all_tasks(self._loop):
                self._loop.call_soon_threadsafe(task.cancel)
        if self._thread is not None:
            self._thread.join(5)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def seen_text(self) -> str:
        """Everything this upstream received, as one string (for 'never saw X' assertions)."""
        return "\n".join(json.dumps(b, ensure_ascii=False) for b in self.requests)

    # ------------------------------------------------------------------ HTTP

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for ln in lines[1:]:
                    if ":" in ln:
                        k, v = ln.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                n = int(headers.get("content-length", "0"))
                raw = await reader.readexactly(n) if n else b""
                keep = await self._respond(method, path, headers, raw, writer)
                if not keep:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    @staticmethod
    def _json(writer: asyncio.StreamWriter, status: int, obj: Any) -> None:
        body = json.dumps(obj).encode()
        writer.write(b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                     % (status, len(body), body))

    async def _respond(self, method: str, path: str, headers: dict[str, str], raw: bytes,
                       writer: asyncio.StreamWriter) -> bool:
        if method == "GET" and path.endswith("/models"):
            self._json(writer, 200, {"object": "list", "data": [{"id": "echo", "object": "model"}]})
            await writer.drain()
            return True
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            self._json(writer, 400, {"error": {"message": "bad json", "type": "invalid_request_error"}})
            return True
        if self.record:
            self.requests.append(body)
            self.headers.append(headers)
        model = str(body.get("model", "echo"))
        if model.startswith("fail-"):
            status = int(model.split("-", 1)[1])
            self._json(writer, status, {"error": {"message": f"upstream says {status}", "type": "server_error",
                                                  "code": None}})
            await writer.drain()
            return True
        if model == "reset":
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return False
        if path.endswith("/embeddings"):
            inputs = body.get("input")
            items = [inputs] if isinstance(inputs, str) else list(inputs or [])
            if body.get("encoding_format") == "base64":
                emb: Any = base64.b64encode(struct.pack("<3f", *CANNED_EMBEDDING)).decode()
            else:
                emb = CANNED_EMBEDDING
            self._json(writer, 200, {"object": "list", "model": model, "data": [
                {"object": "embedding", "index": i, "embedding": emb} for i in range(len(items))],
                "usage": {"prompt_tokens": sum(len(x) for x in items) // 4, "total_tokens": 0}})
            await writer.drain()
            return True
        chat = path.endswith("/chat/completions")
        text = _last_user_text(body)
        answer = self.leak_text if model == "leak" else f"You said: {text}"
        tool = chat and bool(body.get("tools")) and model != "leak"
        usage = {"prompt_tokens": max(1, len(text) // 4), "completion_tokens": max(1, len(answer) // 4),
                 "total_tokens": max(1, len(text) // 4) + max(1, len(answer) // 4)}
        if model == "stall" and not body.get("stream"):
            await asyncio.sleep(60)
            return False
        if not body.get("stream"):
            if chat:
                msg: dict[str, Any] = {"role": "assistant", "content": None if tool else answer}
                if tool:
                    msg["tool_calls"] = [{"id": "call_1", "type": "function", "function": {
                        "name": "lookup", "arguments": json.dumps({"text": text})}}]
                choice: dict[str, Any] = {"index": 0, "message": msg, "finish_reason": "tool_calls" if tool else "stop"}
                obj = {"id": "chatcmpl-1", "object": "chat.completion", "created": int(time.time()), "model": model,
                       "choices": [choice], "usage": usage}
            else:
                obj = {"id": "cmpl-1", "object": "text_completion", "created": int(time.time()), "model": model,
                       "choices": [{"index": 0, "text": answer, "finish_reason": "stop"}], "usage": usage}
            self._json(writer, 200, obj)
            await writer.drain()
            return True
        return await self._stream(body, model, chat, tool, text, answer, usage, writer)

    async def _stream(self, body: dict[str, Any], model: str, chat: bool, tool: bool, text: str, answer: str,
                      usage: dict[str, int], writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        size = 4
        if model.startswith("echo-"):
            size = int(model.split("-", 1)[1])
        payload = json.dumps({"text": text}) if tool else answer
        pieces = [payload[i:i + size] for i in range(0, len(payload), size)] or [""]
        if model == "slow":
            pieces = [f"tick {i} " for i in range(400)]
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        async def send(obj: Any) -> None:
            data = b"data: " + (obj if isinstance(obj, bytes) else json.dumps(obj).encode()) + b"\n\n"
            writer.write(b"%x\r\n%s\r\n" % (len(data), data))
            await writer.drain()

        def chunk(delta: dict[str, Any] | None, text_piece: str | None, finish: str | None) -> dict[str, Any]:
            ch: dict[str, Any] = {"index": 0, "finish_reason": finish}
            if chat:
                ch["delta"] = delta or {}
            else:
                ch["text"] = text_piece or ""
            out: dict[str, Any] = {"id": "chunk-1", "object": "chat.completion.chunk" if chat else "text_completion",
                                   "created": 1, "model": model, "choices": [ch]}
            if include_usage:
                out["usage"] = None
            return out

        try:
            if chat:
                await send(chunk({"role": "assistant", "content": ""}, None, None))
            for i, piece in enumerate(pieces):
                if model == "cut" and i == 3:
                    writer.transport.abort()
                    return False
                if model == "stall" and i == 1:
                    await asyncio.sleep(60)
                    return False
                if tool:
                    call: dict[str, Any] = {"index": 0, "function": {"arguments": piece}}
                    if i == 0:
                        call.update({"id": "call_1", "type": "function"})
                        call["function"]["name"] = "lookup"
                    await send(chunk({"tool_calls": [call]}, None, None))
                else:
                    await send(chunk({"content": piece}, piece, None))
                if model == "slow":
                    await asyncio.sleep(0.05)
            await send(chunk({}, "", "tool_calls" if tool else "stop"))
            if include_usage:
                final = chunk(None, None, None)
                final["choices"] = []
                final["usage"] = usage
                await send(final)
            await send(b"[DONE]")
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            self.cancelled += 1
            return False
        return model != "slow"
