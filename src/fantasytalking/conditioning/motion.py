"""Motion-intensity conditioning (FANTASYTALKING.md section 4).

Two scalars describe how much a clip moves: facial intensity (variance of the face-landmark
sequence) and body intensity (variance of the body-pose joint sequence), each brought to ``[0, 1]``
with dataset statistics. A small network (an MLP, one ResNet layer, average pooling) embeds them
and the result is ADDED to the timestep embedding; its last layer is zero-initialised, so a fresh
motion conditioner leaves the backbone unchanged. Inference default: 0.5 for both (0.1 / 0.5 / 1.0
were shown as subtle / natural / intense).

Motion gain (our addition, inference only): ``forward(..., gain=g)`` returns
``e(default) + g * (e(m) - e(default))``, which strengthens (g > 1) or weakens (g < 1) the effect of the
requested intensities while leaving the default's embedding as it is (docs/design.md).

Guidance and dropout (our choice; the paper does not guide on motion):

* ``guided=False`` (default): :meth:`null` keeps the motion condition, so every guidance pass
  sees the same motion, like the image condition.
* ``dropout_p`` (default 0): training probability of replacing the embedding by zero, the
  "unknown motion" input. With ``guided=True`` that zero embedding is also the null of guidance.

The normalisation statistics (``raw_low``, ``raw_high``: raw intensities that map to 0 and 1) are
buffers, so they are saved with the model's weights and :meth:`normalise` works at inference.

Request scale (ours; docs/design.md, "motion request scale"): the network is trained on LABELS, raw intensities
mapped linearly by p1 -> 0, p99 -> 1. Raw intensities are variances, heavy-tailed, so those labels crowd near 0
(on SynthTalk's training shards the median clip has label 0.11 and label 0.5 is its 95th percentile). A user's
REQUEST in ``[0, 1]`` is a quantile of the training clips' motion instead: 0.1 moves like the 10th-percentile
clip, 0.5 (the paper's "natural" default) like the median clip, 1.0 like the most intense. ``request_scale`` is
that map as a table, the labels at the requests ``k / K`` (fitted by :meth:`fit_request_scale`, or from a
``stats.json`` with ``quantiles``); :meth:`labels` interpolates it. Without a table a request is its label
(models trained before the table existed keep their behaviour). It is a config entry, not a weight: the same
trained network, read with another scale.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from fantasytalking.conditioning.base import Condition, Conditioner
from fantasytalking.errors import InputError, non_negative

#: Order of the two intensities everywhere (datasets, CLI, this module).
MOTION_NAMES = ("face", "body")


class ResidualLayer(nn.Module):
    """Pre-norm residual MLP block: ``x + W2 SiLU(W1 LN(x))``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.net = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(self.norm(x))


