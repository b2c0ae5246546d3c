"""Distributed training: DDP and FSDP with the Wan blocks as wrap units.

* DDP: Lightning's ``strategy: ddp`` as is (one full model per GPU; the trained conditioning is
  small, the frozen backbone is replicated). Works on CPU with gloo for tests.
* FSDP: :class:`WanFSDPStrategy`, Lightning's ``FSDPStrategy`` with every ``WanTransformerBlock``
  as a wrap unit, ``use_orig_params`` (a block holds frozen Wan weights and trained branches) and
  full-state checkpoints (what the training module's checkpoint filtering and the exporter read).

Activation checkpointing: set ``model.init_args.trainable.gradient_checkpointing: true`` (any
strategy). Lightning's ``activation_checkpointing_policy`` recomputes blocks without the per-call
audio / identity inputs (see ``FantasyTalkingTransformer.enable_gradient_checkpointing``), so :class:`WanFSDPStrategy` refuses it.

Precision: ``trainer.precision: bf16-mixed`` on GPUs (float32 master weights, bf16 compute); the
frozen encoders follow ``model.init_args.backbone.frozen_dtype``.

Multi-node: Lightning reads the usual launcher environment (torchrun / SLURM), e.g.::

    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint $HEAD:29500 \\
        examples/finetune.py fit --config examples/configs/stage1.yaml --trainer.num_nodes 2
"""

from __future__ import annotations

from typing import Any, Literal

from lightning.pytorch.strategies import FSDPStrategy

from fantasytalking.errors import InputError


def wan_block_class() -> type:
    from diffusers.models.transformers.transformer_wan import WanTransformerBlock

    return WanTransformerBlock


class WanFSDPStrategy(FSDPStrategy):
    """FSDP over Wan blocks (see the module docstring); other keyword arguments go to ``FSDPStrategy``.

    Args:
        sharding_strategy: ``FULL_SHARD`` (ZeRO-3), ``SHARD_GRAD_OP`` (ZeRO-2), ``HYBRID_SHARD`` (shard in a
            node, replicate across nodes), or ``NO_SHARD``.
        cpu_offload: keep sharded parameters on the CPU between uses (slow; for memory-bound runs).
        limit_all_gathers: rate-limit all-gathers to bound memory.
    """

    def __init__(
        self,
        sharding_strategy: Literal["FULL_SHARD", "SHARD_GRAD_OP", "HYBRID_SHARD", "NO_SHARD"] = "FULL_SHARD",
        cpu_offload: bool = False,
        limit_all_gathers: bool = True,
        **kwargs: Any,
    ) -> None:
        for bad in ("activation_checkpointing", "activation_checkpointing_policy"):
            if kwargs.get(bad) is not None:
                raise InputError(
                    f"WanFSDPStrategy does not take {bad}: it would recompute blocks without the audio inputs; "
                    "set model.init_args.trainable.gradient_checkpointing: true instead."
                )
        if kwargs.get("state_dict_type", "full") != "full":
            raise InputError("WanFSDPStrategy writes full-state checkpoints only (state_dict_type: full).")
        kwargs.pop("state_dict_type", None)
        kwargs.setdefault("use_orig_params", True)
        kwargs.setdefault("auto_wrap_policy", {wan_block_class()})
        super().__init__(
            sharding_strategy=sharding_strategy,
            cpu_offload=cpu_offload,
            limit_all_gathers=limit_all_gathers,
            state_dict_type="full",
            **kwargs,
        )
