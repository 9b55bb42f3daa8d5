"""TRL's fused LM head, scoring only the positions that have a label on a CPU too.

TRL (1.16) patches the model's forward so that a training forward returns per-token
log-probabilities without building the ``(batch, length, vocabulary)`` logits
(`trl.trainer.utils.add_fused_lm_head`; SFTTrainer and GRPOTrainer both use it). On a device
with Triton it projects only the positions whose next token has a label; elsewhere it projects
every position and masks the result afterwards, "so that the tile shapes do not change from
batch to batch" (a recompilation concern of compiled backends such as Neuron). On a CPU that
means the LM head, its log-softmax, entropy and top-1 over SmolLM2's 49,152-token vocabulary,
forward and backward, for every prompt token, although the loss only ever reads the completion's:
an sft example of the experiment has ~900 prompt tokens and ~100 target tokens, a GRPO
completion ~120 tokens after a ~900-token prompt.

`score_label_positions_only` makes the fused head take its label-positions path on a CPU as
well. The scored positions, their values and the gradients are those of the original path: on
two index-prompt sft examples (2 × 855 tokens, 286 with a label) the loss and every LoRA
gradient came out bit for bit the same, and the forward + backward took 8.96 s instead of
15.48 s (`benchmarks/bench_lm_head.py`). It changes one module attribute that TRL looks up at
call time; `tests/test_speed_options.py` checks that the pinned TRL still has it and that both
paths agree.
"""

from __future__ import annotations

from typing import Any

_PATCHED = "_rerec_label_positions_on_cpu"


def score_label_positions_only() -> bool:
    """Patch TRL's choice of the label-positions path to include CPUs (idempotent). False when
    this TRL has no such choice (another version: nothing is changed)."""
    try:
        import trl.trainer.utils as trl_utils
    except ImportError:  # pragma: no cover - TRL is a dependency
        return False
    original: Any = getattr(trl_utils, "_use_triton", None)
    if original is None:
        return False
    if getattr(original, _PATCHED, False):
        return True

    def label_positions_only(device: Any) -> bool:
        return device.type == "cpu" or bool(original(device))

    setattr(label_positions_only, _PATCHED, True)
    label_positions_only.original = original  # type: ignore[attr-defined]
    trl_utils._use_triton = label_positions_only
    return True
