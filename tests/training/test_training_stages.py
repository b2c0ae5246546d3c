"""The two LightningModules: loss decrease, the lip-mask loss, condition dropout, trainable sets, checkpointing."""

from __future__ import annotations

import pytest
import torch
from training_helpers import one_thread, synthetic_batch, tiny_module  # noqa: F401 (one_thread: fixture)

from fantasytalking.conditioning import Condition
from fantasytalking.errors import InputError
from fantasytalking.training import (
    StageOneClipAligner,
    StageTwoLipRefiner,
    latent_lip_mask,
    masked_mean,
    step_generator,
)
from fantasytalking.training.module import is_conditioning_key, trainable_part

STAGES = {"stage1": StageOneClipAligner, "stage2": StageTwoLipRefiner}


def _one_step(module, batch, seed: int = 0) -> tuple[float, float]:
    optimizer = module.configure_optimizers()["optimizer"]
    before = module.compute_loss(batch, step_generator(seed, 0))
    optimizer.zero_grad()
    before.loss.backward()
    optimizer.step()
    with torch.no_grad():
        after = module.compute_loss(batch, step_generator(seed, 0))  # the same draws
    return float(before.loss.detach()), float(after.loss)


@pytest.mark.parametrize("stage", sorted(STAGES))
@pytest.mark.parametrize("conditioners", ["audio", "audio+face", "audio+motion", "audio+face+motion"])
def test_one_step_lowers_the_loss(stage, conditioners):
    module = tiny_module(STAGES[stage], face="face" in conditioners, motion="motion" in conditioners)
    assert module.conditioning.names == conditioners.split("+")
    assert module.audio_conditioner.mode == ("clip" if stage == "stage1" else "frame")
    batch = synthetic_batch(2, seed=3)
    watched = {
        "face": "transformer.transformer.blocks.0.attn2.processor.branches.face.v_proj.weight",
        "motion": "conditioning.conditioners.motion.out.1.weight",
        "audio": "conditioning.conditioners.audio.proj_model.proj.weight",
    }
    start = {n: module.get_parameter(watched[n]).detach().clone() for n in conditioners.split("+")}
    before, after = _one_step(module, batch)
    assert after < before
    for name, value in start.items():  # every conditioner trained
        assert not torch.equal(module.get_parameter(watched[name]), value), name


def test_lora_step_lowers_the_loss_and_trains_adapters_only():
    module = tiny_module(trainable={"mode": "lora", "lora_rank": 4, "lora_alpha": 4})
    names = {n for n, p in module.named_parameters() if p.requires_grad}
    assert any(".lora_A." in n for n in names) and any(".lora_B." in n for n in names)
    assert not any(".base_layer." in n for n in names)
    assert all(is_conditioning_key(n) or ".lora_" in n for n in names)
    before, after = _one_step(module, synthetic_batch(2, seed=3))
    assert after < before


def test_trainable_sets():
    module = tiny_module(face=True, motion=True)
    names = {n for n, p in module.named_parameters() if p.requires_grad}
    assert all(is_conditioning_key(n) for n in names)
    assert "transformer.transformer.blocks.0.attn2.processor.k_proj.weight" in names  # audio branch
    assert "conditioning.conditioners.face.queries" in names
    assert not any(".encoder." in n for n in names)  # wav2vec2 stays frozen
    assert not any(n.startswith("transformer.transformer.blocks.0.attn1") for n in names)
    full = tiny_module(trainable={"mode": "full"})
    full_names = {n for n, p in full.named_parameters() if p.requires_grad}
    assert "transformer.transformer.blocks.0.attn1.to_q.weight" in full_names
    assert not any(".encoder." in n for n in full_names)

    class AudioProjectorOnly(StageOneClipAligner):
        def configure_trainable(self) -> None:  # the one method to override
            self.requires_grad_(False)
            self.audio_conditioner.proj_model.requires_grad_(True)

    custom = AudioProjectorOnly(backbone={"preset": "tiny"})
    optimizer = custom.configure_optimizers()["optimizer"]
    trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert trained == {id(p) for p in custom.audio_conditioner.proj_model.parameters()}


