"""What an exception raised by a model (or by loading one) means: its real cause, and whether it is a shape
problem or a model whose code moves tensors to a GPU.

A TorchScript runtime error starts with a generic header ("The following operation failed in the TorchScript
interpreter.") and a TorchScript traceback; the cause is the error line after the traceback. Messages quote that.
"""

from __future__ import annotations

import re

# An error line at the left margin: "RuntimeError: mat1 and mat2 shapes cannot be multiplied (2x5 and 6x2)".
_ERROR_LINE = re.compile(r"^([A-Za-z_][\w.]*(Error|Exception|Interrupt)): ?(.*)$")
_HEADERS = ("The following operation failed in the TorchScript interpreter", "Traceback of TorchScript")
# Messages PyTorch gives for inputs of the wrong shape or size.
_SHAPE = re.compile(
    r"shapes cannot be multiplied|size mismatch|must match the size|is invalid for input of size|"
    r"Expected \d+D|expected \d+D|but got input of size|Given groups=|Expected input batch_size|"
    r"input\.size\(-1\) must be equal|Guard failed: .*size\(\)|Expected input at .*shape|"
    r"expected .*shape|dimension out of range|Dimension out of range|number of dims|doesn't match the broadcast shape|"
    r"[Ss]izes of tensors must match|The size of tensor a|expected input with shape|Expected size",
)
# Messages PyTorch gives when code asks for a GPU that is not there (or the model's tensors are on another device).
_GPU = re.compile(
    r"CUDA|cuda|NVIDIA|Torch not compiled with|no GPU|'CUDA' backend|on the same device|different devices|"
    r"Expected all tensors to be on the same device|MPS backend",
)


def error_cause(exc: BaseException, limit: int = 200) -> str:
    """The line of `exc`'s message that says what went wrong: for a TorchScript runtime error the error line after
    its traceback (not the generic header); otherwise the first line. Shortened to `limit` characters."""
    text = str(exc).strip()
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    cause = lines[0]
    if any(h in text for h in _HEADERS):
        errors = [line for line in lines if _ERROR_LINE.match(line)]
        cause = errors[-1] if errors else lines[-1]
    return _shorten(cause, limit)


def is_shape_error(exc: BaseException) -> bool:
    return bool(_SHAPE.search(error_cause(exc, limit=10_000)))


def is_gpu_error(exc: BaseException) -> bool:
    """The model's code asks for a GPU (`.cuda()`, `.to("cuda")`, a tensor created on "cuda:0" by tracing on a GPU)."""
    return bool(_GPU.search(error_cause(exc, limit=10_000)))


def gpu_problem(available: bool) -> str:
    """What is wrong with a model whose code moves tensors to a GPU, on a machine with (`available`) or without one."""
    where = "the audit runs the model on the CPU" if available else "this machine has no GPU"
    return f"the model's code moves tensors to a GPU (CUDA) and {where}"


GPU_FIX = ("re-save the model so that it runs on the CPU: move it with .to('cpu') before torch.jit.script, trace or export "
           "it on the CPU (tracing records the device), and create tensors inside forward() on the input's device "
           "(device=x.device)")


def gpu_advice(available: bool) -> str:
    """The problem and the fix, in one clause."""
    return f"{gpu_problem(available)}; {GPU_FIX}"


def probe_failure(path, fmt: str, exc: BaseException, record_shape: list[int]) -> str:
    """One sentence for a model that fails on the data's first records: names the model file and the real cause; the
    shape advice only for a shape error, the device advice only for a device error."""
    import torch

    cause = error_cause(exc)
    if is_gpu_error(exc):
        return f"{path}: {gpu_problem(torch.cuda.is_available())} ({cause}); {GPU_FIX}."
    if is_shape_error(exc):
        return (f"{path}: the model does not accept the data's records of shape {record_shape} ({cause}); check "
                "features/input_shape in the data spec"
                + (", and export with a dynamic batch dimension (dynamic_shapes)." if fmt == "export" else "."))
    return (f"{path}: the model raises an error on the data's records of shape {record_shape} ({cause}); this is in the "
            "model's own code: fix the model, or check that the data spec's features are what it expects.")


def state_dict_mismatch(module, state_dict, exc: BaseException | None = None, shown: int = 3) -> str:
    """Why `state_dict` does not load into `module`, in one clause: the keys the class has and the file lacks, the
    keys the file has and the class lacks, and the tensors whose shapes differ (the first `shown` of each, then a
    count). Falls back to the lines of torch's own message after its "Error(s) in loading state_dict" header."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    sizes = [f"{k} is {_shape(state_dict[k])} in the file and {_shape(expected[k])} in the class"
             for k in expected if k in state_dict and hasattr(state_dict[k], "shape")
             and tuple(state_dict[k].shape) != tuple(expected[k].shape)]
    parts = []
    for what, items in (("in the class but not in the file", missing), ("in the file but not in the class", unexpected)):
        if items:
            parts.append(f"{len(items)} key{'s' if len(items) > 1 else ''} {what}: {_first(items, shown)}")
    if sizes:
        parts.append(f"size mismatch: {_first(sizes, shown)}")
    if parts:
        return "; ".join(parts)
    lines = [line.strip() for line in str(exc or "").splitlines() if line.strip()]
    body = [line for line in lines if not line.startswith("Error(s) in loading state_dict")]
    return _shorten(" ".join(body or lines) or type(exc).__name__, 300)


def _first(items: list[str], shown: int) -> str:
    return ", ".join(items[:shown]) + (f" and {len(items) - shown} more" if len(items) > shown else "")


def _shape(tensor) -> str:
    return "x".join(str(d) for d in tensor.shape) or "a scalar"


def _shorten(line: str, limit: int) -> str:
    if len(line) <= limit:
        return line
    # keep the first sentence when it fits: PyTorch's long messages explain themselves after it
    head = re.split(r"(?<=[.;])\s", line, maxsplit=1)[0]
    return head if len(head) <= limit else line[: limit - 3] + "..."
