"""An OpenAI-compatible HTTP server on 127.0.0.1, for the real `openai` client.

Speaks the wire format of POST /v1/embeddings and POST /v1/chat/completions. Embeddings are
deterministic hashed bags of words (similar texts get similar vectors). Chat answers come
from `responder(messages) -> str`, which tests replace. Faults can be injected: the next N
requests fail with a status, or are delayed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import threading
import time

import numpy as np
from aiohttp import web


def hashed_embedding(text: str, dim: int) -> list[float]:
    vec = np.zeros(dim, dtype=np.float64)
    for word in re.findall(r"[a-z0-9]+", text.lower()):
        h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
        vec[h % dim] += 1.0 if (h >> 32) & 1 else -1.0
    norm = np.linalg.norm(vec)
    if norm == 0:
        vec[0] = 1.0
        norm = 1.0
    return (vec / norm).tolist()


class OpenAIServer:
    def __init__(self, dim: int = 64):
        self.dim = dim
        self.requests: list[dict] = []
        self.fail_next: list[int] = []  # statuses for the next requests
        self.delay = 0.0
        self.responder = lambda messages: "I could not find that in the documentation."
        self._loop = asyncio.new_event_loop()
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _maybe_fail(self, request):
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_next:
            status = self.fail_next.pop(0)
            return web.json_response({"error": {"message": "injected failure", "type": "server_error"}},
                                     status=status)
        return None

    async def _embeddings(self, request: web.Request):
        body = await request.json()
        self.requests.append({"path": "embeddings", "body": body, "auth": request.headers.get("Authorization")})
        failed = await self._maybe_fail(request)
        if failed is not None:
            return failed
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        dim = body.get("dimensions") or self.dim
        data = [{"object": "embedding", "index": i, "embedding": hashed_embedding(t, dim)} for i, t in enumerate(inputs)]
        tokens = sum(len(t.split()) for t in inputs)
        return web.json_response({"object": "list", "data": data, "model": body["model"],
                                  "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    async def _chat(self, request: web.Request):
        body = await request.json()
        self.requests.append({"path": "chat", "body": body, "auth": request.headers.get("Authorization")})
        failed = await self._maybe_fail(request)
        if failed is not None:
            return failed
        text = self.responder(body["messages"])
        if asyncio.iscoroutine(text):
            text = await text
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body["messages"])
        return web.json_response({
            "id": f"chatcmpl-{len(self.requests)}", "object": "chat.completion", "created": int(time.time()),
            "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(text.split()),
                      "total_tokens": prompt_tokens + len(text.split())},
        })

    def start(self) -> "OpenAIServer":
        ready = threading.Event()

        def run():
            asyncio.set_event_loop(self._loop)
            app = web.Application()
            app.router.add_post("/v1/embeddings", self._embeddings)
            app.router.add_post("/v1/chat/completions", self._chat)
            self._runner = web.AppRunner(app)
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            self._loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def chat_requests(self) -> list[dict]:
        return [r for r in self.requests if r["path"] == "chat"]

    @staticmethod
    def last_user_message(messages) -> str:
        return next(m["content"] for m in reversed(messages) if m["role"] == "user")


def dumps(obj) -> str:
    return json.dumps(obj)
