"""ONNX models (`.onnx`), run with onnxruntime: per-class scores (or labels) only.

The model runs in an onnxruntime `InferenceSession` behind a torch.nn.Module (`OnnxModule`), so every forward pass
of the audit reads it as it reads a PyTorch model, through the output-convention detection of `ops.scores`
(probabilities, logits, log-probabilities or labels). onnxruntime computes no input gradients and an ONNX graph
is no architecture the audit can re-initialise and train, so the handle (`queried.QueriedModelHandle`) offers
scores only: gradient attacks and everything that trains copies are NOT_APPLICABLE with the gradient-free
alternative named (Square, HopSkipJump, label-only membership inference).

onnxruntime is the optional extra `amulet-audit[onnx]`; this module is imported only when an ONNX model is loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from amulet_audit.core.digest import sha256_file
from amulet_audit.core.errors import InputError
from amulet_audit.inputs.queried import QueriedModelHandle

_FLOAT_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64}


def _session(raw: bytes):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # deterministic, and the audit's own processes share the cores
    options.inter_op_num_threads = 1
    return ort.InferenceSession(raw, sess_options=options, providers=["CPUExecutionProvider"])


def _pick_output(outputs) -> tuple[int, str]:
    """(index, kind) of the output the audit reads: per-class scores ("tensor": a float tensor of rank 2 or 1;
    "map": skl2onnx's ZipMap, a sequence of {class: probability}) before labels ("labels": an integer tensor)."""
    kinds = []
    for i, out in enumerate(outputs):
        if out.type in _FLOAT_TYPES:
            kinds.append((0, i, "tensor"))
        elif out.type.startswith("seq(map("):
            kinds.append((1, i, "map"))
        elif out.type.startswith("tensor(int") or out.type == "tensor(bool)":
            kinds.append((2, i, "labels"))
    if not kinds:
        return -1, ""
    _, index, kind = min(kinds)
    return index, kind


class OnnxModule(torch.nn.Module):
    """A torch.nn.Module that runs an ONNX model in onnxruntime: inputs (n, *input_shape) float32 -> the
    chosen output (`_pick_output`) as a tensor: scores (n, k) float32, or labels (n,) int64. No gradient flows
    through it. Pickles as the ONNX bytes (the session is rebuilt on load)."""

    def __init__(self, raw: bytes):
        super().__init__()
        self._raw = raw
        self._open()

    def _open(self) -> None:
        self._session = _session(self._raw)
        inp = self._session.get_inputs()[0]
        self._input, self._dtype = inp.name, _FLOAT_TYPES.get(inp.type, np.float32)
        self._index, self._kind = _pick_output(self._session.get_outputs())
        self._output = self._session.get_outputs()[self._index].name

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_session", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._open()

    def forward(self, x):
        arr = x.detach().cpu().numpy().astype(self._dtype, copy=False)
        (out,) = self._session.run([self._output], {self._input: arr})
        if self._kind == "map":  # ZipMap: one {class: probability} per record, classes in sorted order
            keys = sorted(out[0]) if len(out) else []
            return torch.as_tensor(np.array([[row[k] for k in keys] for row in out], dtype=np.float32))
        out = np.asarray(out)
        if self._kind == "labels":  # class indices, (n,) or (n, 1); `ops.scores.detect` reads them as labels
            return torch.as_tensor(out.astype(np.int64))
        return torch.as_tensor(out.astype(np.float32))


def load_onnx(path: str | Path) -> QueriedModelHandle:
    """The ONNX model at `path`, run with onnxruntime, as a handle offering scores only (labels only when its one
    output is an integer tensor, which `ops.scores.attach` reads as labels).

    Raises InputError (one sentence) when onnxruntime is not installed, the file is no ONNX model onnxruntime can
    run, or the model has other than one input or no numeric output."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: model file not found; check the path.")
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise InputError(f"{path}: an ONNX model runs with onnxruntime, which is not installed; "
                         "pip install 'amulet-audit[onnx]'.") from None
    raw = path.read_bytes()
    try:
        session = _session(raw)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: not an ONNX model onnxruntime can run ({first}); export it again "
                         "(torch.onnx.export, skl2onnx).") from None
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1:
        raise InputError(f"{path}: the ONNX model has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); "
                         "the audit feeds one tensor of all features, so export the model with one input.")
    index, kind = _pick_output(outputs)
    if index < 0:
        raise InputError(f"{path}: no output of the ONNX model is a numeric tensor ({', '.join(o.type for o in outputs)}); "
                         "export per-class scores or labels.")
    module = OnnxModule(raw)
    from amulet_audit.core.mode import set_mode

    set_mode(module, False)
    n_params = _initializer_size(raw)
    chosen = outputs[index]
    architecture = f"ONNX graph, input '{inputs[0].name}' {inputs[0].type}, output '{chosen.name}' {chosen.type}"
    warnings = []
    if len(outputs) > 1:
        warnings.append(f"The ONNX model has {len(outputs)} outputs ({', '.join(o.name for o in outputs)}); the "
                        f"audit reads '{chosen.name}' ({'per-class scores' if kind != 'labels' else 'labels'}).")
    return QueriedModelHandle(path, sha256_file(path), "onnx", module, architecture, warnings,
                              n_parameters=n_params)


def _initializer_size(raw: bytes) -> int:
    """The number of weights stored in the graph's initializers (0 when the onnx package is not installed)."""
    try:
        import onnx
    except ImportError:
        return 0
    try:
        model: Any = onnx.load_model_from_string(raw)
    except Exception:
        return 0
    return int(sum(int(np.prod(t.dims)) for t in model.graph.initializer))
