"""Strategy and precision settings that need no GPU to check: the FSDP strategy's defaults and refusals,
the EMA callback's refusal of FSDP, and the bf16 frozen backbone under CPU autocast."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.transformers.transformer_wan import WanTransformerBlock
from training_helpers import one_thread, synthetic_batch, tiny_module  # noqa: F401 (one_thread: fixture)

from fantasytalking.errors import InputError
from fantasytalking.training import EMACallback, StageTwoLipRefiner, WanFSDPStrategy, step_generator


def test_wan_fsdp_strategy_wraps_blocks_and_refuses_policy_checkpointing():
    strategy = WanFSDPStrategy()
    assert strategy.kwargs["use_orig_params"] is True  # frozen Wan weights and trained branches share a block
    assert WanTransformerBlock in strategy.kwargs["auto_wrap_policy"]._module_classes
    assert strategy._state_dict_type == "full"
    with pytest.raises(InputError, match="gradient_checkpointing"):
        WanFSDPStrategy(activation_checkpointing_policy={WanTransformerBlock})
    with pytest.raises(InputError, match="full-state"):
        WanFSDPStrategy(state_dict_type="sharded")


def test_ema_refuses_fsdp():
    class FakeTrainer:
        strategy = WanFSDPStrategy()

    with pytest.raises(InputError, match="FSDP"):
        EMACallback().setup(FakeTrainer(), None, "fit")


def test_bf16_frozen_backbone_keeps_fp32_islands_and_trains_in_fp32():
    module = tiny_module(StageTwoLipRefiner, face=True, backbone={"preset": "tiny", "backbone_dtype": "bfloat16"})
    wan = module.transformer.transformer
    assert wan.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16  # frozen: half the memory
    assert wan.blocks[0].norm2.weight.dtype == torch.float32  # Wan's fp32 islands stay
    assert wan.condition_embedder.time_embedder.linear_1.weight.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in module.parameters() if p.requires_grad)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # what precision: bf16-mixed does
        out = module.compute_loss(synthetic_batch(2), step_generator(0, 0))
    out.loss.backward()
    assert torch.isfinite(out.loss)
    grad = module.get_parameter("transformer.transformer.blocks.0.attn2.processor.branches.face.v_proj.weight").grad
    assert grad is not None and grad.dtype == torch.float32
