#!/usr/bin/env python3
"""Deterministic OpenAI-compatible stub LLM for driving a real Letta server offline.

Stdlib only (runs under any Python >= 3.9). Endpoints:
  GET  /v1/models                 -> {"object":"list","data":[{"id":"stub-model",...},{"id":"stub-embedding",...}]}
  POST /v1/chat/completions       -> non-streaming JSON or SSE (stream=true, honours stream_options.include_usage)
  POST /v1/embeddings             -> deterministic unit vectors of STUB_EMBED_DIM (default 1536) floats
  GET  /_stub/requests            -> the last 50 chat requests Letta sent (JSON list, newest last; each has an
                                     extra "_received_at" epoch float) - test hook
  POST /_stub/reset               -> clear the request log
  GET  /health                    -> {"ok": true}

Behaviour of /v1/chat/completions (decided from the request only -> fully deterministic):
  1. If the last message has role "tool" (a tool result just came back, either from a server-side tool
     or from a client-side tool / approval):  answer "Tool <name> returned: <content>".
  2. Else take the text of the last user message (Letta may wrap it as JSON {"type":"user_message",
     "message": ...}; both forms handled):
       "CALL <tool_name> <json-args>"  -> emits a tool call to <tool_name> with those args (args default {}).
       "SYSTEM?<needle>"               -> answers "SYSTEM_HAS:<needle>=yes|no" (does the system prompt contain it?)
       "THINK:<rest>"                  -> also returns reasoning_content "Thinking about: <rest>" (Letta turns it
                                          into a reasoning_message), then handles <rest> as below
       "CALLS <json list>"             -> several tool calls in one answer: [{"name": ..., "arguments": {...}}, ...]
       "RECALL?<needle>"               -> answers "RECALL:<needle>=yes|no": is the needle in any earlier
                                          non-system message of the request (the conversation's context)?
       "SLOW:<ms>:<rest>"              -> waits <ms> milliseconds before answering, then handles <rest>
       "DRIP:<ms>:<rest>"              -> streams the answer one character per delta, <ms> apart
       "FAIL:<status>"                 -> answers with HTTP <status> (an LLM API error)
       "ECHO:<rest>"                   -> answers exactly <rest> (no "You said: " prefix)
       anything else                   -> answers "You said: <text>".
  3. "Answer" means: plain assistant content, unless the request offers a `send_message` tool (legacy
     memgpt_agent / memgpt_v2_agent), in which case it is a send_message tool call {"message": ...}.
Streaming splits content / tool-call arguments into several deltas so token streaming can be observed.

Env: STUB_HOST (127.0.0.1), STUB_PORT (8299), STUB_EMBED_DIM (1536), STUB_MODEL (stub-model),
     STUB_EMBED_MODEL (stub-embedding), STUB_DELAY_MS (0: artificial latency per completion),
     STUB_CHUNK_CHARS (0 = split each streamed text into 4 deltas; N = N chars per delta).
"""
import hashlib
import json
import math
import os
import re
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOST = os.environ.get("STUB_HOST", "127.0.0.1")
PORT = int(os.environ.get("STUB_PORT", "8299"))
EMBED_DIM = int(os.environ.get("STUB_EMBED_DIM", "1536"))
MODEL = os.environ.get("STUB_MODEL", "stub-model")
EMBED_MODEL = os.environ.get("STUB_EMBED_MODEL", "stub-embedding")
DELAY_MS = int(os.environ.get("STUB_DELAY_MS", "0"))
CHUNK_CHARS = int(os.environ.get("STUB_CHUNK_CHARS", "0"))  # 0: split every text into 4 pieces

_LOG_LOCK = threading.Lock()
_REQUEST_LOG = []  # last chat requests
_MAX_LOG = 50

CALL_RE = re.compile(r"^\s*CALL\s+([A-Za-z_][A-Za-z0-9_\-]*)\s*(.*)$", re.S)
CALLS_RE = re.compile(r"^\s*CALLS\s+(\[.*\])\s*$", re.S)
PREFIX_RE = re.compile(r"^(SLOW|DRIP):(\d+):", re.S)


