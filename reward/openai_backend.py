"""A PIGReward backend that talks to an OpenAI-compatible chat-completions server.

Run the judge behind vLLM's OpenAI server (`vllm serve jeongeunnn/pigreward`) or any hosted model:

```python
backend = OpenAIChatBackend("jeongeunnn/pigreward", base_url="http://localhost:8000/v1", concurrency=16)
pig = PIGReward(judge=backend, reasoner=backend)
```

It implements the interface of `reward.backends` (`generate`, `choice_probabilities`, `model_id`) with the standard
library only: one HTTPS/HTTP request per conversation, at most `concurrency` in flight, retried with exponential
backoff where retrying can help (connection errors, timeouts, 429, 5xx, malformed bodies) and never where it cannot
(other 4xx). Score mode and the repetition penalty use vLLM's extra request fields; a hosted API without them will
reject or ignore those requests.
"""

from __future__ import annotations

import base64
import http.client
import inspect
import io
import json
import math
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from PIL import Image

from common.errors import PigError
from reward.backends import _VERDICT_END, GenerationSettings, TransformersVLM

DEFAULT_BASE_URL = "http://localhost:8000/v1"
IMAGE_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
TOP_LOGPROBS = 20  # vLLM's default `--max-logprobs`; a larger value is refused by a default server
_MAX_ERROR_CHARS = 500  # how much of a server's error message goes into an exception
_MAX_RETRY_AFTER = 30.0  # seconds; cap on a server's Retry-After so that a bad header cannot stall training
# Arguments of the local backend that mean nothing over HTTP; accepted and ignored so that one `backend_kwargs`
# block can serve both backends. Any other unknown argument is an error (a typo should not pass silently).
_LOCAL_ONLY_ARGS = set(inspect.signature(TransformersVLM.__init__).parameters) - {"self", "model"}


