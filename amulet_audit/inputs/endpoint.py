"""A model behind a prediction service (`--endpoint URL`): queried over HTTP with the data spec's request/response
mapping (`inputs.data.EndpointMapping`), within a query budget, a rate limit, a timeout and retries with
exponential backoff (the standard library's urllib; no other dependency).

Every record sent is counted (`EndpointClient.stats`: records queried, requests, retries, failed requests); the
runner writes the counts into results.json (`environment.endpoint_queries`) and the report. A request that would
take the records queried past the budget is not sent: `QueryBudgetExceeded` is raised, and the attack that needed
it is not applicable with that sentence (the runner), never a crash.

The service is a black box: its answers are the only evidence, and nothing guarantees that it answers every query
with the same model. The audited "file" digest is that of the URL and the mapping, and the results say so.
"""

from __future__ import annotations

import hashlib
import json
import socket
import time
import urllib.error
import urllib.request
from typing import Any

import numpy as np
import torch

from amulet_audit.core.errors import InputError, QueryBudgetExceeded
from amulet_audit.inputs.data import label_string
from amulet_audit.inputs.queried import QueriedModelHandle

# The mapping fields that decide what the service is asked and how its answer is read: they and the URL name the
# audited model (limits such as the budget do not change the model).
_MAPPING_KEYS = ("features", "layout", "scores", "labels")
# HTTP statuses worth a retry: the service is busy or failed on its side; any other 4xx means the request is wrong.
_RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class EndpointError(InputError):
    """The service cannot be used: unreachable after the retries, an answer that is not JSON or does not fit the
    mapping, or a request it refuses (HTTP 4xx). The message is one sentence naming the URL and the fix."""


class EndpointClient:
    """Sends records to the service in requests of at most `mapping.batch_size` records and reads the answers.

    `url`: http(s) URL; `mapping`: an `EndpointMapping`; `feature_names`: the data's features in the model's input
    order; `classes`: the data's class labels (strings) in output-index order. `sleep` and `clock` are
    `time.sleep` and `time.monotonic` (replaceable in tests). Counts, read through `stats()`: `records` sent in
    all requests (retries included: each reaches the service), `requests` sent, `retries`, `failed` requests
    (refused, timed out or unreachable)."""

    def __init__(self, url: str, mapping, feature_names: list[str], classes: list[str], *, sleep=time.sleep,
                 clock=time.monotonic):
        self.url, self.mapping = url, mapping
        self.feature_names, self.classes = list(feature_names), list(classes)
        self._sleep, self._clock = sleep, clock
        self.records = self.requests = self.retries = self.failed = 0
        self._last_request: float | None = None

    def stats(self) -> dict[str, Any]:
        """What the audit asked of the service: JSON scalars for results.json."""
        m = self.mapping
        return {"url": self.url, "records_queried": self.records, "requests": self.requests, "retries": self.retries,
                "failed_requests": self.failed, "budget": m.budget, "batch_size": m.batch_size,
                "rate_limit_per_s": m.rate_limit, "timeout_s": m.timeout}

    def query(self, x: np.ndarray) -> np.ndarray:
        """The service's answers for records `x` (n, *input_shape): per-class scores float64 (n, k) or (n,) for
        one number per record, or class indices int64 (n,) when the mapping reads labels.

        Raises QueryBudgetExceeded before a request that would pass the budget, EndpointError when the service
        cannot answer."""
        x = np.asarray(x)
        step = self.mapping.batch_size
        parts = [self._answer(x[start:start + step]) for start in range(0, len(x), step)]
        if not parts:
            return np.zeros((0,), dtype=np.int64 if self.mapping.labels else np.float64)
        return np.concatenate(parts)

    # --- one request -------------------------------------------------------------------------------------------

    def _body(self, x: np.ndarray) -> bytes:
        m = self.mapping
        if m.layout == "rows":
            payload: Any = x.tolist()
        else:
            flat = x.reshape(len(x), -1)
            if flat.shape[1] != len(self.feature_names):
                raise EndpointError(f"{self.url}: layout '{m.layout}' sends named features, but the records have "
                                    f"{flat.shape[1]} values for {len(self.feature_names)} feature names; use "
                                    "layout: rows for image inputs.")
            if m.layout == "records":
                payload = [dict(zip(self.feature_names, row)) for row in flat.tolist()]
            else:
                payload = {name: flat[:, j].tolist() for j, name in enumerate(self.feature_names)}
        return json.dumps({m.features: payload}).encode()

    def _answer(self, x: np.ndarray) -> np.ndarray:
        m = self.mapping
        if m.budget is not None and self.records + len(x) > m.budget:
            raise QueryBudgetExceeded(
                f"the query budget of {m.budget:,} records for {self.url} is spent ({self.records:,} records queried; "
                f"the next request needs {len(x):,} more); raise endpoint.budget in the data spec to measure it")
        body = self._body(x)
        attempt = 0
        while True:
            self._wait_for_rate_limit()
            self.requests += 1
            self.records += len(x)
            try:
                request = urllib.request.Request(self.url, data=body, method="POST",
                                                 headers={"Content-Type": "application/json",
                                                          "Accept": "application/json"})
                with urllib.request.urlopen(request, timeout=m.timeout) as response:
                    raw = response.read()
                break
            except urllib.error.HTTPError as exc:
                self.failed += 1
                if exc.code not in _RETRY_STATUS:
                    raise EndpointError(f"{self.url}: the service refused the request (HTTP {exc.code} {exc.reason}); "
                                        "check the URL and the data spec's endpoint mapping (field names, layout).") from None
                why = f"HTTP {exc.code} {exc.reason}"
            except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError) as exc:
                self.failed += 1
                why = str(getattr(exc, "reason", exc)) or type(exc).__name__
            if attempt >= m.retries:
                raise EndpointError(f"{self.url}: the prediction service did not answer ({why}) after {m.retries} "
                                    "retries; check the URL and that the service is running.")
            self._sleep(m.backoff * 2 ** attempt)
            attempt += 1
            self.retries += 1
        return self._read(raw, len(x))

    def _wait_for_rate_limit(self) -> None:
        rate = self.mapping.rate_limit
        now = self._clock()
        if rate and self._last_request is not None:
            wait = self._last_request + 1.0 / rate - now
            if wait > 0:
                self._sleep(wait)
                now = self._clock()
        self._last_request = now

    def _read(self, raw: bytes, n: int) -> np.ndarray:
        m = self.mapping
        field = m.scores or m.labels
        try:
            answer: Any = json.loads(raw)
        except ValueError:
            raise EndpointError(f"{self.url}: the answer is not JSON ({raw[:60]!r}); check the URL.") from None
        for key in field.split("."):
            if not isinstance(answer, dict) or key not in answer:
                raise EndpointError(f"{self.url}: the answer has no field '{field}'; set endpoint.{'scores' if m.scores else 'labels'} "
                                    "in the data spec to the field that holds the model's answers.")
            answer = answer[key]
        if not isinstance(answer, list) or len(answer) != n:
            got = len(answer) if isinstance(answer, list) else type(answer).__name__
            raise EndpointError(f"{self.url}: field '{field}' holds {got} answers for {n} records; the service must "
                                "answer each record, in order.")
        if m.labels:
            return np.array([self._label_index(v, field) for v in answer], dtype=np.int64)
        try:
            scores = np.asarray(answer, dtype=np.float64)
        except (TypeError, ValueError):
            raise EndpointError(f"{self.url}: field '{field}' does not hold numbers (one list of per-class scores per "
                                "record); set endpoint.labels instead if the service returns class labels.") from None
        if scores.ndim not in (1, 2):
            raise EndpointError(f"{self.url}: field '{field}' holds answers of shape {list(scores.shape)}; expected "
                                "one list of per-class scores per record.")
        return scores

    def _label_index(self, value: Any, field: str) -> int:
        text = label_string(value)
        if text in self.classes:
            return self.classes.index(text)
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(self.classes):
            return value
        raise EndpointError(f"{self.url}: field '{field}' holds the label {value!r}, which is none of the data's "
                            f"classes ({', '.join(self.classes)}); list the service's labels under `classes`.")


