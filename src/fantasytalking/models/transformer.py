"""The FantasyTalking backbone: diffusers' ``WanTransformer3DModel`` with token branches.

:class:`FantasyTalkingTransformer` owns a stock ``WanTransformer3DModel`` and installs a
:class:`~fantasytalking.models.attention.FantasyTalkingAttnProcessor` in every block's
cross-attention. It adds two ways for conditioners to reach the backbone, and nothing else:

* token branches (audio, identity): extra keys/values in every cross-attention, see ``attention.py``;
* a vector added to the timestep embedding (motion intensity, FANTASYTALKING.md section 4).

With no branch active and no time offset the output is bit-identical to plain Wan.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from diffusers import WanTransformer3DModel
from torch import nn
from torch.utils.checkpoint import checkpoint

from fantasytalking.errors import WeightsError
from fantasytalking.models.attention import BranchContext, BranchInput, FantasyTalkingAttnProcessor

# Release names of the audio branch of block i (FANTASYTALKING.md section 3.3).
RELEASE_BLOCK_KEY = "blocks.{index}.cross_attn.processor.{name}.weight"


class FantasyTalkingTransformer(nn.Module):
    """Wan2.1 I2V transformer with FantasyTalking's cross-attention branches.

    Args:
        transformer: a (loaded or random) diffusers ``WanTransformer3DModel``; its weights are used as is.
        audio_dim: width ``P`` of the projected audio tokens the audio branch takes (2048 in the release).
        text_len: padded text length of the cross-attention context (512 for umT5); the image tokens
            are the ``S - text_len`` tokens before the text.
    """

    def __init__(self, transformer: WanTransformer3DModel, *, audio_dim: int, text_len: int = 512) -> None:
        super().__init__()
        self.transformer = transformer
        self.audio_dim = audio_dim
        self.text_len = text_len
        self._context = BranchContext()
        self._time_offset: torch.Tensor | None = None
        weight = transformer.proj_out.weight
        for block in transformer.blocks:
            processor = FantasyTalkingAttnProcessor(self.inner_dim, audio_dim, text_len, self._context)
            if weight.device.type != "meta":
                processor.to(device=weight.device, dtype=weight.dtype)
            else:
                processor.to_empty(device="meta")
            block.attn2.set_processor(processor)
        transformer.condition_embedder.time_embedder.register_forward_hook(self._add_time_offset)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any], *, audio_dim: int, text_len: int = 512
    ) -> FantasyTalkingTransformer:
        """A randomly initialised model from a ``WanTransformer3DModel`` config (any size)."""
        return cls(WanTransformer3DModel.from_config(dict(config)), audio_dim=audio_dim, text_len=text_len)

    @property
    def config(self) -> Any:
        return self.transformer.config

    @property
    def device(self) -> torch.device:
        return self.transformer.device

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.dtype

    @property
    def inner_dim(self) -> int:
        return self.config.num_attention_heads * self.config.attention_head_dim

    @property
    def num_layers(self) -> int:
        return len(self.transformer.blocks)

    @property
    def processors(self) -> list[FantasyTalkingAttnProcessor]:
        return [block.attn2.processor for block in self.transformer.blocks]

    def add_token_branch(self, name: str, token_dim: int) -> None:
        """Add a zero-initialised cross-attention branch ``name`` (e.g. identity tokens) to every block."""
        weight = self.transformer.proj_out.weight
        for processor in self.processors:
            processor.add_branch(name, token_dim)
            processor.branches[name].to(device=weight.device, dtype=weight.dtype)

    def set_attention_backend(self, backend: str) -> None:
        """Select a diffusers attention backend (``native``, ``flash``, ``sage``, ...) for all attention.

        The audio and other token branches need a key mask; with a backend that cannot take one
        they use PyTorch SDPA instead, so the mask always holds.
        """
        self.transformer.set_attention_backend(backend)

    def enable_gradient_checkpointing(self) -> None:
        """Recompute every Wan block in the backward pass (non-reentrant), branches included.

        diffusers' own ``enable_gradient_checkpointing`` would recompute a block after this model's
        forward has unbound the per-call branch inputs, so the recomputation would run without them
        (PyTorch then stops: "a different number of tensors was saved"). Here the inputs bound at
        forward time are bound again for the recomputation. Lightning's FSDP
        ``activation_checkpointing_policy`` has the same problem; use this instead.
        """
        context = self._context

        def checkpoint_block(block: nn.Module, *args: Any) -> Any:
            branches = context.branches  # bound now, by forward

            def run(*inner: Any) -> Any:
                with context.bind(branches):
                    return block(*inner)

            return checkpoint(run, *args, use_reentrant=False)

        self.transformer.enable_gradient_checkpointing(gradient_checkpointing_func=checkpoint_block)

    def disable_gradient_checkpointing(self) -> None:
        self.transformer.disable_gradient_checkpointing()

    @property
    def gradient_checkpointing(self) -> bool:
        return bool(self.transformer.gradient_checkpointing)

    # ------------------------------------------------------------------ forward

    def _add_time_offset(self, module: nn.Module, inputs: Any, temb: torch.Tensor) -> torch.Tensor:
        if self._time_offset is None:
            return temb
        return temb + self._time_offset.to(temb.dtype)  # (B, D) + (B, D)

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_hidden_states_image: torch.Tensor | None = None,
        *,
        branches: Mapping[str, BranchInput] | None = None,
        time_embedding: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict the flow-matching velocity.

        Args:
            hidden_states: ``(B, C_in, F, H, W)`` noisy latents concatenated with the image condition
                (``C_in = 16 + 4 + 16`` for Wan I2V).
            timestep: ``(B,)`` timesteps in ``[0, 1000]``.
            encoder_hidden_states: ``(B, text_len, text_dim)`` umT5 embeddings, zero-padded.
            encoder_hidden_states_image: ``(B, S_img, image_dim)`` CLIP penultimate-layer tokens.
            branches: per-branch inputs by name (``"audio"``, ``"face"``); missing branches are off.
            time_embedding: ``(B, D)`` added to the timestep embedding (motion intensity), or None.

        Returns:
            ``(B, C_out, F, H, W)`` velocity.
        """
        self._time_offset = time_embedding
        try:
            with self._context.bind(dict(branches or {})):
                return self.transformer(
                    hidden_states=hidden_states,
                    timestep=timestep,
                    encoder_hidden_states=encoder_hidden_states,
                    encoder_hidden_states_image=encoder_hidden_states_image,
                    return_dict=False,
                )[0]
        finally:
            self._time_offset = None

    # ------------------------------------------------------------------ release weights

    def audio_branch_state_dict(self) -> dict[str, torch.Tensor]:
        """The audio branch under the release's key names (``blocks.N.cross_attn.processor.{k,v}_proj.weight``)."""
        state = {}
        for index, processor in enumerate(self.processors):
            for name in ("k_proj", "v_proj"):
                state[RELEASE_BLOCK_KEY.format(index=index, name=name)] = getattr(processor, name).weight
        return state

    def load_audio_branch(self, state: Mapping[str, torch.Tensor], *, source: str = "the audio weights") -> None:
        """Load every block's audio ``k_proj``/``v_proj`` from release-named tensors; every key must match."""
        expected = self.audio_branch_state_dict()
        missing = [k for k in expected if k not in state]
        unexpected = [k for k in state if k.startswith("blocks.") and k not in expected]
        if missing or unexpected:
            raise WeightsError(
                f"{source} do not fit this transformer ({self.num_layers} blocks): "
                + (f"missing {len(missing)} tensors, e.g. {missing[0]}; " if missing else "")
                + (f"unexpected {len(unexpected)} tensors, e.g. {unexpected[0]}; " if unexpected else "")
                + "use the FantasyTalking weights made for Wan2.1-I2V-14B."
            )
        for key, param in expected.items():
            value = state[key]
            if tuple(value.shape) != tuple(param.shape):
                raise WeightsError(
                    f"{source}: {key} has shape {tuple(value.shape)}, the model expects {tuple(param.shape)}; "
                    "the audio weights and the Wan model are of different sizes."
                )
        with torch.no_grad():
            for key, param in expected.items():
                param.copy_(state[key].to(device=param.device, dtype=param.dtype))
