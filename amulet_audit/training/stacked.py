"""K copies of a Linear/activation chain (an MLP) trained as one: batched matrix products over the stacked
weights, with the cross-entropy gradient written out by hand.

`torch.func.vmap` over `functional_call` trains any architecture, but for the small MLPs that tabular models
usually are, its dispatch and the autograd graph cost more than the arithmetic. A chain of Flatten, Linear and
elementwise activations needs neither: the forward is one `baddbmm` per Linear, and the backward of mean
cross-entropy through it is the textbook one (softmax minus one-hot; per layer dW = g^T h, db = sum g,
dh = g W times the activation's derivative, read from the activation's output). The chain is recognised in an
`nn.Sequential` (nested ones included) and in the FX graph that TorchScript models are converted to; anything
else keeps the vmap path.

torch is imported inside the functions, as in `reference.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

@dataclass(frozen=True)
class _Op:
    kind: str  # "flatten" | "linear" | "relu" | "leaky_relu" | "tanh" | "sigmoid"
    weight: str = ""  # linear: parameter names
    bias: str = ""
    start_dim: int = 1  # flatten
    slope: float = 0.0  # leaky_relu


def linear_chain(module, param_names: list[str]) -> "StackedChain | None":
    """The chain of `module` when it is Flatten/Linear/activation layers one after the other and every parameter
    belongs to a Linear, else None. `module`: an `nn.Sequential` or a torch.fx GraphModule."""
    ops = _from_fx(module) if hasattr(module, "graph") else _from_sequential(module)
    if not ops or not any(op.kind == "linear" for op in ops):
        return None
    used = [n for op in ops if op.kind == "linear" for n in (op.weight, op.bias) if n]
    if sorted(used) != sorted(param_names):
        return None
    return StackedChain(ops)


def _from_sequential(module) -> list[_Op] | None:
    import torch.nn as nn

    ops: list[_Op] = []

    def walk(seq, prefix: str) -> bool:
        for name, sub in seq.named_children():
            path = f"{prefix}{name}"
            kind = type(sub)
            if kind is nn.Sequential:
                if not walk(sub, path + "."):
                    return False
            elif kind is nn.Linear:
                ops.append(_Op("linear", f"{path}.weight", f"{path}.bias" if sub.bias is not None else ""))
            elif kind is nn.Flatten and sub.end_dim == -1 and sub.start_dim >= 1:
                ops.append(_Op("flatten", start_dim=sub.start_dim))
            elif kind is nn.ReLU:
                ops.append(_Op("relu"))
            elif kind is nn.LeakyReLU and sub.negative_slope >= 0:
                ops.append(_Op("leaky_relu", slope=float(sub.negative_slope)))
            elif kind is nn.Tanh:
                ops.append(_Op("tanh"))
            elif kind is nn.Sigmoid:
                ops.append(_Op("sigmoid"))
            elif kind is not nn.Identity:
                return False
        return True

    return ops if type(module) is nn.Sequential and walk(module, "") else None


def _from_fx(graph_module) -> list[_Op] | None:
    import torch

    aten = torch.ops.aten
    nodes = list(graph_module.graph.nodes)
    attrs = {n: n.target for n in nodes if n.op == "get_attr"}
    inputs = [n for n in nodes if n.op == "placeholder"]
    if len(inputs) != 1:
        return None
    current = inputs[0]  # the chain must run through one value, node after node
    ops: list[_Op] = []
    for node in nodes:
        if node.op in ("get_attr", "placeholder"):
            continue
        if node.op == "call_module" and str(node.target).startswith("_guards"):
            continue  # the exporter's input-shape guard; no tensor flows through it
        if node.op == "output":
            result = node.args[0]
            result = result[0] if isinstance(result, (tuple, list)) and len(result) == 1 else result
            return ops if result is current else None
        if node.op != "call_function" or not node.args or node.args[0] is not current:
            return None
        args, target = node.args, node.target
        if target == aten.linear.default and not node.kwargs and all(a in attrs for a in args[1:] if a is not None):
            ops.append(_Op("linear", attrs[args[1]], attrs[args[2]] if len(args) > 2 and args[2] is not None else ""))
        elif target == aten.flatten.using_ints and len(args) >= 2 and args[1] >= 1 and (len(args) < 3 or args[2] == -1):
            ops.append(_Op("flatten", start_dim=int(args[1])))
        elif target in (aten.relu.default, aten.relu_.default) and len(args) == 1:
            ops.append(_Op("relu"))
        elif target == aten.tanh.default and len(args) == 1:
            ops.append(_Op("tanh"))
        elif target == aten.sigmoid.default and len(args) == 1:
            ops.append(_Op("sigmoid"))
        elif target == aten.leaky_relu.default and (len(args) == 1 or float(args[1]) >= 0):
            ops.append(_Op("leaky_relu", slope=float(args[1]) if len(args) > 1 else 0.01))
        else:
            return None
        current = node
    return None


class StackedChain:
    """Forward and cross-entropy gradient of K stacked copies of a Linear/activation chain."""

    def __init__(self, ops: list[_Op]):
        self.ops = ops

    def forward(self, params: dict[str, Any], x, keep: list | None = None):
        """Logits (K, n, classes) of every model on its own inputs x (K, n, ...); `params`: name -> (K, ...)
        tensors. With `keep`, each op's input is appended to it (the backward pass reads them)."""
        import torch

        h = x
        for op in self.ops:
            if keep is not None:
                keep.append(h)
            if op.kind == "linear":
                w = params[op.weight]
                h = (torch.baddbmm(params[op.bias].unsqueeze(1), h, w.transpose(1, 2)) if op.bias
                     else torch.bmm(h, w.transpose(1, 2)))
            elif op.kind == "flatten":
                h = h.flatten(op.start_dim + 1)
            elif op.kind == "relu":
                h = h.relu()
            elif op.kind == "leaky_relu":
                h = torch.nn.functional.leaky_relu(h, op.slope)
            elif op.kind == "tanh":
                h = h.tanh()
            else:
                h = h.sigmoid()
        return h

    def gradient(self, params: dict[str, Any], grads: dict[str, Any], x, y, row_scale, *, output: str = "logits") -> None:
        """Write into `grads` (name -> (K, ...) tensors) the gradient of sum_k sum_i row_scale[k, i] * L_k,i:
        with row_scale = weight / count, each model's mean loss over its real rows, as in `train_model`. L is
        cross-entropy on logits (`output` "logits"), or binary cross-entropy with logits on a single logit z, the
        logit of class 1 ("single_logit"; d BCE / dz = sigmoid(z) - y). x: (K, n, ...) float inputs; y: (K, n)
        class indices; row_scale: (K, n)."""
        import torch

        saved: list = []
        out = self.forward(params, x, keep=saved)
        if output == "single_logit":
            g = out.sigmoid() - y.unsqueeze(-1).to(out.dtype)
        elif output == "logits":
            g = out.softmax(dim=-1)  # d CE / d logits = softmax - one_hot
            g.scatter_add_(-1, y.unsqueeze(-1), torch.full_like(g[..., :1], -1.0))
        else:
            raise ValueError(f"no hand-written gradient for output {output!r}")
        g.mul_(row_scale.unsqueeze(-1))
        first = next(i for i, op in enumerate(self.ops) if op.kind == "linear")
        for i in range(len(self.ops) - 1, first - 1, -1):
            op, h_in = self.ops[i], saved[i]
            h_out = saved[i + 1] if i + 1 < len(saved) else out
            if op.kind == "linear":
                torch.bmm(g.transpose(1, 2), h_in, out=grads[op.weight])
                if op.bias:
                    torch.sum(g, dim=1, out=grads[op.bias])
                if i > first:
                    g = torch.bmm(g, params[op.weight])
            elif op.kind == "flatten":
                g = g.reshape(h_in.shape)
            elif op.kind == "relu":
                g = g.mul_(h_out > 0)
            elif op.kind == "leaky_relu":
                g = g.mul_(torch.where(h_out > 0, 1.0, op.slope))
            elif op.kind == "tanh":
                g = g.mul_(1.0 - h_out * h_out)
            else:
                g = g.mul_(h_out * (1.0 - h_out))
