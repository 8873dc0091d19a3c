"""K copies of a model trained as one: for a Linear/activation chain (an MLP), batched matrix products over the
stacked weights with the cross-entropy gradient written out by hand (`StackedChain`); for any other Sequential of
torch.nn layers (convolutions, BatchNorm, Dropout, pooling), each layer run for all K models at once with autograd's
backward (`StackedLayers`).

`torch.func.vmap` over `functional_call` trains any architecture, but for the small MLPs that tabular models
usually are, its dispatch and the autograd graph cost more than the arithmetic. A chain of Flatten, Linear and
elementwise activations needs neither: the forward is one `baddbmm` per Linear, and the backward of mean
cross-entropy through it is the textbook one (softmax minus one-hot; per layer dW = g^T h, db = sum g,
dh = g W times the activation's derivative, read from the activation's output). The chain is recognised in an
`nn.Sequential` (nested ones included) and in the FX graph that TorchScript models are converted to; the layer
kernel in an `nn.Sequential` (a scripted one is rebuilt in eager mode, `training.scripted`); anything else keeps
the vmap path.

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


# --- any Sequential of known layers: batched layer by layer, backward by autograd ------------------------------

# Parameter-free torch.nn layers that treat their input's first dimension as the batch: K stacked models run them
# as one batch of K * n records, with the rank (and so the meaning) of each model's own call.
_PER_RECORD = ("ReLU", "ReLU6", "LeakyReLU", "ELU", "CELU", "SELU", "GELU", "SiLU", "Mish", "Tanh", "Sigmoid",
               "Hardtanh", "Hardsigmoid", "Hardswish", "Softplus", "Softsign", "Tanhshrink", "Identity", "Flatten",
               "Unflatten", "Softmax", "LogSoftmax", "MaxPool1d", "MaxPool2d", "MaxPool3d", "AvgPool1d", "AvgPool2d",
               "AvgPool3d", "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d", "AdaptiveMaxPool1d",
               "AdaptiveMaxPool2d", "AdaptiveMaxPool3d")
# Of those: layers acting on each value alone (any memory layout will do), and pooling layers acting on each
# channel alone, with the input rank (batch included) at which they read dimension 1 as channels.
_ELEMENTWISE = ("ReLU", "ReLU6", "LeakyReLU", "ELU", "CELU", "SELU", "GELU", "SiLU", "Mish", "Tanh", "Sigmoid",
                "Hardtanh", "Hardsigmoid", "Hardswish", "Softplus", "Softsign", "Tanhshrink", "Identity")
_POOLS = {f"{kind}{d}d": d + 2 for kind in ("MaxPool", "AvgPool", "AdaptiveAvgPool", "AdaptiveMaxPool") for d in (1, 2, 3)}
# Layers with parameters, buffers or random draws, each run by `StackedLayers` for K models at once.
_STACKED = ("Linear", "Conv1d", "Conv2d", "Conv3d", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "Dropout")
# Activations that never decrease (f(a) >= f(b) when a >= b): max-pooling commutes with them, max f(x) = f(max x),
# and so does the gradient (it reaches the same arg-max); run after the pooling they touch a fraction of the values.
_MONOTONE = ("ReLU", "ReLU6", "LeakyReLU", "ELU", "CELU", "SELU", "Tanh", "Sigmoid", "Hardtanh", "Hardsigmoid",
             "Softplus", "Softsign", "Identity")


def _pool_first(layers: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """`layers` with each never-decreasing activation directly followed by a max-pooling layer swapped with it: the
    same function and gradient, with the activation run on the pooled (smaller) values."""
    out = list(layers)
    for i in range(len(out) - 1):
        if type(out[i][1]).__name__ in _MONOTONE and type(out[i + 1][1]).__name__.startswith("MaxPool"):
            out[i], out[i + 1] = out[i + 1], out[i]
    return out


def sequential_layers(module, param_names: list[str]) -> "StackedLayers | None":
    """The layers of `module` when it is an `nn.Sequential` (nested ones included) of torch.nn layers that
    `StackedLayers` runs for K models at once (`_STACKED`, `_PER_RECORD`) and every parameter belongs to one of
    them, else None (e.g. a custom module, a BatchNorm with a cumulative average (`momentum=None`), a
    padding mode other than zeros, a pooling layer returning indices)."""
    import torch.nn as nn

    layers: list[tuple[str, Any]] = []

    def walk(seq, prefix: str) -> bool:
        for name, sub in seq.named_children():
            kind = type(sub)
            if kind is nn.Sequential:
                if not walk(sub, f"{prefix}{name}."):
                    return False
                continue
            if kind.__module__.split(".")[:2] != ["torch", "nn"] or getattr(nn, kind.__name__, None) is not kind:
                return False  # a subclass may compute anything: only torch's own layers are known
            if kind.__name__ not in _STACKED + _PER_RECORD or getattr(sub, "return_indices", False):
                return False
            if kind.__name__.startswith("Conv") and sub.padding_mode != "zeros":
                return False
            if kind.__name__.startswith("BatchNorm") and sub.momentum is None and sub.track_running_stats:
                return False
            # a dimension that is (or, unspecified, may be) the batch: models would mix (negative ones that reach it
            # change the output's shape, which the trainer's check against vmap catches)
            if kind.__name__ in ("Flatten", "Unflatten") and 0 in (getattr(sub, "start_dim", 1), getattr(sub, "dim", 1)):
                return False
            if kind.__name__ in ("Softmax", "LogSoftmax") and (sub.dim is None or sub.dim == 0):
                return False
            layers.append((f"{prefix}{name}", sub))
        return True

    if type(module) is not nn.Sequential or not walk(module, ""):
        return None
    own = [f"{path}.{n}" for path, sub in layers for n, _ in sub.named_parameters(recurse=False)]
    if sorted(own) != sorted(param_names) or not any(type(sub).__name__ in _STACKED[:4] for _, sub in layers):
        return None
    return StackedLayers(layers)


class StackedLayers:
    """The forward of K stacked copies of a Sequential of torch.nn layers, one layer at a time, each on every model's
    activations at once; the backward is autograd's through these operations. Activations are (K, n, ...).

    - Linear: one batched matrix product (`baddbmm`) over the stacked weights (K, out, in).
    - ConvNd: one grouped convolution: the K models' channels side by side (n, K*C, ...), their weights as K*groups
      groups (the grouped-convolution form of model ensembles; Krizhevsky et al. 2012 introduced groups).
    - BatchNormNd: `F.batch_norm` over (n, K*C, ...): each model's channels are normalised with their own batch
      mean and biased variance, and the running buffers (views of the stacked (K, C) tensors) are updated in place
      with the unbiased variance, exactly as each model's own BatchNorm would (Ioffe & Szegedy 2015).
    - Dropout: one Bernoulli(1 - p) mask over all K models' activations, scaled by 1 / (1 - p) (Srivastava et al.
      2014): every model gets independent draws, from `gen`.
    - parameter-free layers (`_PER_RECORD`): called on the K * n records as one batch.
    """

    def __init__(self, layers: list[tuple[str, Any]]):
        self.layers = _pool_first(layers)
        self.batch_statistics = any(type(sub).__name__.startswith("BatchNorm") for _, sub in layers)
        self.random = any(type(sub).__name__ == "Dropout" and sub.p > 0 for _, sub in layers)

    def forward(self, state: dict[str, Any], x, *, training: bool, gen=None):
        """Outputs (K, n, ...) of the K models whose tensors are `state` (name -> (K, ...)) on their own inputs
        x (K, n, ...). `training`: BatchNorm on batch statistics (running buffers in `state` updated in place) and
        Dropout drawing from `gen` (a torch.Generator; None: no Dropout, as in eval mode); else running statistics
        and no Dropout. Raises ValueError, as BatchNorm does, when a training batch has one value per channel."""
        import torch
        import torch.nn.functional as F

        # h is stored models first (K, n, ...), as batched matrix products give it, or records first (n, K, ...), as
        # grouped convolutions and BatchNorm give it (2-D convolutions in channels-last memory, where CPU kernels
        # for grouped convolution and pooling are several times faster); each layer takes the order it needs, a
        # view when it is the stored one. `grouped()`: the records-first form with the models' channels side by
        # side, (n, K*C, ...), model k's channels at k*C .. k*C+C-1.
        h, models_first = x, True
        k_models, n = x.shape[0], x.shape[1]

        def grouped():
            r = h.transpose(0, 1) if models_first else h
            return r.reshape(n, k_models * r.shape[2], *r.shape[3:])

        for path, sub in self.layers:
            kind = type(sub).__name__
            if kind == "Linear":
                w, b = state[f"{path}.weight"], state.get(f"{path}.bias") if sub.bias is not None else None
                if not models_first and h.dim() == 5 and grouped().is_contiguous(memory_format=torch.channels_last):
                    h = _channels_last_gradient(grouped()).reshape(h.shape)
                hk = h if models_first else h.transpose(0, 1)
                lead = hk.shape[2:-1]
                flat = hk.reshape(k_models, -1, hk.shape[-1])
                flat = torch.baddbmm(b.unsqueeze(1), flat, w.transpose(1, 2)) if b is not None else torch.bmm(flat, w.transpose(1, 2))
                h, models_first = flat.reshape(k_models, n, *lead, w.shape[1]), True
            elif kind.startswith("Conv") or kind.startswith("BatchNorm") or (kind in _POOLS and h.dim() - 1 == _POOLS[kind]):
                g = grouped()
                if kind.startswith("Conv"):
                    w = state[f"{path}.weight"].reshape(-1, *state[f"{path}.weight"].shape[2:])
                    b = state[f"{path}.bias"].reshape(-1) if sub.bias is not None else None
                    if kind == "Conv2d":
                        g, w = g.contiguous(memory_format=torch.channels_last), w.contiguous(memory_format=torch.channels_last)
                    conv = {"Conv1d": F.conv1d, "Conv2d": F.conv2d, "Conv3d": F.conv3d}[kind]
                    out = conv(g, w, b, sub.stride, sub.padding, sub.dilation, k_models * sub.groups)
                elif kind.startswith("BatchNorm"):
                    mean, var = (state[f"{path}.running_mean"].view(-1), state[f"{path}.running_var"].view(-1)) \
                        if sub.track_running_stats else (None, None)
                    weight, bias = ((state[f"{path}.weight"].reshape(-1), state[f"{path}.bias"].reshape(-1))
                                    if sub.affine else (None, None))
                    out = F.batch_norm(g, mean, var, weight, bias, training or not sub.track_running_stats,
                                       sub.momentum, sub.eps)
                    if training and sub.track_running_stats:
                        state[f"{path}.num_batches_tracked"].add_(1)
                else:  # pooling acts on each channel alone: the models' channels side by side pool as one batch
                    out = sub(g)
                h, models_first = out.reshape(n, k_models, -1, *out.shape[2:]), False
            elif kind == "Dropout":
                if training and gen is not None and sub.p > 0:
                    # drawn on the CPU from `gen` whatever the device, so every device draws the same masks
                    keep = torch.empty(h.shape, dtype=h.dtype).bernoulli_(1.0 - sub.p, generator=gen).to(h.device)
                    h = h * keep.div_(1.0 - sub.p) if sub.p < 1 else h * 0.0
            elif kind in _ELEMENTWISE:
                h = sub(h)
            else:  # per record: the K * n records as one batch, each with the rank of its own model's call
                if not models_first and h.dim() == 5:  # leaving channels-last memory: its gradient comes back in it
                    g = grouped()
                    if g.is_contiguous(memory_format=torch.channels_last):
                        h = _channels_last_gradient(g).reshape(h.shape)
                out = sub(h.reshape(h.shape[0] * h.shape[1], *h.shape[2:]))
                h = out.reshape(h.shape[0], h.shape[1], *out.shape[1:])
        return h if models_first else h.transpose(0, 1)


def _channels_last_gradient(x):
    """`x` (a 4-D tensor in channels-last memory), unchanged, whose gradient is passed back in channels-last memory:
    the layers before it (pooling, activations, convolutions) then run their backward without converting layouts."""
    import torch

    class ChannelsLastGradient(torch.autograd.Function):
        @staticmethod
        def forward(ctx, t):
            return t.view_as(t)

        @staticmethod
        def backward(ctx, grad):
            return grad.contiguous(memory_format=torch.channels_last)

    return ChannelsLastGradient.apply(x)