def test_trainable_only_narrows_to_the_named_parts():
    module = tiny_module(StageTwoLipRefiner, face=True, motion=True, trainable={"mode": "full", "only": ["motion"]})
    names = {n for n, p in module.named_parameters() if p.requires_grad}
    assert names and all(n.startswith("conditioning.conditioners.motion.") for n in names)
    frozen = {n: p.detach().clone() for n, p in module.named_parameters() if not p.requires_grad}
    motion_out = module.get_parameter("conditioning.conditioners.motion.out.1.weight").detach().clone()
    _one_step(module, synthetic_batch(2, seed=3))
    assert not torch.equal(module.get_parameter("conditioning.conditioners.motion.out.1.weight"), motion_out)
    for name, value in frozen.items():  # audio, face, their branches and the backbone: untouched
        assert torch.equal(module.get_parameter(name), value), name
    # Under full, a backbone that ``only`` freezes is still this run's: checkpoints keep it.
    assert not any(k.startswith("transformer.") for k in module._omitted_keys)

    face = tiny_module(face=True, trainable={"only": ["face"]})
    face_names = {n for n, p in face.named_parameters() if p.requires_grad}
    assert "transformer.transformer.blocks.0.attn2.processor.branches.face.k_proj.weight" in face_names
    assert all(trainable_part(n) == "face" for n in face_names)
    audio = tiny_module(face=True, trainable={"only": ["audio"]})
    audio_names = {n for n, p in audio.named_parameters() if p.requires_grad}
    assert "transformer.transformer.blocks.0.attn2.processor.k_proj.weight" in audio_names  # the release's names
    assert all(trainable_part(n) == "audio" for n in audio_names)
    lora = tiny_module(trainable={"mode": "lora", "lora_rank": 4, "lora_alpha": 4, "only": ["backbone"]})
    lora_names = {n for n, p in lora.named_parameters() if p.requires_grad}
    assert lora_names and all(".lora_" in n for n in lora_names)

    with pytest.raises(InputError, match=r"trainable.only names \['motion'\].*choose from \['audio', 'backbone'\]"):
        tiny_module(trainable={"only": ["motion"]})  # no motion conditioner in this model
    with pytest.raises(InputError, match="nothing to train"):  # the backbone is frozen under `conditioners`
        tiny_module(trainable={"only": ["backbone"]}).configure_optimizers()


def test_stage_two_mask_loss_gradient_and_rate():
    batch = synthetic_batch(2, seed=1)
    module = tiny_module(StageTwoLipRefiner, lip_mask_eta=0.0)  # p > 0: the lip loss always
    out = module.compute_loss(batch, step_generator(0, 0))
    out.prediction.retain_grad()
    out.loss.backward()
    grad = out.prediction.grad  # (B, 16, F, h, w)
    mask = latent_lip_mask(batch["lip_mask"], tuple(grad.shape[2:])).expand_as(grad)
    assert bool((mask == 0).any()) and bool((mask > 0).any())
    assert torch.count_nonzero(grad[mask == 0]) == 0  # zero gradient outside the lips
    assert torch.count_nonzero(grad[mask > 0]) > 0
    assert out.logs["lip_loss_fraction"] == 1.0

    plain = tiny_module(StageTwoLipRefiner, lip_mask_eta=1.0)  # never
    out = plain.compute_loss(batch, step_generator(0, 0))
    out.prediction.retain_grad()
    out.loss.backward()
    assert torch.count_nonzero(out.prediction.grad[mask == 0]) > 0

    # The branch is taken for p > eta, p ~ U(0, 1) per sample: at rate 1 - eta.
    module.lip_mask_eta = 0.2
    taken = module.lip_mask_branch(50_000, torch.Generator().manual_seed(0))
    assert abs(float(taken.float().mean()) - 0.8) < 0.01
    # ... and reduce_loss takes it exactly where that draw says.
    error = torch.rand(8, 16, 3, 4, 4)
    lip_batch = {"lip_mask": synthetic_batch(8, seed=2)["lip_mask"]}
    for seed in range(5):
        take = module.lip_mask_branch(8, torch.Generator().manual_seed(seed))
        per_sample, _ = module.reduce_loss(error, lip_batch, torch.Generator().manual_seed(seed))
        masked = masked_mean(error, latent_lip_mask(lip_batch["lip_mask"], (3, 4, 4)))
        expected = torch.where(take, masked, error.flatten(1).mean(1))
        torch.testing.assert_close(per_sample, expected)


