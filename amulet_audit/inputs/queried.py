"""A model the audit can only query: per-class scores (or labels) for inputs, nothing else.

ONNX models run with onnxruntime (`inputs.onnx_model`) and models behind a prediction service (`inputs.endpoint`)
offer no gradients the audit can trust (onnxruntime computes none; a service sends none) and no architecture to
re-initialise and train, so attacks that need gradients or trained copies (reference, shadow, poisoned, surrogate
or defended copies) are not applicable to them, and say which gradient-free attack runs instead
(`core.attack.Attack.with_alternative`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from amulet_audit.inputs.model import ModelHandle


@dataclass
class QueriedModelHandle(ModelHandle):
    """A ModelHandle whose `module` is a torch.nn.Module that forwards inputs to something the audit can only query
    (an onnxruntime session, an HTTP service). What it offers is its format's row of the capability table
    (`core.component.MODEL_KINDS`, through `kind`): scores and labels, labels only when the model's output
    convention is "labels"; never gradients or trained copies. `n_parameters`: the weights the model holds, where
    known (0 otherwise), for the results only."""

    n_parameters: int = 0

    @property
    def kind(self) -> str:
        """The row of the capability table (`core.component.MODEL_KINDS`): "onnx" or "endpoint", the format."""
        return self.format

    @property
    def parameters(self) -> int:
        return self.n_parameters

    @property
    def trainable(self) -> bool:
        return False

    def architecture_digest(self) -> str:
        """The format, the model's digest and its output convention (there is no architecture apart from the
        weights to name)."""
        return hashlib.sha256(f"{self.format}|{self.sha256}|output={self.output}".encode()).hexdigest()

    def fresh_copy(self, seed: int):
        """Never: a queried model offers no trainable copies (its capability row says so before any attack asks).

        Raises RuntimeError, as a call here is a bug in the caller (it did not check the capabilities)."""
        raise RuntimeError(f"{self.format} model {self.path}: offers no trainable copies; check "
                           "model_capabilities before asking for one")

    def functional_copy(self, seed: int, example):
        """None: no functional copy of a queried model exists."""
        return None
