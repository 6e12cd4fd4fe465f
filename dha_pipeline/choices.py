"""Every fixed list of choices of a setting or a flag, each written once as a `Literal` type.

The recipe's fields (recipe.py), the CLI's options (cli/main.py, which imports only this light module)
and the code that branches on a choice all read these; `settings.choices_of` gives a type's values.
Choices known only at run time (the registered search spaces, the writable model formats) come from
their registries.
"""

from __future__ import annotations

from typing import Literal, get_args

Split = Literal["train", "val", "test"]
Component = Literal["nas", "da", "hpo"]
Mode = Literal["manual", "joint", "sequential"]
Estimator = Literal["next_batch", "held_in"]
AugmentForm = Literal["learned_fraction", "paper"]
PolicyStart = Literal["pairs", "trivial_wide"]
PolicySignal = Literal["adversarial", "val"]
FractionData = Literal["val", "train"]
Storage = Literal["auto", "memory", "files"]
Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["fp32", "bf16"]
Switch = Literal["auto", "on", "off"]
ClassWeights = Literal["none", "balanced"]
CompileMode = Literal["off", "default", "reduce-overhead", "max-autotune"]
Channels = Literal["auto", "1", "3"]
ArchInit = Literal["random", "known"]
OpAffine = Literal["at_freeze", "always"]
TargetMetric = Literal["none", "params", "macs", "latency"]

SPLITS: tuple[Split, ...] = get_args(Split)
"""The three splits, in order."""