def test_condition_dropout_rates():
    module = tiny_module(face=True, motion=True)
    generator = torch.Generator().manual_seed(0)
    n = 40_000
    keep = module.draw_dropout(n, generator)
    conditions = {
        "audio": Condition(tokens=torch.zeros(n, 1, 1), scale=1.0),
        "face": Condition(tokens=torch.zeros(n, 1, 1), scale=0.5),
        "motion": Condition(time_embedding=torch.ones(n, 2)),
    }
    dropped = module.conditioning.drop(conditions, generator)
    null = {
        "image": ~keep["image"],
        "prompt": ~keep["prompt"],
        "audio": dropped["audio"].scale == 0,
        "face": dropped["face"].scale == 0,
    }
    for name, is_null in null.items():  # p = 0.1 each; 5 sigma = 0.0075
        assert abs(float(is_null.float().mean()) - 0.1) < 0.0075, name
    # independent draws: both image and audio null for about 1% of the samples
    assert abs(float((null["image"] & null["audio"]).float().mean()) - 0.01) < 0.003
    assert torch.equal(dropped["motion"].time_embedding, conditions["motion"].time_embedding)  # never dropped
    assert float(dropped["face"].scale.max()) == 0.5  # kept samples keep l2


@torch.no_grad()
def test_dropped_conditions_reach_the_backbone_as_nulls():
    batch = synthetic_batch(2, seed=4)
    drop_all = tiny_module(objective={"image_dropout_p": 1.0, "prompt_dropout_p": 1.0}, audio={"dropout_p": 1.0})
    inputs = drop_all.prepare_inputs(batch, step_generator(0, 0))
    assert torch.count_nonzero(inputs.image_condition) == 0 and torch.count_nonzero(inputs.image_tokens) == 0
    torch.testing.assert_close(inputs.text, drop_all.encode_text(["", ""]))  # the empty prompt
    assert inputs.branches["audio"].scale.tolist() == [0.0, 0.0]
    keep_all = tiny_module(objective={"image_dropout_p": 0.0, "prompt_dropout_p": 0.0}, audio={"dropout_p": 0.0})
    inputs = keep_all.prepare_inputs(batch, step_generator(0, 0))
    assert torch.count_nonzero(inputs.image_condition[:, :4, 0]) == inputs.image_condition[:, :4, 0].numel()
    assert inputs.branches["audio"].scale.tolist() == [1.0, 1.0]
    assert not torch.allclose(inputs.text, keep_all.encode_text(["", ""]))


def test_gradient_checkpointing_gives_the_same_loss_and_gradients():
    batch = synthetic_batch(2, seed=5)
    results = []
    for checkpointing in (False, True):
        module = tiny_module(StageTwoLipRefiner, trainable={"gradient_checkpointing": checkpointing})
        assert module.transformer.transformer.gradient_checkpointing is checkpointing
        out = module.compute_loss(batch, step_generator(0, 0))
        out.loss.backward()
        grads = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
        results.append((out.loss.detach(), grads))
    torch.testing.assert_close(results[0][0], results[1][0])
    assert results[0][1].keys() == results[1][1].keys()
    for name, grad in results[0][1].items():
        torch.testing.assert_close(grad, results[1][1][name], msg=name)


def test_a_face_path_frozen_at_zero_keeps_the_random_stream_and_adds_nothing():
    """The stream-matched ablation of docs/design.md ("Comparing runs that differ in one part"): the same model
    with ``trainable.only`` leaving out ``face`` draws every random number the learning model draws, and its
    face branch stays exactly zero, so what it computes does not depend on the face at all."""
    def build(only: list[str]):
        torch.manual_seed(0)
        return tiny_module(StageTwoLipRefiner, face=True, trainable={"mode": "full", "only": only})

    learning, frozen = build([]), build(["backbone", "audio"])
    assert all(torch.equal(a, b) for a, b in zip(learning.state_dict().values(), frozen.state_dict().values()))
    batch = synthetic_batch(2, seed=3)
    for module in (learning, frozen):
        for seed in (0, 1):  # two optimizer steps, the same draws for both twins
            _one_step(module, batch, seed)

    def face_branch(module):
        return {n: p for n, p in module.named_parameters() if ".branches.face." in n}  # (D, T) k/v per block

    assert face_branch(frozen) and all(not p.any() for p in face_branch(frozen).values())
    assert any(p.any() for p in face_branch(learning).values())  # the learning twin's branch moved
    with torch.no_grad():
        a, b = (m.compute_loss(batch, step_generator(0, 5)) for m in (learning, frozen))
        assert torch.equal(a.sigmas, b.sigmas) and torch.equal(a.target, b.target)  # the same draws
        assert all(torch.equal(a.logs[k], b.logs[k]) for k in a.logs if k.startswith("kept_"))
        other = {**batch, "face_embedding": torch.randn_like(batch["face_embedding"])}
        c = frozen.compute_loss(other, step_generator(0, 5))
        assert torch.equal(b.prediction, c.prediction)  # another face, the same output: the path adds nothing
        d = learning.compute_loss(other, step_generator(0, 5))
        assert not torch.equal(a.prediction, d.prediction)  # while the learning twin reads the face