class BackendError(PigError, RuntimeError):
    """A request to the judge server failed for good; the message names the cause. `status` is the HTTP status of
    the last answer (`None` when no answer came back)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class _Retryable(Exception):
    """One attempt failed in a way that another attempt may fix."""

    def __init__(self, message: str, retry_after: float | None = None, status: int | None = None):
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


class OpenAIChatBackend:
    """Chat completions over HTTP(S) from an OpenAI-compatible server (vLLM's `vllm serve`, or a hosted API).

    Args:
        model: the model name the server knows (`"model"` field of every request), e.g. `"jeongeunnn/pigreward"`.
        base_url: the API root, up to and including `/v1`; defaults to the env var `OPENAI_BASE_URL`, else
            `http://localhost:8000/v1` (where `vllm serve` listens). Credentials do not belong in the URL.
        api_key_env: name of the env var holding the API key, sent as `Authorization: Bearer <key>` when set. The key
            never appears in `repr()`, `model_id`, logs or exceptions.
        concurrency: requests in flight at once (threads); match it to the server's batch capacity.
        timeout: seconds a request may wait on the socket (to connect, or for the next bytes of the answer) before
            the attempt counts as timed out and is retried.
        max_retries: extra attempts per request after the first, for connection errors, timeouts, HTTP 429 and 5xx,
            and malformed answers. Other 4xx errors are never retried.
        backoff: base delay in seconds; retry `k` (from 0) waits `backoff * 2**k`, times a random factor in
            [0.5, 1.5) so that many clients do not retry in lockstep (or the server's `Retry-After`, if longer).
        image_format: how images are encoded into the `data:` URLs: `"PNG"` (lossless, the default), `"JPEG"` or
            `"WEBP"`.
        unused: arguments of [`~reward.backends.TransformersVLM`] (`device`, `dtype`, `batch_size`, ...), ignored.
    """

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 8,
        timeout: float = 60.0,
        max_retries: int = 4,
        backoff: float = 0.5,
        image_format: str = "PNG",
        **unused,
    ):
        unknown = sorted(set(unused) - _LOCAL_ONLY_ARGS)
        if unknown:
            raise TypeError(
                f"OpenAIChatBackend got unknown arguments {unknown}; it accepts model, base_url, api_key_env, "
                f"concurrency, timeout, max_retries, backoff and image_format."
            )
        if not isinstance(model, str) or not model.strip():
            raise ValueError(f"model must be the non-empty name the server serves, got {model!r}.")
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}.")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}.")
        if max_retries < 0 or backoff < 0:
            raise ValueError(f"max_retries and backoff must be >= 0, got {max_retries} and {backoff}.")
        image_format = image_format.upper()
        if image_format not in IMAGE_FORMATS:
            raise ValueError(f"image_format must be one of {sorted(IMAGE_FORMATS)}, got {image_format!r}.")

        self.model = model
        self.base_url, self._scheme, self._host, self._port, self._path = _parse_base_url(
            base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        )
        self.model_id = f"{model}@{self.base_url}"
        self.api_key_env = api_key_env
        self._api_key = os.environ.get(api_key_env) or None
        self.concurrency = concurrency
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.backoff = float(backoff)
        self.image_format = image_format
        self._lock = threading.Lock()
        self._reset_counters()

    def __repr__(self) -> str:
        key = f"set in ${self.api_key_env}" if self._api_key else f"${self.api_key_env} not set"
        return (
            f"OpenAIChatBackend(model={self.model!r}, base_url={self.base_url!r}, api_key={key}, "
            f"concurrency={self.concurrency}, timeout={self.timeout}, max_retries={self.max_retries})"
        )

    # --------------------------------------------------------------------------------------------- the interface
    def generate(self, conversations: list[list[dict]], settings: GenerationSettings) -> list[str]:
        """One answer per conversation, in input order, with surrounding whitespace removed.

        `settings` maps onto the request as: `max_new_tokens` -> `max_tokens`; greedy -> `temperature: 0`; sampling ->
        `temperature`, `top_p: 1` and `seed + index` (one seed per conversation, so equal conversations in a batch
        still get different samples); `repetition_penalty` -> vLLM's field of that name (sent only when != 1).
        `stop_after_verdict` is applied here, not by the server (a stop string cannot express "a line that is a
        verdict"): the answer is cut after its first verdict line.

        Raises:
            ValueError: `no_repeat_ngram_size > 0`, which the chat-completions API cannot express.
            BackendError: a request failed for good (after retries where they could help).
        """
        if settings.no_repeat_ngram_size:
            raise ValueError(
                f"no_repeat_ngram_size={settings.no_repeat_ngram_size} has no equivalent in the chat-completions "
                "API; set it to 0 for the openai backend (use repetition_penalty instead)."
            )
        common: dict = {"max_tokens": settings.max_new_tokens}
        if settings.do_sample:
            common.update(temperature=settings.temperature, top_p=1.0)
        else:
            common["temperature"] = 0.0
        if settings.repetition_penalty != 1.0:
            common["repetition_penalty"] = settings.repetition_penalty  # vLLM extra sampling parameter

        def request(index: int, conversation: list[dict]) -> str:
            body = {"model": self.model, "messages": self._messages(conversation), **common}
            if settings.do_sample:
                body["seed"] = settings.seed + index
            text = self._post(body, _message_content).strip()
            return _cut_after_verdict(text) if settings.stop_after_verdict else text

        return self._map(request, conversations)

    def choice_probabilities(
        self, conversations: list[list[dict]], answer_prefix: str, candidates: tuple[str, str]
    ) -> list[tuple[float, float]]:
        """P(candidate 1), P(candidate 2) as the first token after `answer_prefix`, renormalised over the two.

        The prefix is sent as a final assistant message that the server continues (vLLM's
        `continue_final_message: true, add_generation_prompt: false`), with `max_tokens: 1` and the top 20 logprobs
        of that one token. A candidate matches every listed token equal to it after stripping whitespace (`"1"` and
        `" 1"` are the same answer; their probabilities add up). A candidate missing from the top 20 gets the
        smallest listed probability: an upper bound on its true probability, so the other candidate's share is, if
        anything, understated.

        Raises:
            BackendError: neither candidate is among the top tokens (the prefix/candidates do not fit this model),
                or a request failed for good.
        """
        wanted = tuple(c.strip() for c in candidates)
        if len(wanted) != 2 or not all(wanted) or wanted[0] == wanted[1]:
            raise ValueError(f"candidates must be two different non-blank strings, got {candidates!r}.")

        def request(index: int, conversation: list[dict]) -> tuple[float, float]:
            messages = self._messages(conversation) + [{"role": "assistant", "content": answer_prefix}]
            body = {
                "model": self.model,
                "messages": messages,
                "max_tokens": 1,
                "temperature": 0.0,
                "logprobs": True,
                "top_logprobs": TOP_LOGPROBS,
                "continue_final_message": True,  # vLLM: continue the assistant message instead of starting a new one
                "add_generation_prompt": False,  # vLLM: required together with continue_final_message
            }
            return _pair_probabilities(self._post(body, _first_top_logprobs), wanted, answer_prefix)

        return self._map(request, conversations)

    def pop_metrics(self) -> dict[str, float]:
        """Counters since the last call, under `judge/http_...`, then reset.

        `requests`: HTTP attempts sent (retries included); `retries`: attempts that were retries; `failures`: requests
        that failed for good (raised); `latency_s`: total seconds spent in attempts; `mean_latency_s`: per attempt.
        """
        with self._lock:
            out = {
                "judge/http_requests": float(self._requests),
                "judge/http_retries": float(self._retries),
                "judge/http_failures": float(self._failures),
                "judge/http_latency_s": self._latency,
                "judge/http_mean_latency_s": self._latency / self._requests if self._requests else 0.0,
            }
            self._reset_counters()
        return out

    # ------------------------------------------------------------------------------------------------- internals
    def _reset_counters(self) -> None:
        self._requests = self._retries = self._failures = 0
        self._latency = 0.0

    def _map(self, request, conversations: list[list[dict]]) -> list:
        """`request(i, conversation)` for every conversation, `concurrency` at a time, results in input order. The
        first failure cancels the requests not yet started and is raised."""
        if not conversations:
            return []
        pool = ThreadPoolExecutor(max_workers=min(self.concurrency, len(conversations)), thread_name_prefix="judge")
        try:
            futures = [pool.submit(request, i, c) for i, c in enumerate(conversations)]
            return [f.result() for f in futures]
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _messages(self, conversation: list[dict]) -> list[dict]:
        """The chat messages with PIL images turned into `image_url` items holding `data:` URLs."""
        messages = []
        for message in conversation:
            content = message.get("content")
            if isinstance(content, list):
                content = [self._content_item(item) for item in content]
            elif not isinstance(content, str):
                raise ValueError(f"Message content must be a string or a list of items, got {type(content).__name__}.")
            messages.append({"role": message["role"], "content": content})
        return messages

    def _content_item(self, item: dict) -> dict:
        kind = item.get("type")
        if kind == "text":
            return {"type": "text", "text": item["text"]}
        if kind == "image":
            return {"type": "image_url", "image_url": {"url": self._data_url(item["image"])}}
        raise ValueError(
            f"Unsupported content item type {kind!r}; conversations hold 'text' and 'image' items "
            "(see reward.templates.build_messages)."
        )

    def _data_url(self, image: Image.Image) -> str:
        if not isinstance(image, Image.Image):
            raise ValueError(f"An 'image' item must hold a PIL.Image, got {type(image).__name__}.")
        if self.image_format == "JPEG" and image.mode not in ("RGB", "L"):
            image = image.convert("RGB")  # JPEG has no alpha channel
        buffer = io.BytesIO()
        image.save(buffer, format=self.image_format)
        encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
        return f"data:{IMAGE_FORMATS[self.image_format]};base64,{encoded}"

    def _post(self, body: dict, extract):
        """POST `body` to `/chat/completions` and return `extract(answer_json)`, retrying where that can help."""
        payload = json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        for attempt in range(self.max_retries + 1):
            if attempt:
                with self._lock:
                    self._retries += 1
            started = time.perf_counter()
            try:
                status, retry_after, raw = self._send(payload, headers)
                return self._check(status, retry_after, raw, extract)
            except _Retryable as err:
                problem = err
            except (OSError, http.client.HTTPException) as err:  # refused, reset, timed out, cut-off answers
                kind = "timed out" if isinstance(err, TimeoutError) else f"failed ({type(err).__name__}: {err})"
                problem = _Retryable(f"the request {kind}")
            except BackendError:
                with self._lock:
                    self._failures += 1
                raise
            finally:
                with self._lock:
                    self._requests += 1
                    self._latency += time.perf_counter() - started
            if attempt < self.max_retries:
                delay = self.backoff * 2**attempt * (0.5 + random.random())
                time.sleep(max(delay, problem.retry_after or 0.0))
        with self._lock:
            self._failures += 1
        raise BackendError(
            self._redact(
                f"{self.model_id}: {problem} ({self.max_retries + 1} attempts). Check that the server is up and "
                "healthy, or raise `timeout` / `max_retries` for a slow or busy server."
            ),
            status=problem.status,
        )

    def _send(self, payload: bytes, headers: dict) -> tuple[int, float | None, bytes]:
        # A fresh connection per request: simple and thread-safe; its cost is small next to a VLM answer.
        connection_class = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
        connection = connection_class(self._host, self._port, timeout=self.timeout)
        try:
            connection.request("POST", f"{self._path}/chat/completions", body=payload, headers=headers)
            response = connection.getresponse()
            return response.status, _retry_after(response.getheader("Retry-After")), response.read()
        finally:
            connection.close()

    def _check(self, status: int, retry_after: float | None, raw: bytes, extract):
        if status == 429 or status >= 500:
            raise _Retryable(f"HTTP {status}: {_error_message(raw)}", retry_after, status)
        if status != 200:
            raise BackendError(
                self._redact(
                    f"{self.model_id} refused the request with HTTP {status}: {_error_message(raw)}. A 4xx error is "
                    "not retried: check the model name, the API key, and the request fields the server accepts."
                ),
                status=status,
            )
        try:
            answer = json.loads(raw)
        except ValueError as err:
            raise _Retryable(f"the answer is not JSON ({_truncate(raw)!r})", status=status) from err
        try:
            return extract(answer)
        except (KeyError, IndexError, TypeError, ValueError) as err:
            raise _Retryable(f"malformed answer: {err} (body: {_truncate(raw)!r})", status=status) from err

    def _redact(self, text: str) -> str:
        # A server may echo request headers in its error body; the key must not reach logs through our exceptions.
        return text.replace(self._api_key, "<redacted>") if self._api_key else text


def _parse_base_url(url: str) -> tuple[str, str, str, int | None, str]:
    problem = None
    try:
        parts = urlsplit(url.strip())
        port = parts.port  # raises ValueError for a non-numeric or out-of-range port
    except ValueError as err:
        parts, port, problem = None, None, str(err)
    if problem is None:
        if parts.scheme not in ("http", "https"):
            problem = "the scheme must be http or https"
        elif not parts.hostname:
            problem = "there is no host"
        elif parts.username or parts.password:
            problem = "credentials do not belong in the URL (put the key in the env var named by api_key_env)"
        elif parts.query or parts.fragment:
            problem = "the API root takes no query or fragment"
    if problem:
        # Do not echo a URL that carries credentials.
        shown = "<URL with credentials>" if "@" in url else repr(url)
        raise ValueError(f"Malformed base_url {shown}: {problem}. Expected e.g. {DEFAULT_BASE_URL!r}.")
    path = parts.path.rstrip("/")
    return f"{parts.scheme}://{parts.netloc}{path}", parts.scheme, parts.hostname, port, path


def _message_content(answer: dict) -> str:
    content = answer["choices"][0]["message"]["content"]
    if not isinstance(content, str):
        raise TypeError(f"choices[0].message.content is {type(content).__name__}, not a string")
    return content


def _first_top_logprobs(answer: dict) -> list[tuple[str, float]]:
    entries = answer["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
    pairs = [(str(e["token"]), float(e["logprob"])) for e in entries]
    if not pairs:
        raise ValueError("choices[0].logprobs.content[0].top_logprobs is empty")
    return pairs


def _pair_probabilities(
    top: list[tuple[str, float]], candidates: tuple[str, str], answer_prefix: str
) -> tuple[float, float]:
    """Renormalised (P(candidate 1), P(candidate 2)) from the top logprobs; see `choice_probabilities`."""
    probs = [math.exp(lp) for _, lp in top]
    found = [sum(p for (token, _), p in zip(top, probs) if token.strip() == cand) for cand in candidates]
    matched = [any(token.strip() == cand for token, _ in top) for cand in candidates]
    if not any(matched):
        listed = [token for token, _ in top]
        raise BackendError(
            f"Neither candidate {candidates} is among the top {len(top)} tokens after {answer_prefix!r} (got "
            f"{listed}); the answer prefix and candidates of the judge template do not fit this model."
        )
    floor = min(probs)
    p_1, p_2 = (f if m else floor for f, m in zip(found, matched))
    mass = p_1 + p_2
    if mass <= 0.0:  # every listed logprob underflowed: nothing distinguishes the two
        return 0.5, 0.5
    return p_1 / mass, p_2 / mass


def _cut_after_verdict(text: str) -> str:
    """The text up to and including its first verdict line ("Image 2 is better", "Tie"), or all of it."""
    end = 0
    for line in text.split("\n"):
        end += len(line) + 1
        if _VERDICT_END.search("\n" + line):
            return text[: end - 1].rstrip()
    return text


def _retry_after(value: str | None) -> float | None:
    try:
        return min(max(float(value), 0.0), _MAX_RETRY_AFTER) if value else None
    except ValueError:  # the HTTP-date form: fall back to our own backoff
        return None


def _error_message(raw: bytes) -> str:
    """The server's error message (`{"error": {"message": ...}}`, `{"message": ...}`, `{"detail": ...}` or text)."""
    try:
        data = json.loads(raw)
    except ValueError:
        return _truncate(raw)
    if isinstance(data, dict):
        error = data.get("error")
        message = error.get("message") if isinstance(error, dict) else error
        message = message or data.get("message") or data.get("detail")
        if message:
            return _truncate(str(message))
    return _truncate(raw)


def _truncate(raw: bytes | str) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    text = text.strip()
    return text if len(text) <= _MAX_ERROR_CHARS else text[:_MAX_ERROR_CHARS] + "...[truncated]"
