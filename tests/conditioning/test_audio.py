import numpy as np
import pytest
import torch
from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

from fantasytalking.conditioning import AudioConditioner, Condition, ConditioningStack, frame_windows
from fantasytalking.errors import InputError, WeightsError


def tiny_wav2vec(hidden: int = 32) -> tuple[Wav2Vec2Model, Wav2Vec2FeatureExtractor]:
    torch.manual_seed(0)
    config = Wav2Vec2Config(
        hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
    )  # the real conv kernels and strides: 320 samples per token
    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True)
    return Wav2Vec2Model(config).eval(), extractor


def test_features_rate_and_frame_windows():
    encoder, extractor = tiny_wav2vec()
    cond = AudioConditioner(32, 16, encoder=encoder, feature_extractor=extractor)
    seconds = 81 / 23
    wave = np.sin(np.linspace(0, 2000, int(seconds * 16000))).astype(np.float32)
    features = cond.extract_features(wave)
    assert features.shape == (1, 175, 32)  # the release's L for 81 frames at 23 fps
    out = cond(features, num_frames=81)
    assert out.tokens.shape == (1, 21, 17, 16)
    assert out.key_lengths.tolist() == list(frame_windows(175, 81).key_lengths)
    clip = AudioConditioner(32, 16, mode="clip", encoder=encoder, feature_extractor=extractor)
    assert clip(features, num_frames=81).tokens.shape == (1, 175, 16)


def test_encoder_width_mismatch_is_a_clear_error():
    encoder, extractor = tiny_wav2vec(hidden=48)
    with pytest.raises(WeightsError, match=r"48-d features.*expects 32-d"):
        AudioConditioner(32, 16, encoder=encoder, feature_extractor=extractor)


def test_too_short_audio():
    encoder, extractor = tiny_wav2vec()
    cond = AudioConditioner(32, 16, encoder=encoder, feature_extractor=extractor)
    with pytest.raises(InputError):
        cond.extract_features(np.zeros(100, np.float32))


def test_projector_release_names_strict():
    cond = AudioConditioner(32, 16)
    state = {k: torch.randn_like(v) for k, v in cond.projector_state_dict().items()}
    assert sorted(state) == ["proj_model.norm.bias", "proj_model.norm.weight", "proj_model.proj.weight"]
    cond.load_projector(state)
    torch.testing.assert_close(cond.proj_model.proj.weight, state["proj_model.proj.weight"])
    with pytest.raises(WeightsError, match=r"proj_model\.norm\.bias"):
        cond.load_projector({k: v for k, v in state.items() if k != "proj_model.norm.bias"})
    with pytest.raises(WeightsError, match=r"proj_model\.proj\.weight"):
        cond.load_projector({**state, "proj_model.proj.weight": torch.zeros(16, 8)})


def test_stack_null_and_dropout_rate():
    stack = ConditioningStack([AudioConditioner(32, 16, mode="clip")])
    conditions = stack({"audio": {"features": torch.randn(4, 10, 32), "num_frames": 9}})
    branches, time_emb = stack.to_backbone(conditions)
    assert branches["audio"].tokens.shape == (4, 10, 16) and time_emb is None
    assert stack.null(conditions)["audio"].scale == 0.0
    big = {"audio": Condition(tokens=torch.zeros(20000, 1, 1))}
    dropped = stack.drop(big, torch.Generator().manual_seed(0))["audio"].scale
    assert abs((dropped == 0).float().mean().item() - 0.1) < 0.01
    with pytest.raises(KeyError):
        stack({"face": {}})


def test_window_positions_start_at_zero_and_follow_each_tokens_offset():
    torch.manual_seed(0)
    plain = AudioConditioner(32, 16)
    positioned = AudioConditioner(32, 16, window_positions=17)
    positioned.proj_model.load_state_dict(plain.proj_model.state_dict())
    features = torch.randn(2, 175, 32)
    torch.testing.assert_close(positioned(features, num_frames=81).tokens, plain(features, num_frames=81).tokens)

    with torch.no_grad():
        positioned.window_position.copy_(torch.randn(17, 16))
    windows = frame_windows(175, 81)
    got = positioned(features, num_frames=81).tokens  # (2, 21, 17, 16)
    base = plain(features, num_frames=81).tokens
    table = positioned.window_position.detach()
    for i, ((start, _), length) in enumerate(zip(windows.ranges, windows.key_lengths)):
        for j in range(17):
            # packed token j of window i is audio token max(start, 0) + j, at offset (that token - start)
            want = base[:, i, j] + table[max(start, 0) + j - start] if j < length else torch.zeros(2, 16)
            torch.testing.assert_close(got[:, i, j], want)
    assert windows.key_lengths[0] == 6 and windows.ranges[0][0] == -11  # window 0: its tokens at offsets 11..16

    with pytest.raises(InputError, match="frame rate"):
        AudioConditioner(32, 16, window_positions=15)(features, num_frames=81)
    clip = AudioConditioner(32, 16, mode="clip", window_positions=17)
    assert clip(features, num_frames=81).tokens.shape == (2, 175, 16)  # clip level: no positions
