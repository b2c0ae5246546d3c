import pytest
import torch

from fantasytalking.conditioning import frame_windows, gather_windows
from fantasytalking.errors import WeightsError
from fantasytalking.models import BranchInput
from tests.helpers import TINY_AUDIO_DIM, randomise_audio_branch, tiny_inputs, tiny_pair


def audio_branch(frames: int = 5, video_frames: int = 17, tokens: int = 40, seed: int = 3) -> BranchInput:
    g = torch.Generator().manual_seed(seed)
    windows, lengths = gather_windows(
        torch.randn(1, tokens, TINY_AUDIO_DIM, generator=g), frame_windows(tokens, video_frames)
    )
    assert windows.shape[1] == frames
    return BranchInput(windows, lengths, 1.0)


@torch.no_grad()
def test_zero_init_and_zero_scale_equal_plain_wan_exactly():
    plain, model = tiny_pair()
    inputs = tiny_inputs()
    reference = plain(**inputs, return_dict=False)[0]
    # freshly zero-initialised audio projections, audio on
    assert torch.equal(model(**inputs, branches={"audio": audio_branch()}), reference)
    # trained (random) projections, audio_scale = 0
    randomise_audio_branch(model)
    off = audio_branch()
    off.scale = 0.0
    assert torch.equal(model(**inputs, branches={"audio": off}), reference)
    assert torch.equal(model(**inputs), reference)
    # and audio does change the output once the branch has weights
    assert not torch.allclose(model(**inputs, branches={"audio": audio_branch()}), reference)


@torch.no_grad()
@pytest.mark.parametrize("backend", [None, "native", "_native_math", "flash", "sage"])
def test_padded_audio_values_never_change_the_output(backend):
    _, model = tiny_pair()
    randomise_audio_branch(model)
    if backend is not None:
        # flash/sage cannot take a mask: the audio branch must fall back to SDPA (text/image attention
        # keep the chosen kernel, which needs a GPU, so for those only the branch runs here).
        for p in model.processors:
            p._attention_backend = backend
    inputs = tiny_inputs()
    branch = audio_branch()
    noisy = branch.tokens.clone()
    for f, n in enumerate(branch.key_lengths.tolist()):
        noisy[:, f, n:] = torch.randn_like(noisy[:, f, n:]) * 1e3
    if backend in ("flash", "sage"):
        q = torch.randn(1, 5 * 16, 2, 12)
        proc = model.processors[0]
        a = proc._branch_attention(q, branch, proc.k_proj, proc.v_proj)
        b = proc._branch_attention(q, BranchInput(noisy, branch.key_lengths, 1.0), proc.k_proj, proc.v_proj)
        assert torch.equal(a, b) and a.abs().sum() > 0
        return
    a = model(**inputs, branches={"audio": branch})
    b = model(**inputs, branches={"audio": BranchInput(noisy, branch.key_lengths, 1.0)})
    assert torch.equal(a, b)


@torch.no_grad()
def test_frame_level_matches_an_explicit_per_frame_reference():
    """Each latent frame's queries see only their window's valid keys (computed here by hand)."""
    _, model = tiny_pair()
    randomise_audio_branch(model)
    proc = model.processors[0]
    branch = audio_branch()
    q = torch.randn(1, 5 * 16, 2, 12)
    out = proc._branch_attention(q, branch, proc.k_proj, proc.v_proj).view(1, 5, 16, 2, 12)
    k = proc.k_proj(branch.tokens).view(1, 5, -1, 2, 12)
    v = proc.v_proj(branch.tokens).view(1, 5, -1, 2, 12)
    for f, n in enumerate(branch.key_lengths.tolist()):
        qf, kf, vf = q.view(1, 5, 16, 2, 12)[0, f], k[0, f, :n], v[0, f, :n]  # (16,H,D), (n,H,D)
        logits = torch.einsum("qhd,khd->hqk", qf, kf) / 12**0.5
        ref = torch.einsum("hqk,khd->qhd", logits.softmax(-1), vf)
        torch.testing.assert_close(out[0, f], ref, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_clip_level_and_per_sample_scale():
    _, model = tiny_pair()
    randomise_audio_branch(model)
    inputs = {k: torch.cat([v, v]) for k, v in tiny_inputs().items()}
    tokens = torch.randn(2, 30, TINY_AUDIO_DIM)
    both = model(**inputs, branches={"audio": BranchInput(tokens, None, 1.0)})
    dropped = model(**inputs, branches={"audio": BranchInput(tokens, None, torch.tensor([1.0, 0.0]))})
    plain = model(**inputs)
    torch.testing.assert_close(dropped[0], both[0])
    torch.testing.assert_close(dropped[1], plain[1])
    # clip-level key lengths: keys past the length are ignored
    padded = tokens.clone()
    padded[:, 20:] = 1e3
    a = model(**inputs, branches={"audio": BranchInput(tokens[:, :20], None, 1.0)})
    b = model(**inputs, branches={"audio": BranchInput(padded, torch.tensor([20, 20]), 1.0)})
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_time_embedding_offset_and_extra_branch():
    plain, model = tiny_pair()
    inputs = tiny_inputs()
    reference = plain(**inputs, return_dict=False)[0]
    dim = model.inner_dim
    assert torch.equal(model(**inputs, time_embedding=torch.zeros(1, dim)), reference)
    assert not torch.allclose(model(**inputs, time_embedding=torch.ones(1, dim)), reference)
    model.add_token_branch("face", token_dim=8)
    face = BranchInput(torch.randn(1, 4, 8), None, 0.5)
    assert torch.equal(model(**inputs, branches={"face": face}), reference)  # zero-initialised
    assert "transformer.blocks.1.attn2.processor.branches.face.k_proj.weight" in model.state_dict()


def test_audio_branch_release_names_and_strict_loading():
    _, model = tiny_pair()
    state = {k: torch.randn_like(v) for k, v in model.audio_branch_state_dict().items()}
    assert sorted(state) == [f"blocks.{i}.cross_attn.processor.{n}.weight" for i in range(2) for n in ("k_proj", "v_proj")]
    model.load_audio_branch(state)
    torch.testing.assert_close(model.processors[1].v_proj.weight, state["blocks.1.cross_attn.processor.v_proj.weight"])
    missing = dict(state)
    del missing["blocks.1.cross_attn.processor.k_proj.weight"]
    with pytest.raises(WeightsError, match=r"blocks\.1\.cross_attn\.processor\.k_proj\.weight"):
        model.load_audio_branch(missing)
    bad = dict(state)
    bad["blocks.0.cross_attn.processor.v_proj.weight"] = torch.zeros(3, 3)
    with pytest.raises(WeightsError, match=r"blocks\.0\.cross_attn\.processor\.v_proj\.weight.*\(3, 3\)"):
        model.load_audio_branch(bad)
    extra = dict(state)
    extra["blocks.2.cross_attn.processor.k_proj.weight"] = torch.zeros(24, 16)
    with pytest.raises(WeightsError, match=r"blocks\.2"):
        model.load_audio_branch(extra)
