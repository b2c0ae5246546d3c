"""Identity conditioning: the paper's facial-focused cross-attention (FANTASYTALKING.md section 4).

The reference face goes through a face-recognition encoder (:mod:`fantasytalking.face`: dlib's 128-d
embedding offline, or an ArcFace network from a user-supplied file), then a Q-Former (learned queries
attending to the face features) that gives ``Q`` identity tokens. Every Wan block attends to them
through its own zero-initialised ``face`` branch, added with weight ``l2 = 0.5``:

    Z' = Z + l1 * Attn(Q, K_audio, V_audio) + l2 * Attn(Q, K_id, V_id)

The branch is added to the backbone with ``transformer.add_token_branch("face", conditioner.token_dim)``;
its key/value projections start at zero, so a fresh face conditioner leaves Wan's output unchanged.

Null input and guidance (our choice; the paper does not guide on identity): training dropout switches
the branch off (scale 0) for a sample with ``dropout_p``. At inference the identity comes from the
reference image, which stays in every guidance pass, so by default (``guided=False``) :meth:`null`
keeps the identity too; with ``guided=True`` the null is the branch off, for separate identity guidance.

The conditioner records which encoder its features come from (``encoder_spec``, as understood by
:func:`fantasytalking.face.make_face_encoder`: ``"dlib"`` or ``"arcface:PATH"``), so inference can
embed a new reference face the same way (:meth:`FaceConditioner.embed`). In training the features
come with the data (``face_embedding`` in the shards).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from fantasytalking.conditioning.base import Condition, Conditioner
from fantasytalking.errors import InputError


class QFormerLayer(nn.Module):
    """One Q-Former layer: queries attend to ``[features, queries]`` (Perceiver-resampler style, so the
    queries also see each other), then a feed-forward network; pre-norm, residual."""

    def __init__(self, dim: int, num_heads: int, ff_mult: int = 4) -> None:
        super().__init__()
        self.norm_queries = nn.LayerNorm(dim)
        self.norm_features = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, ff_mult * dim), nn.GELU(), nn.Linear(ff_mult * dim, dim))

    def forward(self, queries: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        q = self.norm_queries(queries)  # (B, Q, C)
        kv = torch.cat([self.norm_features(features), q], dim=1)  # (B, S_f + Q, C)
        queries = queries + self.attn(q, kv, kv, need_weights=False)[0]  # (B, Q, C)
        return queries + self.ff(self.norm_ff(queries))  # (B, Q, C)


class FaceConditioner(Conditioner):
    """Identity tokens for the ``face`` cross-attention branch.

    Args:
        face_dim: width ``E`` of the face features (128 for dlib, 512 for ArcFace).
        dim: width ``C`` of the identity tokens (and of the Q-Former).
        num_queries: number ``Q`` of identity tokens.
        num_layers: Q-Former layers.
        num_heads: Q-Former attention heads.
        ff_mult: Q-Former feed-forward width as a multiple of ``dim``.
        feature_tokens: keys ``T`` the Q-Former reads per face feature vector (``input_proj`` gives ``T * C``).
            With 1 (the default) a single dlib/ArcFace vector is one key beside the ``Q`` queries the queries also
            attend to, and on the demo the tokens came out nearly the same for every face (docs/design.md).
        encoder_spec: the face encoder the features come from (``"dlib"`` or ``"arcface:PATH"``).
        encoder: a ready face encoder (``encode(image, landmarks) -> (E,)``, see :mod:`fantasytalking.face`);
            default: built from ``encoder_spec`` when :meth:`embed` is first called. Not part of the weights.
        dropout_p: training probability of dropping the identity (branch off for that sample).
        scale: branch weight ``l2`` (0.5 in the paper).
        guided: whether guidance's null input switches the identity off (default: it stays, like the image).
    """

    kind = "tokens"
    name = "face"

    def __init__(
        self,
        face_dim: int = 128,
        dim: int = 1024,
        num_queries: int = 16,
        num_layers: int = 4,
        num_heads: int = 16,
        ff_mult: int = 4,
        *,
        feature_tokens: int = 1,
        encoder_spec: str = "dlib",
        encoder: Any | None = None,
        dropout_p: float = 0.1,
        scale: float = 0.5,
        guided: bool = False,
    ) -> None:
        super().__init__(dropout_p=dropout_p, scale=scale)
        self.guided = guided
        if dim % num_heads:
            raise ValueError(f"dim={dim} does not split into {num_heads} heads")
        self.face_dim = face_dim
        self.num_queries = num_queries
        self.encoder_spec = encoder_spec
        if feature_tokens < 1:
            raise ValueError(f"feature_tokens must be at least 1, got {feature_tokens}")
        self.dim = dim
        self.feature_tokens = feature_tokens
        self.input_proj = nn.Linear(face_dim, feature_tokens * dim)  # (B, S_f, E) -> (B, S_f, T * C)
        self.queries = nn.Parameter(torch.randn(num_queries, dim) * dim**-0.5)  # (Q, C)
        self.layers = nn.ModuleList([QFormerLayer(dim, num_heads, ff_mult) for _ in range(num_layers)])
        self.out_norm = nn.LayerNorm(dim)
        self._config = {"face_dim": face_dim, "dim": dim, "num_queries": num_queries, "num_layers": num_layers,
                        "num_heads": num_heads, "ff_mult": ff_mult, "encoder_spec": encoder_spec,
                        "dropout_p": dropout_p, "scale": scale, "guided": guided}  # fmt: skip
        if feature_tokens != 1:  # absent from the configs of weights trained before the option existed
            self._config["feature_tokens"] = feature_tokens
        object.__setattr__(self, "_encoder", encoder)  # a tool, not a submodule: never in the state dict

    @property
    def token_dim(self) -> int:
        return self.dim

    def config(self) -> dict[str, Any]:
        """Constructor arguments (without the encoder object): enough to rebuild it for its weights."""
        return dict(self._config)

    @property
    def encoder(self) -> Any:
        """The face encoder (built from :attr:`encoder_spec` on first use)."""
        if self._encoder is None:
            from fantasytalking.face import make_face_encoder

            object.__setattr__(self, "_encoder", make_face_encoder(self.encoder_spec))
        return self._encoder

    @torch.no_grad()
    def standardize_input(self, mean: torch.Tensor, std: torch.Tensor, eps: float = 1e-6) -> None:
        """Fold feature statistics ``(E,)`` into ``input_proj``, so that it reads ``(x - mean) / std`` through its
        present weights: for a FRESH conditioner, before training, on the training features' statistics. Face
        descriptors share a large common part (dlib's on SynthTalk: norm 1.3, 0.3 between faces), which raw they
        pass on to every token alike. The weights keep their shapes and names; nothing new is stored."""
        weight = self.input_proj.weight
        mean = mean.to(device=weight.device, dtype=torch.float32).reshape(-1)
        std = std.to(device=weight.device, dtype=torch.float32).reshape(-1)
        if mean.numel() != self.face_dim or std.numel() != self.face_dim:
            raise InputError(f"feature statistics of {mean.numel()} / {std.numel()} values do not fit {self.face_dim}-d "
                             "face features; compute them from the features this conditioner is trained on.")  # fmt: skip
        scaled = weight.float() / std.clamp_min(eps)[None]  # (T * C, E)
        self.input_proj.bias.sub_((scaled @ mean).to(weight.dtype))
        weight.copy_(scaled.to(weight.dtype))

    def embed(self, image: np.ndarray, landmarks: np.ndarray) -> torch.Tensor:
        """Face features of one image: ``uint8 (H, W, 3)`` RGB and its ``(68, 2)`` landmarks -> ``(1, E)``."""
        features = torch.from_numpy(np.asarray(self.encoder.encode(image, landmarks), dtype=np.float32))
        return features.reshape(1, -1)

    def null(self, condition: Condition) -> Condition:
        """Unguided (default): the identity stays in every pass; guided: the branch off."""
        return super().null(condition) if self.guided else condition

    def forward(self, features: torch.Tensor, scale: float | None = None) -> Condition:
        """Identity tokens from face-recognition features.

        Args:
            features: ``(B, E)`` or ``(B, S_f, E)`` face features (the shards' ``face_embedding``, or :meth:`embed`).
            scale: branch weight (default: :attr:`scale`).

        Returns:
            tokens ``(B, Q, C)``, every key valid.
        """
        if features.ndim == 2:
            features = features[:, None]  # (B, 1, E)
        if features.ndim != 3 or features.shape[-1] != self.face_dim:
            raise InputError(
                f"face features of shape {tuple(features.shape)} do not fit a face conditioner for {self.face_dim}-d "
                f"features; use the face encoder it was trained with ({self.encoder_spec})."
            )
        weight = self.input_proj.weight
        features = self.input_proj(features.to(device=weight.device, dtype=weight.dtype))  # (B, S_f, T * C)
        features = features.reshape(features.shape[0], -1, self.dim)  # (B, S_f * T, C): T keys per face feature
        queries = self.queries[None].expand(features.shape[0], -1, -1)  # (B, Q, C)
        for layer in self.layers:
            queries = layer(queries, features)  # (B, Q, C)
        tokens = self.out_norm(queries)  # (B, Q, C)
        return Condition(tokens=tokens, scale=self.scale if scale is None else scale)