class MotionConditioner(Conditioner):
    """(face, body) intensities in ``[0, 1]`` -> ``(B, D)`` vector added to the timestep embedding.

    Args:
        embed_dim: width ``D`` of the backbone's timestep embedding (the model width, 5120 for 14B).
        hidden_dim: width of the embedding network.
        num_frequencies: Fourier features per intensity (``sin``/``cos`` of ``2^k * pi * x``).
        default: intensities used when none are given (0.5, 0.5).
        raw_low: dataset statistic, the raw intensities mapped to 0 by :meth:`normalise`.
        raw_high: dataset statistic, the raw intensities mapped to 1 by :meth:`normalise`.
        request_scale: ``(K + 1, 2)`` labels (face, body) at the requests ``k / K``, non-decreasing, in ``[0, 1]``
            (see the module docstring); None: a request is its label.
        guided: whether guidance switches the motion off (see the module docstring).
        dropout_p: training probability of the zero ("unknown motion") embedding.
    """

    kind = "time"
    name = "motion"

    def __init__(
        self,
        embed_dim: int,
        hidden_dim: int = 256,
        num_frequencies: int = 8,
        *,
        default: Sequence[float] = (0.5, 0.5),
        raw_low: Sequence[float] = (0.0, 0.0),
        raw_high: Sequence[float] = (1.0, 1.0),
        request_scale: Sequence[Sequence[float]] | None = None,
        guided: bool = False,
        dropout_p: float = 0.0,
    ) -> None:
        super().__init__(dropout_p=dropout_p, scale=1.0)
        self.guided = guided
        self.default = tuple(float(v) for v in default)
        self._check_range(torch.tensor([self.default]))
        self.num_frequencies = num_frequencies
        self.register_buffer("raw_low", torch.tensor(list(raw_low), dtype=torch.float32))  # (2,)
        self.register_buffer("raw_high", torch.tensor(list(raw_high), dtype=torch.float32))  # (2,)
        features = 2 * num_frequencies + 1
        self.mlp = nn.Sequential(nn.Linear(features, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, hidden_dim))
        self.kind_embedding = nn.Parameter(0.02 * torch.randn(len(MOTION_NAMES), hidden_dim))  # (2, H): face / body
        self.resnet = ResidualLayer(hidden_dim)
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(hidden_dim, embed_dim))
        nn.init.zeros_(self.out[1].weight)  # zero-init: a fresh conditioner adds exactly 0
        nn.init.zeros_(self.out[1].bias)
        self._config = {"embed_dim": embed_dim, "hidden_dim": hidden_dim, "num_frequencies": num_frequencies,
                        "default": list(self.default), "guided": guided, "dropout_p": dropout_p}  # fmt: skip
        self.request_scale: torch.Tensor | None = None  # (K + 1, 2) float64, or None
        if request_scale is not None:
            self.set_request_scale(request_scale)

    @property
    def embed_dim(self) -> int:
        return self.out[1].out_features

    def config(self) -> dict[str, Any]:
        """Constructor arguments (statistics excluded: they are buffers, saved with the weights; the request
        scale included when there is one)."""
        config = dict(self._config)
        if self.request_scale is not None:
            config["request_scale"] = self.request_scale.tolist()
        return config

    # ------------------------------------------------------------------ request scale

    def set_request_scale(self, table: Sequence[Sequence[float]] | torch.Tensor | None) -> None:
        """Set the request scale: ``(K + 1, 2)`` labels at the requests ``k / K`` (None: requests are labels)."""
        if table is None:
            self.request_scale = None
            return
        try:
            t = torch.as_tensor(table, dtype=torch.float64)
        except (TypeError, ValueError) as err:
            raise InputError(f"the motion request scale must be a (K + 1, 2) table of numbers ({err}).") from None
        if t.ndim != 2 or t.shape[1] != 2 or t.shape[0] < 2:
            raise InputError(f"the motion request scale must be (K + 1 >= 2, 2) labels (face, body), got "
                             f"{tuple(t.shape)}.")  # fmt: skip
        if not bool(torch.isfinite(t).all()) or not bool(((t >= 0) & (t <= 1)).all()):
            raise InputError("the motion request scale's labels must be finite and in [0, 1].")
        if bool((t[1:] < t[:-1]).any()):
            raise InputError("the motion request scale must be non-decreasing (a larger request, at least as much "
                             "motion); refit it from the dataset's stats.json.")  # fmt: skip
        self.request_scale = t

    def fit_request_scale(self, quantiles: Sequence[Sequence[float]] | torch.Tensor) -> None:
        """Set the request scale from the training data's raw intensity quantiles ``(K + 1, 2)`` at the levels
        ``k / K`` (``stats.json``'s ``quantiles``), normalised with the current statistics."""
        raw = torch.as_tensor(quantiles, dtype=torch.float64)
        if raw.ndim != 2 or raw.shape[1] != 2 or raw.shape[0] < 2 or not bool(torch.isfinite(raw).all()):
            raise InputError(f"raw motion quantiles must be finite (K + 1 >= 2, 2) values, got {tuple(raw.shape)}.")
        labels = self.normalise(raw).double()  # (K + 1, 2)
        self.set_request_scale(torch.cummax(labels, dim=0).values)  # quantiles are sorted; cummax guards rounding

    def labels(self, requests: torch.Tensor) -> torch.Tensor:
        """Requests ``(B, 2)`` in ``[0, 1]`` -> the network's labels ``(B, 2)`` (piecewise linear in the request
        scale; the requests themselves without one)."""
        self._check_range(requests)
        if self.request_scale is None:
            return requests
        table = self.request_scale.to(requests.device)  # (K + 1, 2)
        steps = table.shape[0] - 1
        x = requests.double() * steps  # (B, 2) in [0, K]
        lower = x.floor().clamp(max=steps - 1).long()  # (B, 2)
        frac = x - lower
        cols = torch.arange(2, device=requests.device).expand_as(lower)
        low, high = table[lower, cols], table[lower + 1, cols]  # (B, 2)
        return (low + frac * (high - low)).to(requests.dtype)

    # ------------------------------------------------------------------ statistics

    def set_statistics(self, raw_low: Sequence[float] | torch.Tensor, raw_high: Sequence[float] | torch.Tensor) -> None:
        """Set the raw intensities that map to 0 and 1 (``(2,)`` each: face, body)."""
        low = torch.as_tensor(raw_low, dtype=torch.float32).reshape(-1)
        high = torch.as_tensor(raw_high, dtype=torch.float32).reshape(-1)
        if low.numel() != 2 or high.numel() != 2 or not bool(torch.isfinite(torch.cat([low, high])).all()):
            raise InputError(f"motion statistics need finite (face, body) values, got {low.tolist()} / {high.tolist()}.")
        self.raw_low.copy_(low)
        self.raw_high.copy_(high)

    def set_statistics_from(self, stats: Mapping[str, Any], low: str = "p1", high: str = "p99") -> None:
        """Set the statistics from a dataset's ``stats.json`` (``{"face": {"p1", "p99", ...}, "body": {...}}``),
        and the request scale from its ``quantiles`` when both face and body have them (``stats.json`` written
        since 2026-12-06; an older one leaves the scale as it is)."""
        try:
            values = [[float(stats[name][key]) for name in MOTION_NAMES] for key in (low, high)]
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(f"motion statistics lack face/body {low}/{high} ({err}); rerun preprocessing.") from None
        self.set_statistics(*values)
        table = quantile_table(stats)
        if table is not None:
            self.fit_request_scale(table)

    def fit_statistics(self, raw: torch.Tensor, quantiles: tuple[float, float] = (0.01, 0.99)) -> None:
        """Fit the statistics to raw intensities ``(N, 2)`` of a dataset (robust quantiles)."""
        raw = torch.as_tensor(raw, dtype=torch.float64)
        if raw.ndim != 2 or raw.shape[1] != 2 or raw.shape[0] < 2:
            raise InputError(f"raw motion intensities must be (N >= 2, 2), got {tuple(raw.shape)}.")
        low = torch.quantile(raw, quantiles[0], dim=0)
        high = torch.quantile(raw, quantiles[1], dim=0)
        self.set_statistics(low.float(), torch.maximum(high, low + 1e-6).float())

    def normalise(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw intensities ``(B, 2)`` -> ``clip((raw - low) / (high - low), 0, 1)`` with the saved statistics
        (as the datasets normalise them; a degenerate range maps to 0.5)."""
        low, high = self.raw_low.to(raw.device).float(), self.raw_high.to(raw.device).float()
        span = high - low
        value = ((raw.float() - low) / torch.where(span > 0, span, torch.ones_like(span))).clamp(0.0, 1.0)
        return torch.where(span > 0, value, torch.full_like(value, 0.5))

    # ------------------------------------------------------------------ conditioning

    @staticmethod
    def _check_range(values: torch.Tensor) -> None:
        if values.ndim != 2 or values.shape[1] != 2:
            raise InputError(f"motion intensities must be (batch, 2) = (face, body), got {tuple(values.shape)}.")
        if not bool(((values >= 0) & (values <= 1)).all()):
            raise InputError("motion intensities must be in [0, 1] (0.1 subtle, 0.5 natural, 1.0 intense).")

    def embed_features(self, intensities: torch.Tensor) -> torch.Tensor:
        """Fourier features ``(B, 2) -> (B, 2, 2K + 1)``."""
        freqs = (2.0 ** torch.arange(self.num_frequencies, device=intensities.device)) * math.pi  # (K,)
        angles = intensities[..., None] * freqs  # (B, 2, K)
        return torch.cat([intensities[..., None], angles.sin(), angles.cos()], dim=-1)

    def _embed(self, intensities: torch.Tensor) -> torch.Tensor:
        """Normalised intensities ``(B, 2)`` -> the embedding ``(B, D)``."""
        x = self.embed_features(intensities)  # (B, 2, 2K+1)
        h = self.mlp(x) + self.kind_embedding  # (B, 2, H)
        h = self.resnet(h).mean(dim=1)  # ResNet layer, then average pooling over (face, body): (B, H)
        return self.out(h)  # (B, D)

    def default_labels(self) -> torch.Tensor:
        """The labels ``(1, 2)`` of the default request (the default itself without a request scale)."""
        return self.labels(torch.tensor([self.default], dtype=torch.float32))

    def forward(self, intensities: torch.Tensor | None = None, batch_size: int = 1, gain: float = 1.0) -> Condition:
        """Embed intensities.

        Args:
            intensities: ``(B, 2)`` (face, body) LABELS in ``[0, 1]`` (a dataset's normalised intensities;
                for a user's requests pass :meth:`labels` of them); None uses the labels of :attr:`default` for
                ``batch_size`` samples.
            gain: inference-time motion gain (our addition; the paper has none): the embedding is pushed
                away from the default request's embedding, ``e(default) + gain * (e(m) - e(default))``.
                1 is the trained embedding (training always uses 1); 0 ignores the request; at the default
                intensities every gain gives the same embedding. See docs/design.md (motion gain).

        Returns:
            ``time_embedding`` ``(B, D)``.
        """
        gain = non_negative(gain, "motion gain", "1: as trained")
        weight = self.mlp[0].weight
        if intensities is None:
            intensities = self.default_labels().to(weight.device).expand(batch_size, 2)
        self._check_range(intensities)
        intensities = intensities.to(device=weight.device, dtype=weight.dtype)
        embedding = self._embed(intensities)  # (B, D)
        if gain != 1.0:
            default = self.default_labels().to(device=weight.device, dtype=weight.dtype).expand_as(intensities)
            centre = self._embed(default)  # (B, D)
            embedding = centre + gain * (embedding - centre)
        return Condition(time_embedding=embedding)

    def null(self, condition: Condition) -> Condition:
        """Unguided (default): the motion stays; guided: the zero embedding."""
        if not self.guided:
            return condition
        return super().null(condition)

    def drop(self, condition: Condition, generator: torch.Generator | None = None) -> Condition:
        """Per sample, the zero ("unknown motion") embedding with ``dropout_p``; a no-op at 0."""
        if self.dropout_p <= 0:
            return condition
        batch = condition.time_embedding.shape[0]
        keep = (torch.rand(batch, generator=generator) >= self.dropout_p).to(condition.time_embedding)  # (B,)
        return replace(condition, time_embedding=condition.time_embedding * keep[:, None])


def quantile_table(stats: Mapping[str, Any]) -> torch.Tensor | None:
    """The raw intensity quantiles ``(K + 1, 2)`` (face, body) of a ``stats.json``, or ``None`` when it has none
    (written before 2026-12-06). A table for one of face/body only, tables of unequal lengths or non-numeric
    entries are an :class:`InputError`: the file is damaged or half-written."""
    if not isinstance(stats, Mapping):
        raise InputError(f"motion statistics must be a stats.json object, not {type(stats).__name__}; give the "
                         "shards' stats.json.")  # fmt: skip
    tables = [stats[name].get("quantiles") if isinstance(stats.get(name), Mapping) else None for name in MOTION_NAMES]
    if all(t is None for t in tables):
        return None
    if any(t is None for t in tables):
        missing = MOTION_NAMES[[t is None for t in tables].index(True)]
        raise InputError(f"stats.json has motion quantiles for one of face/body only (none for {missing}); rerun "
                         "preprocessing to rewrite it.")  # fmt: skip
    try:
        columns = [[float(v) for v in t] for t in tables]
    except (TypeError, ValueError) as err:
        raise InputError(f"stats.json's motion quantiles are not lists of numbers ({err}); rerun preprocessing.") from None
    if len(columns[0]) != len(columns[1]):
        raise InputError(f"stats.json has face and body quantile tables of different lengths ({len(columns[0])} and "
                         f"{len(columns[1])}); rerun preprocessing.")  # fmt: skip
    return torch.tensor(columns, dtype=torch.float64).T  # (K + 1, 2)
