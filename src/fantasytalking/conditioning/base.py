"""Conditioners and the :class:`ConditioningStack`.

A conditioner turns raw inputs (speech features, a face crop, motion intensities) into what the
backbone consumes, and knows its own null input for classifier-free guidance and its own dropout
for training. There are two kinds of output (see :class:`Condition`):

* ``tokens`` for a cross-attention branch of the same name in every block (audio, identity);
* ``time_embedding``, a ``(B, D)`` vector added to the timestep embedding (motion intensity).

A stack with only the audio conditioner is exactly the public FantasyTalking release; adding
face and motion conditioners gives the paper's full model, without touching the backbone.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch
from torch import nn

from fantasytalking.models.attention import BranchInput


@dataclass
class Condition:
    """One conditioner's output for one forward pass.

    Attributes:
        tokens: ``(B, S, C)`` (clip level) or ``(B, F, W, C)`` (frame level) tokens for the branch, or None.
        key_lengths: valid keys (see :class:`~fantasytalking.models.BranchInput`), or None.
        time_embedding: ``(B, D)`` vector added to the timestep embedding, or None.
        scale: branch weight; 0 switches the branch off (the null condition of guidance); a ``(B,)``
            tensor keeps or drops per sample (training dropout).
    """

    tokens: torch.Tensor | None = None
    key_lengths: torch.Tensor | None = None
    time_embedding: torch.Tensor | None = None
    scale: float | torch.Tensor = 1.0

    def with_scale(self, scale: float | torch.Tensor) -> Condition:
        return replace(self, scale=scale)


class Conditioner(nn.Module):
    """Base class of a conditioner; subclasses implement :meth:`forward` and may override :meth:`null`.

    Class attributes:
        kind: ``"tokens"`` (a cross-attention branch named :attr:`name`) or ``"time"``.
        name: the branch / condition name (``"audio"``, ``"face"``, ``"motion"``).
    """

    kind: ClassVar[str] = "tokens"
    name: ClassVar[str] = ""

    def __init__(self, *, dropout_p: float = 0.1, scale: float = 1.0) -> None:
        super().__init__()
        self.dropout_p = dropout_p  # training: probability of the null condition per sample
        self.scale = scale  # branch weight at inference (audio 1.0, identity 0.5)

    @property
    def token_dim(self) -> int:
        """Width ``C`` of the tokens this conditioner gives its branch (kind ``tokens``)."""
        raise AttributeError(f"{type(self).__name__} gives no tokens")

    def null(self, condition: Condition) -> Condition:
        """The unconditional input for guidance: the branch switched off (scale 0)."""
        if condition.time_embedding is not None:
            return replace(condition, time_embedding=torch.zeros_like(condition.time_embedding))
        return condition.with_scale(0.0)

    def drop(self, condition: Condition, generator: torch.Generator | None = None) -> Condition:
        """Training dropout: each sample's condition is replaced by the null one with ``dropout_p``."""
        batch = _batch_size(condition)
        device = condition.tokens.device if condition.tokens is not None else condition.time_embedding.device
        keep = (torch.rand(batch, generator=generator) >= self.dropout_p).to(device)  # (B,)
        if condition.time_embedding is not None:
            return replace(condition, time_embedding=condition.time_embedding * keep[:, None].to(condition.time_embedding.dtype))
        scale = condition.scale if isinstance(condition.scale, torch.Tensor) else torch.full((batch,), float(condition.scale), device=device)
        return condition.with_scale(scale * keep.to(scale.dtype))


def _batch_size(condition: Condition) -> int:
    source = condition.tokens if condition.tokens is not None else condition.time_embedding
    if source is None:
        raise ValueError("an empty Condition has no batch")
    return source.shape[0]


class ConditioningStack(nn.Module):
    """An ordered set of conditioners, by name; the glue between raw inputs and the backbone.

    Example:
        >>> stack = ConditioningStack([AudioConditioner(audio_in_dim=768, proj_dim=2048)])
        >>> conditions = stack({"audio": {"features": feats, "num_frames": 81}})
        >>> branches, time_emb = stack.to_backbone(conditions)
    """

    def __init__(self, conditioners: list[Conditioner] | None = None) -> None:
        super().__init__()
        self.conditioners = nn.ModuleDict()
        for conditioner in conditioners or []:
            self.add(conditioner)

    def add(self, conditioner: Conditioner) -> None:
        if not conditioner.name:
            raise ValueError(f"{type(conditioner).__name__} has no name")
        if conditioner.name in self.conditioners:
            raise ValueError(f"a {conditioner.name!r} conditioner is in the stack already")
        self.conditioners[conditioner.name] = conditioner

    def __getitem__(self, name: str) -> Conditioner:
        return self.conditioners[name]

    def __contains__(self, name: object) -> bool:
        return name in self.conditioners

    def __iter__(self) -> Iterator[Conditioner]:
        return iter(self.conditioners.values())

    def __len__(self) -> int:
        return len(self.conditioners)

    @property
    def device(self) -> torch.device:
        """Device of the trainable parameters (the frozen speech encoder may sit elsewhere)."""
        return next(self.parameters(), torch.empty(0)).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters(), torch.empty(0)).dtype

    @property
    def names(self) -> list[str]:
        return list(self.conditioners.keys())

    def forward(self, inputs: Mapping[str, Mapping[str, Any]]) -> dict[str, Condition]:
        """Encode raw inputs: ``{name: kwargs of that conditioner's forward}`` -> ``{name: Condition}``."""
        unknown = set(inputs) - set(self.conditioners)
        if unknown:
            raise KeyError(f"no conditioner named {sorted(unknown)} in the stack {self.names}")
        return {name: self.conditioners[name](**kwargs) for name, kwargs in inputs.items()}

    def null(self, conditions: Mapping[str, Condition], names: list[str] | None = None) -> dict[str, Condition]:
        """Replace the conditions in ``names`` (default: all) by their null inputs."""
        names = list(conditions) if names is None else names
        return {k: self.conditioners[k].null(c) if k in names else c for k, c in conditions.items()}

    def drop(self, conditions: Mapping[str, Condition], generator: torch.Generator | None = None) -> dict[str, Condition]:
        """Training dropout of every condition, each with its conditioner's ``dropout_p``."""
        return {k: self.conditioners[k].drop(c, generator) for k, c in conditions.items()}

    def to_backbone(
        self, conditions: Mapping[str, Condition]
    ) -> tuple[dict[str, BranchInput], torch.Tensor | None]:
        """Token branches and the summed time embedding, as :class:`FantasyTalkingTransformer` takes them."""
        branches: dict[str, BranchInput] = {}
        time_embedding = None
        for name, condition in conditions.items():
            if condition.tokens is not None:
                branches[name] = BranchInput(condition.tokens, condition.key_lengths, condition.scale)
            if condition.time_embedding is not None:
                time_embedding = condition.time_embedding if time_embedding is None else time_embedding + condition.time_embedding
        return branches, time_embedding
