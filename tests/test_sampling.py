import pytest
import torch

from fantasytalking.sampling import (
    GuidanceConfig,
    combine_guidance,
    flow_match_sigmas,
    guided_model_fn,
    sample_euler,
    timesteps_from_sigmas,
)


def test_schedule_30_steps_shift_5_by_hand():
    sigmas = flow_match_sigmas(30, 5.0)
    assert sigmas.shape == (31,)
    # sigma = 5s / (1 + 4s) with s = 1 - i/30
    assert sigmas[0].item() == pytest.approx(1.0)
    assert sigmas[1].item() == pytest.approx((5 * 29 / 30) / (1 + 4 * 29 / 30))  # 0.993151
    assert sigmas[1].item() == pytest.approx(0.9931507, abs=1e-7)
    assert sigmas[15].item() == pytest.approx(2.5 / 3.0)  # s = 0.5
    assert sigmas[29].item() == pytest.approx((5 / 30) / (1 + 4 / 30))  # 0.1470588
    assert sigmas[30].item() == 0.0
    assert torch.all(sigmas[1:] < sigmas[:-1])
    t = timesteps_from_sigmas(sigmas)
    assert t.shape == (30,)
    assert t[0].item() == pytest.approx(1000.0) and t[29].item() == pytest.approx(147.0588, abs=1e-4)


def test_guidance_combination_by_hand():
    full, no_audio, uncond = torch.tensor(3.0), torch.tensor(2.0), torch.tensor(1.0)
    # 1 + 5 * (2 - 1) + 4 * (3 - 2) = 10
    assert combine_guidance(full, no_audio, uncond, prompt_cfg=5, audio_cfg=4).item() == 10.0
    # prompt_cfg == 1: two passes, 2 + 4 * (3 - 2) = 6
    assert combine_guidance(full, no_audio, None, prompt_cfg=1, audio_cfg=4).item() == 6.0
    assert combine_guidance(full, no_audio, uncond, prompt_cfg=1, audio_cfg=4).item() == 6.0
    # audio outside its step range: guided with the prompt, 1 + 5 * (3 - 1) = 11
    assert combine_guidance(full, None, uncond, prompt_cfg=5, audio_cfg=4).item() == 11.0
    with pytest.raises(ValueError):
        combine_guidance(full, no_audio, None, prompt_cfg=5, audio_cfg=4)


def test_passes_per_step():
    assert GuidanceConfig(5, 5).passes(0) == ("full", "no_audio", "uncond")
    assert GuidanceConfig(1, 5).passes(0) == ("full", "no_audio")
    g = GuidanceConfig(5, 5, audio_steps=(0, 20))
    assert g.passes(20) == ("full", "no_audio", "uncond") and g.passes(21) == ("full", "uncond")
    assert GuidanceConfig(1, 5, audio_steps=(3, 4)).passes(0) == ("full",)


def test_euler_integrates_constant_velocity_exactly_and_calls_every_pass():
    calls = []

    def predict(latents, timestep, name):
        calls.append((name, round(timestep.item(), 3)))
        return {"full": torch.full_like(latents, 3.0), "no_audio": torch.full_like(latents, 2.0),
                "uncond": torch.ones_like(latents)}[name]

    x0 = torch.randn(1, 4, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    sigmas = flow_match_sigmas(4, 5.0)
    out = sample_euler(guided_model_fn(predict, GuidanceConfig(5, 4)), x0, sigmas)
    # the guided velocity is 10 at every step; sum of (sigma_next - sigma) is -1
    torch.testing.assert_close(out, x0 - 10.0)
    assert len(calls) == 12 and calls[0] == ("full", 1000.0)
    assert calls[3][1] == pytest.approx(1000 * sigmas[1].item(), abs=1e-3)
