import torch

from fantasytalking.conditioning import frame_windows, gather_windows


def wav2vec_tokens(seconds: float, sample_rate: int = 16000) -> int:
    """wav2vec2's conv stack: receptive field 400 samples, stride 320 (about 50 tokens per second)."""
    samples = int(seconds * sample_rate)
    return (samples - 400) // 320 + 1


def test_worked_example_81_frames_23_fps():
    assert wav2vec_tokens(81 / 23) == 175
    w = frame_windows(175, 81)
    assert w.num_latent_frames == 21
    assert w.window_length == 17
    unwidened = [(a + 4, b - 4) for a, b in w.ranges]
    assert unwidened[:4] == [(-7, 1), (1, 9), (10, 18), (18, 26)]
    assert unwidened[-1] == (165, 173)
    assert w.key_lengths == (6, 14) + (17,) * 18 + (14,)


def test_window_lengths_at_25_and_16_fps():
    w25 = frame_windows(wav2vec_tokens(81 / 25), 81)
    assert (wav2vec_tokens(81 / 25), w25.window_length) == (161, 15)
    # tpf = 161/81; half = int(4*tpf/2) = 3; first window [-(6-1), 1] widened to [-9, 5] -> 6 valid
    assert w25.key_lengths[:3] == (6, 12, 15) and w25.key_lengths[-1] == 12
    w16 = frame_windows(wav2vec_tokens(81 / 16), 81)
    assert (wav2vec_tokens(81 / 16), w16.window_length) == (252, 21)
    assert w16.key_lengths[:3] == (7, 19, 21) and w16.key_lengths[-1] == 18


def test_gather_packs_valid_tokens_first_and_zeros_after():
    tokens = torch.arange(1, 176, dtype=torch.float32).view(1, 175, 1).repeat(2, 1, 3)  # token i holds i+1
    w = frame_windows(175, 81)
    windows, lengths = gather_windows(tokens, w)
    assert windows.shape == (2, 21, 17, 3)
    assert lengths.tolist() == list(w.key_lengths)
    # window 0 covers [-11, 5]: tokens 0..5 first, then zeros
    assert windows[0, 0, :, 0].tolist() == [1, 2, 3, 4, 5, 6] + [0] * 11
    # window 1 covers [-3, 13]: tokens 0..13
    assert windows[0, 1, :14, 0].tolist() == list(range(1, 15)) and windows[0, 1, 14:].abs().sum() == 0
    # a full window is the contiguous range
    a, b = w.ranges[5]
    assert windows[1, 5, :, 2].tolist() == list(range(a + 1, b + 2))
    # last window [161, 177]: tokens 161..174 then zeros
    assert windows[0, 20, :14, 0].tolist() == list(range(162, 176)) and windows[0, 20, 14:].abs().sum() == 0
