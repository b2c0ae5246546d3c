"""Reference drift in training (objective.reference_degrade_p): the image condition made from a drifted copy of
the first frame while the target keeps the clip's own latents."""

from __future__ import annotations

import pytest
import torch
from training_helpers import one_thread, synthetic_batch, tiny_module  # noqa: F401 (autouse fixture)

from fantasytalking.training import ObjectiveConfig, degrade_reference


def _frames(seed: int = 0, batch: int = 3, size: int = 16) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_degrade_reference_is_seeded_bounded_and_does_what_it_draws():
    x = _frames()
    kwargs = {"colour_std": 0.1, "blur_max": 1.5, "round_trips_max": 2}
    a = degrade_reference(x, torch.Generator().manual_seed(5), **kwargs)
    b = degrade_reference(x, torch.Generator().manual_seed(5), **kwargs)
    c = degrade_reference(x, torch.Generator().manual_seed(6), **kwargs)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    assert a.shape == x.shape and a.dtype == x.dtype and a.abs().max() <= 1
    assert (a - x).abs().mean() > 0.01

    # Nothing to do: the frames come back as they were.
    same = degrade_reference(x, torch.Generator().manual_seed(5), colour_std=0.0, blur_max=0.0, round_trips_max=0)
    torch.testing.assert_close(same, x)

    # Blur alone lowers the pixel-to-pixel variation.
    blurred = degrade_reference(x, torch.Generator().manual_seed(1), colour_std=0.0, blur_max=3.0, round_trips_max=0)
    assert blurred.diff(dim=-1).abs().mean() < 0.8 * x.diff(dim=-1).abs().mean()

    # Colour alone: a per-channel affine map of each frame.
    shifted = degrade_reference(x, torch.Generator().manual_seed(2), colour_std=0.2, blur_max=0.0, round_trips_max=0)
    for i in range(x.shape[0]):
        for ch in range(3):
            inside = shifted[i, ch].abs() < 1  # not clamped
            fit = torch.linalg.lstsq(torch.stack([x[i, ch][inside], torch.ones(int(inside.sum()))], 1),
                                     shifted[i, ch][inside][:, None]).solution  # fmt: skip
            torch.testing.assert_close(fit[0, 0] * x[i, ch][inside] + fit[1, 0], shifted[i, ch][inside],
                                       atol=1e-4, rtol=0)  # fmt: skip

    # Round trips: each frame passes round_trip as many times as drawn (0, 1 or 2), batched over the frames left.
    seen: list[int] = []

    def round_trip(frames: torch.Tensor) -> torch.Tensor:
        seen.append(frames.shape[0])
        return frames * 0.5

    out = degrade_reference(torch.ones(8, 3, 4, 4), torch.Generator().manual_seed(3), colour_std=0.0, blur_max=0.0,
                            round_trips_max=2, round_trip=round_trip)  # fmt: skip
    passes = torch.log2(1 / out[:, 0, 0, 0]).round().long()  # 0.5 ** k -> k per frame
    assert set(passes.tolist()) <= {0, 1, 2} and len(set(passes.tolist())) > 1
    assert seen == [int((passes >= k).sum()) for k in range(1, int(passes.max()) + 1)]


def test_objective_refuses_bad_drift_settings():
    with pytest.raises(ValueError, match="reference_degrade_p"):
        ObjectiveConfig(reference_degrade_p=1.5)
    with pytest.raises(ValueError, match="must not be negative"):
        ObjectiveConfig(reference_blur_max=-1.0)


def _inputs(module, batch, seed=0):
    return module.prepare_inputs(batch, torch.Generator().manual_seed(seed))