class EndpointModule(torch.nn.Module):
    """A torch.nn.Module whose forward pass asks the service (`EndpointClient.query`): inputs (n, *input_shape)
    -> scores float32 (n, k) / (n,), or class indices int64 (n,). No gradient flows through it."""

    def __init__(self, client: EndpointClient):
        super().__init__()
        self.client = client

    def forward(self, x):
        out = self.client.query(x.detach().cpu().numpy())
        return torch.as_tensor(out if out.dtype == np.int64 else out.astype(np.float32))


class EndpointHandle(QueriedModelHandle):
    """The handle of a model behind a prediction service; `queries()` returns the client's counts."""

    def queries(self) -> dict[str, Any]:
        return self.arch_module.client.stats()  # the service's module, also once `ops.scores.attach` wrapped it


def mapping_digest(url: str, mapping) -> str:
    """SHA-256 of the URL and the request/response mapping: what names the audited model."""
    named = {k: getattr(mapping, k) for k in _MAPPING_KEYS}
    return hashlib.sha256(json.dumps({"url": url, "mapping": named}, sort_keys=True).encode()).hexdigest()


def load_endpoint(url: str, data, *, sleep=time.sleep) -> EndpointHandle:
    """The model behind the service at `url`, queried with the mapping in `data.spec.endpoint` (an AuditData), after
    one request of two holdout records has shown that the service answers as mapped.

    Raises InputError (one sentence) for a URL that is not http(s), a data spec without an `endpoint` section, or a
    service that is unreachable or answers otherwise than the mapping says."""
    from urllib.parse import urlparse

    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise InputError(f"--endpoint {url}: not an http(s) URL; give the prediction service's address, e.g. "
                         "http://127.0.0.1:8080/predict.")
    mapping = data.spec.endpoint
    if mapping is None:
        raise InputError(f"{data.spec_path}: --endpoint needs an `endpoint:` section saying how to query the service "
                         "(features: request field, scores: or labels: response field); see DESIGN.md, 'Data spec'.")
    client = EndpointClient(url, mapping, data.feature_names, data.classes, sleep=sleep)
    module = EndpointModule(client)
    from amulet_audit.core.mode import set_mode

    set_mode(module, False)
    module(torch.as_tensor(data.x_holdout[:2]))  # the mapping fits the service's answers, or one sentence (exit 2)
    answer = f"field '{mapping.scores}' (per-class scores)" if mapping.scores else f"field '{mapping.labels}' (labels)"
    architecture = f"prediction service: request field '{mapping.features}' ({mapping.layout}), answers in {answer}"
    warnings = [f"The model was audited through the prediction service at {url}: every number comes from its answers, "
                "and nothing guarantees that the service answered every query with the same model (it may have "
                "changed between queries); the digest names the URL and the request/response mapping, not the "
                "model's weights."]
    return EndpointHandle(url, mapping_digest(url, mapping), "endpoint", module, architecture, warnings)
