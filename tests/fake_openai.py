"""A scripted OpenAI-compatible chat endpoint on loopback, for the remote LLM teacher's tests (the benchmark
uses a real server). Each request takes the next action of ``script`` (then ``default``):

* ``ok`` — the answer with first-token log-probabilities; ``nologprobs`` — ``n`` sampled answers, no logprobs;
* ``429`` / ``500`` — that status; ``slow`` — answers after ``slow_s`` seconds (past the client's timeout);
* ``malformed`` — a 200 whose body is not JSON; ``empty`` / ``refuse`` / ``chatter`` — sampled answers that are
  empty, a content-filter stop, or words naming no label.

The answer to a prompt is the label whose name occurs last in its last user message (``ANSWER`` when none);
``answered`` counts, per prompt, the answers that went out whole; with ``kill_after`` the server stops after
that many; prompts whose answer is in ``chatter_on`` get only unusable answers.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LABELS = ["balance", "flight", "music", "weather"]


def answer_of(messages: list[dict]) -> str:
    text = [m["content"] for m in messages if m["role"] == "user"][-1].split("Text:")[-1]
    found = [(text.rfind(word), label) for label, word in
             (("balance", "balance"), ("flight", "flight"), ("music", "music"), ("weather", "weather"))]
    pos, label = max(found)
    return label if pos >= 0 else "music"


class FakeEndpoint:
    def __init__(self, script=(), default="ok", slow_s=3.0, port=0, kill_after=None, chatter_on=()):
        self.script, self.default, self.slow_s, self.kill_after = list(script), default, slow_s, kill_after
        self.chatter_on = set(chatter_on)  # labels whose prompts get only unusable answers
        self.lock = threading.Lock()
        self.requests = []  # (action, prompt) per request received
        self.answered = Counter()  # prompt -> whole answers sent
        self.keys_seen = set()
        self.server = ThreadingHTTPServer(("127.0.0.1", port), self.handler())
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def next_action(self, prompt: str) -> str:
        with self.lock:
            action = self.script.pop(0) if self.script else self.default
            self.requests.append((action, prompt))
            return action

    def body(self, request: dict, action: str) -> dict:
        label = answer_of(request["messages"])
        n = int(request.get("n") or 1)
        if action == "ok":
            top = [{"token": " " + label.capitalize(), "logprob": -0.2, "bytes": None},
                   {"token": "The", "logprob": -2.5, "bytes": None}]
            top += [{"token": other[:3], "logprob": -4.0, "bytes": None} for other in LABELS if other != label]
            choices = [{"index": 0, "message": {"role": "assistant", "content": label}, "finish_reason": "stop",
                        "logprobs": {"content": [{"token": top[0]["token"], "logprob": -0.2, "bytes": None,
                                                  "top_logprobs": top}]}}]
        else:
            said = {"empty": ("", "stop"), "refuse": ("I can't help with that.", "content_filter"),
                    "chatter": ("Well, it is hard to say", "length")}.get(action, (label + ".", "stop"))
            choices = [{"index": i, "message": {"role": "assistant", "content": said[0]}, "finish_reason": said[1],
                        "logprobs": None} for i in range(n)]
        return {"id": "c", "object": "chat.completion", "created": 0, "model": request["model"], "choices": choices,
                "usage": {"prompt_tokens": 30, "completion_tokens": n, "total_tokens": 30 + n}}

    def handler(self):
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def send(self, status: int, payload: bytes, headers=()) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for k, v in headers:
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)

            def do_POST(self):
                request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                endpoint.keys_seen.add(self.headers.get("Authorization", ""))
                prompt = json.dumps(request["messages"], sort_keys=True)
                action = endpoint.next_action(prompt)
                if answer_of(request["messages"]) in endpoint.chatter_on:
                    action = "chatter"
                if action in ("429", "500"):
                    error = {"error": {"message": "busy", "type": "x", "code": None}}
                    return self.send(int(action), json.dumps(error).encode(), [("Retry-After", "0")])
                if action == "malformed":
                    return self.send(200, b'{"id": "c", "choices": [')
                if action == "slow":
                    time.sleep(endpoint.slow_s)
                self.send(200, json.dumps(endpoint.body(request, action)).encode())
                with endpoint.lock:
                    endpoint.answered[prompt] += 1
                    if endpoint.kill_after == sum(endpoint.answered.values()):  # the server dies after this answer
                        threading.Thread(target=endpoint.stop).start()

        return Handler
