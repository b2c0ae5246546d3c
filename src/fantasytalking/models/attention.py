"""The cross-attention of FantasyTalking: Wan's text + image attention plus token branches.

Every Wan block's cross-attention (``attn2``) gets a :class:`FantasyTalkingAttnProcessor`. It keeps
Wan's computation bit for bit (shared normalised query, text attention, image attention) and adds
one attention per *token branch*: the audio branch of the release (``k_proj``/``v_proj``, zero
initialised, no bias, no key norm) and, from the paper, further branches such as identity tokens.
All branches share the block's query and output projection (FANTASYTALKING.md section 3.3):

    out = to_out(text_attn + image_attn + sum_b scale_b * attn(q, k_b(tokens_b), v_b(tokens_b)))

Per-call inputs (tokens, key lengths, scales) reach the processors through a shared
:class:`BranchContext` that :class:`~fantasytalking.models.FantasyTalkingTransformer` fills
before each forward: diffusers' blocks pass processors no extra arguments.

Masks: a frame-level window has padded zero keys at its end; they are masked by key length.
Backends that cannot take a mask (flash-attn, sage, ...) are used for text and image attention
as selected, and the branch attention falls back to PyTorch SDPA (``native``), which can.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from diffusers.models.attention_dispatch import _AttentionBackendRegistry, dispatch_attention_fn
from diffusers.models.transformers.transformer_wan import _get_added_kv_projections, _get_qkv_projections
from torch import nn

# diffusers backends that accept a key-padding attention mask in dense (B, S, H, D) layout.
MASK_CAPABLE_BACKENDS = frozenset({"native", "_native_math", "_native_efficient", "_native_cudnn", "flex", "xformers"})
MASK_FALLBACK_BACKEND = "native"


@dataclass
class BranchInput:
    """What one token branch attends to in one forward call.

    Attributes:
        tokens: ``(B, S, C)`` for clip-level attention (every visual token sees all ``S`` tokens) or
            ``(B, F, W, C)`` for frame-level attention (latent frame ``f``'s visual tokens see window ``f``).
        key_lengths: valid keys per window: ``(F,)`` or ``(B, F)`` frame-level; ``(B,)`` clip-level;
            ``None`` when every key is valid. Keys past the length never change the output.
        scale: weight of the branch (``audio_scale``; 0.5 for identity). A ``(B,)`` tensor scales
            per sample (condition dropout in training).
    """

    tokens: torch.Tensor
    key_lengths: torch.Tensor | None = None
    scale: float | torch.Tensor = 1.0

    @property
    def frame_level(self) -> bool:
        return self.tokens.ndim == 4

    @property
    def active(self) -> bool:
        return not (isinstance(self.scale, (int, float)) and self.scale == 0)


@dataclass
class BranchContext:
    """Shared, per-call state of all processors of one model (set by the model, read by processors)."""

    branches: dict[str, BranchInput] = field(default_factory=dict)

    @contextmanager
    def bind(self, branches: dict[str, BranchInput]) -> Iterator[None]:
        previous = self.branches
        self.branches = branches
        try:
            yield
        finally:
            self.branches = previous


class BranchProjection(nn.Module):
    """Key and value projections of one extra token branch (zero initialised, no bias)."""

    def __init__(self, token_dim: int, inner_dim: int) -> None:
        super().__init__()
        self.k_proj = nn.Linear(token_dim, inner_dim, bias=False)
        self.v_proj = nn.Linear(token_dim, inner_dim, bias=False)
        nn.init.zeros_(self.k_proj.weight)
        nn.init.zeros_(self.v_proj.weight)


class FantasyTalkingAttnProcessor(nn.Module):
    """Wan I2V cross-attention plus token branches; the audio branch owns ``k_proj``/``v_proj``.

    The audio weights keep the release's names: in the block they are
    ``attn2.processor.k_proj.weight`` and ``attn2.processor.v_proj.weight`` (``(D, P)``).
    """

    _attention_backend = None
    _parallel_config = None

    def __init__(self, inner_dim: int, audio_dim: int, text_len: int, context: BranchContext) -> None:
        super().__init__()
        self.text_len = text_len  # padded text tokens (512 for umT5); the image tokens come before them
        self.k_proj = nn.Linear(audio_dim, inner_dim, bias=False)
        self.v_proj = nn.Linear(audio_dim, inner_dim, bias=False)
        nn.init.zeros_(self.k_proj.weight)  # zero-init: a fresh branch leaves Wan unchanged
        nn.init.zeros_(self.v_proj.weight)
        self.branches = nn.ModuleDict()  # further token branches (e.g. "face"), same shape of weights
        object.__setattr__(self, "_context", context)  # shared, not a submodule

    def add_branch(self, name: str, token_dim: int) -> None:
        if name == "audio" or name in self.branches:
            raise ValueError(f"branch {name!r} exists already")
        self.branches[name] = BranchProjection(token_dim, self.k_proj.out_features)

    def _projections(self, name: str) -> tuple[nn.Linear, nn.Linear]:
        if name == "audio":
            return self.k_proj, self.v_proj
        if name not in self.branches:
            raise KeyError(f"the model has no {name!r} attention branch; add it with add_branch first")
        return self.branches[name].k_proj, self.branches[name].v_proj

    def __call__(self, *args, **kwargs) -> torch.Tensor:  # nn.Module.__call__ would route to forward
        return self.forward(*args, **kwargs)

    def forward(
        self,
        attn: nn.Module,
        hidden_states: torch.Tensor,  # (B, L, D) visual tokens, frame-major
        encoder_hidden_states: torch.Tensor,  # (B, S_img + text_len, D)
        attention_mask: torch.Tensor | None = None,
        rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        # Same order of operations as diffusers' WanAttnProcessor, so with no active branch the
        # result is bit-identical to plain Wan.
        image_len = encoder_hidden_states.shape[1] - self.text_len
        encoder_hidden_states_img = None
        if attn.add_k_proj is not None:
            encoder_hidden_states_img = encoder_hidden_states[:, :image_len]  # (B, S_img, D)
            encoder_hidden_states = encoder_hidden_states[:, image_len:]  # (B, text_len, D)

        query, key, value = _get_qkv_projections(attn, hidden_states, encoder_hidden_states)
        query = attn.norm_q(query)
        key = attn.norm_k(key)
        query = query.unflatten(2, (attn.heads, -1))  # (B, L, H, Dh)
        key = key.unflatten(2, (attn.heads, -1))
        value = value.unflatten(2, (attn.heads, -1))

        hidden_states_img = None
        if encoder_hidden_states_img is not None:
            key_img, value_img = _get_added_kv_projections(attn, encoder_hidden_states_img)
            key_img = attn.norm_added_k(key_img).unflatten(2, (attn.heads, -1))
            value_img = value_img.unflatten(2, (attn.heads, -1))
            hidden_states_img = dispatch_attention_fn(
                query, key_img, value_img, attn_mask=None, dropout_p=0.0, is_causal=False,
                backend=self._attention_backend, parallel_config=None,
            )
            hidden_states_img = hidden_states_img.flatten(2, 3).type_as(query)

        hidden_states = dispatch_attention_fn(
            query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False,
            backend=self._attention_backend, parallel_config=None,
        )
        hidden_states = hidden_states.flatten(2, 3).type_as(query)  # (B, L, D)
        if hidden_states_img is not None:
            hidden_states = hidden_states + hidden_states_img

        for name, branch in self._context.branches.items():
            if not branch.active:
                continue
            out = self._branch_attention(query, branch, *self._projections(name))  # (B, L, D)
            scale = branch.scale
            if isinstance(scale, torch.Tensor):
                scale = scale.to(out.dtype).view(-1, 1, 1)  # (B, 1, 1)
            hidden_states = hidden_states + out * scale

        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        return hidden_states

    def _branch_attention(
        self, query: torch.Tensor, branch: BranchInput, k_proj: nn.Linear, v_proj: nn.Linear
    ) -> torch.Tensor:
        batch, length, heads, head_dim = query.shape
        tokens = branch.tokens.to(k_proj.weight.dtype)
        key = k_proj(tokens)  # (B, S, D) or (B, F, W, D)
        value = v_proj(tokens)
        if branch.frame_level:
            frames, window = tokens.shape[1], tokens.shape[2]
            if length % frames:
                raise ValueError(f"{length} visual tokens do not split into {frames} latent frames")
            q = query.reshape(batch * frames, length // frames, heads, head_dim)  # (B*F, L/F, H, Dh)
            key = key.reshape(batch * frames, window, heads, head_dim)  # (B*F, W, H, Dh)
            value = value.reshape(batch * frames, window, heads, head_dim)
            lengths = branch.key_lengths
            if lengths is not None:
                lengths = lengths.to(query.device).expand(batch, frames).reshape(-1)  # (B*F,)
        else:
            q = query
            key = key.unflatten(2, (heads, -1))  # (B, S, H, Dh)
            value = value.unflatten(2, (heads, -1))
            lengths = branch.key_lengths
        mask = None
        if lengths is not None and bool((lengths < key.shape[1]).any()):
            # A window with no valid key keeps its first (zero) token: attention to a zero key and
            # value gives exactly 0, the right answer for "no audio here", instead of NaN.
            lengths = lengths.clamp(min=1)
            keep = torch.arange(key.shape[1], device=query.device)[None, :] < lengths[:, None]  # (B', S)
            mask = keep[:, None, None, :]  # (B', 1, 1, S): broadcast over heads and queries
        backend = self._attention_backend
        if mask is not None and _backend_name(backend) not in MASK_CAPABLE_BACKENDS:
            backend = MASK_FALLBACK_BACKEND
        out = dispatch_attention_fn(
            q, key.to(q.dtype), value.to(q.dtype), attn_mask=mask, dropout_p=0.0, is_causal=False,
            backend=backend, parallel_config=None,
        )
        return out.reshape(batch, length, heads * head_dim).type_as(query)  # (B, L, D)


def _backend_name(backend: object) -> str:
    """Name of the backend a processor will use (its own, else diffusers' active one)."""
    if backend is None:
        backend = _AttentionBackendRegistry.get_active_backend()[0]
    return str(getattr(backend, "value", backend))
