"""LoRA adapters on the Wan backbone (peft), with plain names for export.

peft wraps each target linear (``blocks.N.attn1.to_q`` ...) and names the adapter weights
``<module>.lora_A.default.weight`` / ``lora_B``; the original weight becomes
``<module>.base_layer.weight``. :func:`lora_state_dict` gives the adapters without the adapter
name (``<module>.lora_A.weight``), the form written by the exporter.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from peft import LoraConfig, inject_adapter_in_model
from torch import nn

from fantasytalking.errors import InputError

ADAPTER = "default"
_LORA_KEY = re.compile(r"^(.*)\.(lora_[AB])\." + ADAPTER + r"\.weight$")


def inject_lora(
    backbone: nn.Module, *, rank: int, alpha: float, dropout: float = 0.0, targets: Sequence[str]
) -> dict[str, Any]:
    """Add LoRA adapters (``B`` zero-initialised: the output is unchanged) to ``backbone``'s target linears.

    Targets are module-name suffixes (``to_q``, ``ffn.net.2``, ...). The attention processors' own
    projections (audio / identity branches) are never targeted. Returns the adapter config as a dict.
    """
    if rank < 1:
        raise InputError(f"LoRA rank must be >= 1, got {rank}.")
    names = [name for name, module in backbone.named_modules() if isinstance(module, nn.Linear)]
    matched = [n for n in names if ".processor." not in n and any(n == t or n.endswith("." + t) for t in targets)]
    if not matched:
        raise InputError(f"no linear layer of the backbone matches the LoRA targets {list(targets)}; "
                         "use names such as to_q, to_k, to_v, to_out.0, ffn.net.0.proj, ffn.net.2.")  # fmt: skip
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=matched, bias="none")
    inject_adapter_in_model(config, backbone, adapter_name=ADAPTER)
    return {"rank": rank, "alpha": alpha, "dropout": dropout, "targets": list(targets)}


def lora_state_dict(backbone_state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Adapter tensors of a (backbone) state dict, named ``<module>.lora_A.weight`` / ``lora_B``."""
    out = {}
    for key, value in backbone_state.items():
        match = _LORA_KEY.match(key)
        if match:
            out[f"{match[1]}.{match[2]}.weight"] = value
    return out


def lora_module_key(plain: str) -> str:
    """``<module>.lora_A.weight`` -> peft's ``<module>.lora_A.default.weight``."""
    head, kind, _ = plain.rsplit(".", 2)
    return f"{head}.{kind}.{ADAPTER}.weight"


def has_lora(backbone: nn.Module) -> bool:
    return any(".lora_A." in name for name, _ in backbone.named_parameters())
