"""Serve the credit MLP (examples/credit) as a prediction service on 127.0.0.1, and write the data spec that audits it.

    python examples/credit/train.py                        # the model and data (examples/credit/)
    python examples/endpoint/serve.py --port 8080          # serves http://127.0.0.1:8080/predict, writes the spec
    amulet-audit --endpoint http://127.0.0.1:8080/predict --data examples/endpoint/endpoint.data.yaml --policy eu_ai_act

The service answers POST /predict with a JSON body {"instances": [{feature: value, ...}, ...]} (one object per
record, the credit features by name) with {"probabilities": [[p_approved, p_denied], ...]} (`--output logits`:
{"scores": [[z0, z1], ...]}; `--output labels`: {"labels": ["approved", ...]}). It runs the TorchScript model
loaded with torch, in eval mode, one request at a time. `--fail-first N` answers the first N requests with HTTP 500
(to see the audit's retries).

Tests import this file by path and use `Service` (start, stop, counts) and `endpoint_spec`.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

HERE = Path(__file__).resolve().parent
CREDIT = HERE.parent / "credit"
SPEC_FILE = "endpoint.data.yaml"
FIELDS = {"probabilities": "probabilities", "logits": "scores", "labels": "labels"}  # --output -> response field


class Service:
    """The credit MLP at `model` (TorchScript) behind an HTTP server on 127.0.0.1:`port` (0: a free port) in a
    daemon thread. `features`: the request's feature names in the model's input order; `classes`: the labels of
    the outputs; `output`: probabilities | logits | labels; `fail_first`: requests answered with HTTP 500 first.
    Counts what it served: `requests` (answered or failed), `records` (in answered requests)."""

    def __init__(self, model: Path, features: list[str], classes: list[str], *, port: int = 0,
                 output: str = "probabilities", fail_first: int = 0):
        import torch

        self.model = torch.jit.load(str(model), map_location="cpu").eval()
        self.features, self.classes, self.output = list(features), list(classes), output
        self.fail_first, self.requests, self.records = fail_first, 0, 0
        self._lock = threading.Lock()
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                length = int(self.headers.get("Content-Length") or 0)
                status, body = service.answer(self.path, self.rfile.read(length))
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):  # quiet: one line per request would flood the terminal
                pass

        self.server = HTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/predict"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def answer(self, path: str, raw: bytes) -> tuple[int, dict]:
        """(HTTP status, JSON body) for one request."""
        import numpy as np
        import torch

        with self._lock:
            self.requests += 1
            if self.requests <= self.fail_first:
                return 500, {"error": "service warming up"}
            if path != "/predict":
                return 404, {"error": f"no such path {path}; POST /predict"}
            try:
                rows = json.loads(raw)["instances"]
                x = np.array([[float(r[name]) for name in self.features] for r in rows], dtype=np.float32)
            except (ValueError, KeyError, TypeError) as exc:
                return 400, {"error": f"bad request: {exc}"}
            self.records += len(rows)
            with torch.no_grad():
                logits = self.model(torch.as_tensor(x.reshape(len(rows), len(self.features))))
        if self.output == "logits":
            return 200, {"scores": logits.tolist()}
        if self.output == "labels":
            return 200, {"labels": [self.classes[i] for i in logits.argmax(dim=1).tolist()]}
        return 200, {"probabilities": torch.softmax(logits.double(), dim=1).tolist()}

    def start(self) -> "Service":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def endpoint_spec(credit_spec: Path, out: Path, *, output: str = "probabilities", **limits) -> Path:
    """Write out/SPEC_FILE: the credit data spec at `credit_spec` (its data file reached from `out`) with an
    `endpoint:` section for this service (`output` decides the response field; `limits`: budget, rate_limit,
    timeout, retries, backoff, batch_size)."""
    import os

    import yaml

    spec = yaml.safe_load(credit_spec.read_text(encoding="utf-8"))
    source = (credit_spec.parent / spec["source"]["path"]).resolve()
    spec["source"]["path"] = os.path.relpath(source, out.resolve())
    answer = "labels" if output == "labels" else "scores"
    spec["endpoint"] = {"features": "instances", "layout": "records", answer: FIELDS[output], **limits}
    path = out / SPEC_FILE
    path.write_text("# written by examples/endpoint/serve.py\n" + yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the credit MLP on 127.0.0.1 and write its endpoint data spec.")
    parser.add_argument("--credit", type=Path, default=CREDIT, help="folder of the trained credit example (default: examples/credit)")
    parser.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (default 8080; 0: any free port)")
    parser.add_argument("--output", choices=sorted(FIELDS), default="probabilities", help="what the service answers (default probabilities)")
    parser.add_argument("--budget", type=int, default=20_000_000, help="the query budget written into the spec (records; default 20,000,000)")
    parser.add_argument("--fail-first", type=int, default=0, help="answer the first N requests with HTTP 500")
    parser.add_argument("--spec-out", type=Path, default=HERE, help="folder for the data spec (default: this folder)")
    args = parser.parse_args(argv)
    import yaml

    credit_spec = args.credit / "model.data.yaml"
    if not credit_spec.is_file():
        sys.exit(f"{credit_spec}: not found; run python examples/credit/train.py first.")
    spec = yaml.safe_load(credit_spec.read_text(encoding="utf-8"))
    service = Service(args.credit / "model.pt", spec["features"], [str(c) for c in spec["classes"]], port=args.port,
                      output=args.output, fail_first=args.fail_first)
    args.spec_out.mkdir(parents=True, exist_ok=True)
    path = endpoint_spec(credit_spec, args.spec_out, output=args.output, budget=args.budget)
    print(f"serving the credit MLP at {service.url} (data spec: {path}); Ctrl-C stops it", flush=True)
    try:
        service.server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        service.server.server_close()


if __name__ == "__main__":
    main()