def test_drifted_reference_changes_the_condition_and_not_the_target():
    batch = synthetic_batch(2)
    plain = tiny_module()
    off = tiny_module(objective={"reference_degrade_p": 0.0})
    drift = tiny_module(objective={"reference_degrade_p": 1.0, "image_dropout_p": 0.0, "reference_colour_std": 0.1})
    clean = tiny_module(objective={"image_dropout_p": 0.0})
    for m in (off, drift, clean):
        m.load_state_dict(plain.state_dict())

    # p = 0 is the default objective: the same inputs and loss.
    a, b = _inputs(plain, batch), _inputs(off, batch)
    torch.testing.assert_close(a.image_condition, b.image_condition)
    torch.testing.assert_close(a.image_tokens, b.image_tokens)
    torch.testing.assert_close(plain.compute_loss(batch, torch.Generator().manual_seed(1)).loss,
                               off.compute_loss(batch, torch.Generator().manual_seed(1)).loss)  # fmt: skip

    ref, got = _inputs(clean, batch), _inputs(drift, batch)
    torch.testing.assert_close(got.latents, ref.latents)  # the target keeps the true identity
    for i in range(2):  # every clip's reference drifted (p = 1)
        assert not torch.allclose(got.image_condition[i], ref.image_condition[i], atol=1e-4)
        assert not torch.allclose(got.image_tokens[i], ref.image_tokens[i], atol=1e-4)

    # The tiny VAE carries the first frame into later latent frames (as Wan's causal cache does), so the whole
    # condition is the drifted frame's, exactly as segmented inference encodes it; the CLIP tokens are its too.
    assert not drift.condition_sees_first_frame_only()
    drifted = _drifted(drift, batch)
    with torch.no_grad():
        whole = drift.pipe.encode_condition(drifted, batch["video"].shape[2], drift.device)
        tokens = drift.pipe.encode_image(drifted, drift.device, torch.float32)
    torch.testing.assert_close(got.image_condition, whole, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got.image_tokens, tokens, atol=1e-5, rtol=1e-4)

    # A VAE whose later latent frames ignore the first frame (the demo's) gets latent frame 0 alone re-encoded:
    # it equals the whole encode's frame 0, and the rest of y is the clean condition's.
    drift._condition_frame0_only = True
    fast = _inputs(drift, batch)
    m = drift.pipe.vae_scale_factor_temporal
    torch.testing.assert_close(fast.image_condition[:, m:, 0], whole[:, m:, 0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(fast.image_condition[:, :m], ref.image_condition[:, :m])  # the mask
    torch.testing.assert_close(fast.image_condition[:, m:, 1:], ref.image_condition[:, m:, 1:])


def _drifted(module, batch, seed=0):
    """The drifted references prepare_inputs(seed) draws for a batch whose every clip is picked."""
    cfg = module.objective_config
    g = torch.Generator().manual_seed(seed)
    torch.rand(batch["video"].shape[0], generator=g)  # the pick
    return degrade_reference(batch["video"][:, :, 0], g, colour_std=cfg.reference_colour_std,
                             blur_max=cfg.reference_blur_max, round_trips_max=cfg.reference_round_trips_max,
                             round_trip=module.vae_round_trip)  # fmt: skip


def test_only_the_picked_clips_drift_and_a_dropped_image_stays_dropped():
    batch = synthetic_batch(4)
    clean = tiny_module(objective={"image_dropout_p": 0.0})
    mixed = tiny_module(objective={"reference_degrade_p": 0.5, "image_dropout_p": 0.0})
    mixed.load_state_dict(clean.state_dict())
    seed = next(s for s in range(50) if 0 < int((torch.rand(4, generator=torch.Generator().manual_seed(s)) < 0.5)
                                                .sum()) < 4)  # fmt: skip  a seed that picks some clips, not all
    pick = torch.rand(4, generator=torch.Generator().manual_seed(seed)) < 0.5
    ref, got = _inputs(clean, batch, seed), _inputs(mixed, batch, seed)
    for i in range(4):
        same = torch.allclose(got.image_condition[i], ref.image_condition[i])
        assert same != bool(pick[i]), f"clip {i}: picked {bool(pick[i])}"
        assert torch.allclose(got.image_tokens[i], ref.image_tokens[i]) != bool(pick[i])

    # Image dropout comes after the drift: a dropped image is all zeros whether or not it drifted.
    dropped = tiny_module(objective={"reference_degrade_p": 1.0, "image_dropout_p": 1.0})
    dropped.load_state_dict(clean.state_dict())
    inputs = _inputs(dropped, batch)
    assert not inputs.image_condition.any() and not inputs.image_tokens.any()


def test_drift_applies_to_cached_encodes(tmp_path):
    batch = synthetic_batch(2)
    objective = {"reference_degrade_p": 1.0}
    plain = tiny_module(objective=objective)
    cached = tiny_module(objective={**objective, "cache_encodes": True, "cache_dir": str(tmp_path)})
    cached.load_state_dict(plain.state_dict())
    reference = plain.compute_loss(batch, torch.Generator().manual_seed(0)).loss
    cached.compute_loss(batch, torch.Generator().manual_seed(0))  # miss: stores the clean encodes
    hit = cached.compute_loss(batch, torch.Generator().manual_seed(0)).loss
    torch.testing.assert_close(hit, reference)
    assert cached._encode_cache().hits == 2