def _text_of(content):
    """OpenAI message content (str | list of parts | None) -> str."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for part in content:
            if isinstance(part, dict):
                if part.get("type") in ("text", "input_text") and "text" in part:
                    out.append(part["text"])
            elif isinstance(part, str):
                out.append(part)
        return "\n".join(out)
    return str(content)


def _unwrap_user_text(text):
    """Letta (legacy agents) packs user text as JSON {"type": "user_message", "message": "...", "time": ...}."""
    s = text.strip()
    if s.startswith("{"):
        try:
            obj = json.loads(s)
            if isinstance(obj, dict) and "message" in obj:
                return str(obj["message"])
        except ValueError:
            pass
    return text


def _tool_names(req):
    names = []
    for t in req.get("tools") or []:
        fn = t.get("function") if isinstance(t, dict) else None
        if fn and fn.get("name"):
            names.append(fn["name"])
    return names


def _tool_call_name_by_id(messages, call_id):
    for m in messages:
        for tc in m.get("tool_calls") or []:
            if tc.get("id") == call_id:
                return (tc.get("function") or {}).get("name", "?")
    return "?"


def _last_user_text(messages):
    for m in reversed(messages):
        if m.get("role") == "user":
            return _unwrap_user_text(_text_of(m.get("content")))
    return ""


def directives(req):
    """Timing and failure directives at the start of the last user message: (delay_ms, drip_ms, fail_status)."""
    messages = req.get("messages") or []
    if messages and messages[-1].get("role") != "user":
        return 0, 0, 0
    text = _last_user_text(messages)
    if text.startswith("THINK:"):
        text = text[len("THINK:"):].strip()
    delay = drip = 0
    while True:
        m = PREFIX_RE.match(text)
        if not m:
            break
        if m.group(1) == "SLOW":
            delay = int(m.group(2))
        else:
            drip = int(m.group(2))
        text = text[m.end():]
    fail = int(text[5:8]) if text.startswith("FAIL:") and text[5:8].isdigit() else 0
    return delay, drip, fail


def decide(req):
    """Return (reasoning_or_None, decision); decision = ("content", text) or ("tools", [(name, args_dict), ...])."""
    messages = req.get("messages") or []
    last = messages[-1] if messages else {}
    reasoning = None
    if last.get("role") == "user":
        txt = _unwrap_user_text(_text_of(last.get("content")))
        if txt.startswith("THINK:"):
            reasoning = "Thinking about: " + PREFIX_RE.sub("", txt[len("THINK:"):].strip())
    decision = _decide(req)
    if decision[0] == "tools":
        # legacy agents (put_inner_thoughts_in_kwargs) declare a "thinking" arg on every tool: fill it
        filled = []
        for name, args in decision[1]:
            for t in req.get("tools") or []:
                fn = (t or {}).get("function") or {}
                if fn.get("name") == name and "thinking" in ((fn.get("parameters") or {}).get("properties") or {}):
                    args = {"thinking": reasoning or "Responding to the user.", **args}
                    reasoning = None  # already carried in-kwargs
            filled.append((name, args))
        decision = ("tools", filled)
    return reasoning, decision


def _decide(req):
    messages = req.get("messages") or []
    system_text = "\n".join(_text_of(m.get("content")) for m in messages if m.get("role") in ("system", "developer"))
    last = messages[-1] if messages else {}
    if last.get("role") == "tool":
        name = last.get("name") or _tool_call_name_by_id(messages, last.get("tool_call_id"))
        results = []
        for m in reversed(messages):  # every result of the last batch of calls, in call order
            if m.get("role") != "tool":
                break
            n = m.get("name") or _tool_call_name_by_id(messages, m.get("tool_call_id"))
            results.insert(0, f"Tool {n} returned: {_text_of(m.get('content'))}")
        reply = "\n".join(results) if len(results) > 1 else f"Tool {name} returned: {_text_of(last.get('content'))}"
    else:
        user_text = _last_user_text(messages)
        if user_text.startswith("THINK:"):
            user_text = user_text[len("THINK:"):].strip()
        user_text = PREFIX_RE.sub("", user_text)
        while PREFIX_RE.match(user_text):
            user_text = PREFIX_RE.sub("", user_text, count=1)
        mcalls = CALLS_RE.match(user_text)
        if mcalls:
            try:
                calls = json.loads(mcalls.group(1))
                return ("tools", [(c["name"], c.get("arguments") or {}) for c in calls])
            except (ValueError, KeyError, TypeError):
                pass
        mcall = CALL_RE.match(user_text)
        if mcall:
            name, raw = mcall.group(1), mcall.group(2).strip()
            try:
                args = json.loads(raw) if raw else {}
            except ValueError:
                args = {"input": raw}
            return ("tools", [(name, args)])
        if user_text.startswith("SYSTEM?"):
            needle = user_text[len("SYSTEM?"):]
            reply = f"SYSTEM_HAS:{needle}={'yes' if needle and needle in system_text else 'no'}"
        elif user_text.startswith("RECALL?"):
            needle = user_text[len("RECALL?"):]
            earlier = [m for m in messages[:-1] if m.get("role") not in ("system", "developer")]
            found = any(needle in _text_of(m.get("content")) or needle in json.dumps(m.get("tool_calls") or [])
                        for m in earlier)
            reply = f"RECALL:{needle}={'yes' if needle and found else 'no'}"
        elif user_text.startswith("ECHO:"):
            reply = user_text[len("ECHO:"):]
        else:
            reply = f"You said: {user_text}"
    if "send_message" in _tool_names(req):
        return ("tools", [("send_message", {"message": reply})])
    return ("content", reply)


def _approx_tokens(obj):
    return max(1, len(json.dumps(obj)) // 4)


def _chunks(s, n=4):
    if not s:
        return [""]
    size = CHUNK_CHARS if CHUNK_CHARS > 0 else max(1, math.ceil(len(s) / n))
    return [s[i : i + size] for i in range(0, len(s), size)]


def embed(text):
    """Deterministic unit vector derived from sha256(text)."""
    vals = []
    counter = 0
    while len(vals) < EMBED_DIM:
        h = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        vals.extend((b - 127.5) / 127.5 for b in h)
        counter += 1
    vals = vals[:EMBED_DIM]
    norm = math.sqrt(sum(v * v for v in vals)) or 1.0
    return [v / norm for v in vals]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "stub-llm/1.0"
    disable_nagle_algorithm = True  # headers and body are separate writes: avoid 40 ms Nagle/delayed-ACK stalls

    def log_message(self, fmt, *args):  # quiet
        if os.environ.get("STUB_VERBOSE"):
            sys.stderr.write("stub: " + (fmt % args) + "\n")

    # ---- helpers
    def _send_json(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _read_json(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b"{}"
        return json.loads(raw or b"{}")

    def _path(self):
        p = self.path.split("?", 1)[0].rstrip("/")
        # accept both /v1/x and /x
        return p[3:] if p.startswith("/v1/") else p

    # ---- routes
    def do_GET(self):
        p = self._path()
        if p == "/models":
            now = int(time.time())
            self._send_json(200, {"object": "list", "data": [
                {"id": MODEL, "object": "model", "created": now, "owned_by": "stub", "context_length": 128000},
                {"id": EMBED_MODEL, "object": "model", "created": now, "owned_by": "stub"},
            ]})
        elif p == "/_stub/requests":
            with _LOG_LOCK:
                self._send_json(200, list(_REQUEST_LOG))
        elif p == "/health":
            self._send_json(200, {"ok": True})
        else:
            self._send_json(404, {"error": {"message": f"no route GET {self.path}"}})

    def do_POST(self):
        p = self._path()
        try:
            req = self._read_json()
        except ValueError:
            return self._send_json(400, {"error": {"message": "bad json"}})
        if p == "/chat/completions":
            return self._chat(req)
        if p == "/embeddings":
            inp = req.get("input")
            items = inp if isinstance(inp, list) else [inp]
            data = [{"object": "embedding", "index": i, "embedding": embed(str(t))} for i, t in enumerate(items)]
            toks = sum(max(1, len(str(t)) // 4) for t in items)
            return self._send_json(200, {"object": "list", "data": data, "model": req.get("model", EMBED_MODEL),
                                         "usage": {"prompt_tokens": toks, "total_tokens": toks}})
        if p == "/_stub/reset":
            with _LOG_LOCK:
                _REQUEST_LOG.clear()
            return self._send_json(200, {"ok": True})
        self._send_json(404, {"error": {"message": f"no route POST {self.path}"}})

    def _chat(self, req):
        with _LOG_LOCK:
            _REQUEST_LOG.append(dict(req, _received_at=time.time()))
            del _REQUEST_LOG[:-_MAX_LOG]
        delay, drip, fail = directives(req)
        if DELAY_MS or delay:
            time.sleep((DELAY_MS + delay) / 1000.0)
        if fail:
            return self._send_json(fail, {"error": {"message": f"scripted failure {fail}", "type": "server_error"}})
        reasoning, decision = decide(req)
        cid = "chatcmpl-" + uuid.uuid4().hex[:24]
        created = int(time.time())
        model = req.get("model", MODEL)
        prompt_tokens = _approx_tokens(req.get("messages"))
        if decision[0] == "content":
            completion_tokens = max(1, len(decision[1]) // 4)
        else:
            completion_tokens = sum(max(1, len(json.dumps(args)) // 4) + 3 for _, args in decision[1])
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens}
        calls = []
        if decision[0] == "tools":
            calls = [("call_" + uuid.uuid4().hex[:24], name, json.dumps(args)) for name, args in decision[1]]

        if not req.get("stream"):
            if decision[0] == "content":
                msg = {"role": "assistant", "content": decision[1]}
                finish = "stop"
            else:
                msg = {"role": "assistant", "content": None, "tool_calls": [
                    {"id": cid_, "type": "function", "function": {"name": name, "arguments": args}}
                    for cid_, name, args in calls]}
                finish = "tool_calls"
            if reasoning:
                msg["reasoning_content"] = reasoning
            return self._send_json(200, {"id": cid, "object": "chat.completion", "created": created, "model": model,
                                         "choices": [{"index": 0, "message": msg, "finish_reason": finish,
                                                      "logprobs": None}],
                                         "usage": usage, "system_fingerprint": "stub"})

        # ---- streaming (SSE)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

        def emit(delta, finish=None, with_usage=False):
            chunk = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                     "system_fingerprint": "stub",
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}
            if with_usage:
                chunk["choices"] = []
                chunk["usage"] = usage
            self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            self.wfile.flush()

        def pieces(text):
            if drip:
                return list(text) or [""]
            return _chunks(text)

        try:
            emit({"role": "assistant", "content": ""})
            if reasoning:
                for piece in _chunks(reasoning):
                    emit({"reasoning_content": piece})
            if decision[0] == "content":
                for i, piece in enumerate(pieces(decision[1])):
                    if drip and i:
                        time.sleep(drip / 1000.0)
                    emit({"content": piece})
                emit({}, finish="stop")
            else:
                for index, (call_id, name, args) in enumerate(calls):
                    emit({"tool_calls": [{"index": index, "id": call_id, "type": "function",
                                          "function": {"name": name, "arguments": ""}}]})
                    for piece in _chunks(args):
                        emit({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
                emit({}, finish="tool_calls")
            if (req.get("stream_options") or {}).get("include_usage"):
                emit(None, with_usage=True)
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # Letta cancelled the call


def main():
    srv = ThreadingHTTPServer((HOST, PORT), Handler)
    srv.daemon_threads = True
    print(f"stub-llm listening on http://{HOST}:{PORT}/v1 (model={MODEL}, embed={EMBED_MODEL}/{EMBED_DIM})", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
