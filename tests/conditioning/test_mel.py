import numpy as np
import pytest
import torch

from fantasytalking.conditioning import AudioConditioner
from fantasytalking.conditioning.mel import MelFeatureExtractor, MelSpeechEncoder
from fantasytalking.errors import InputError


@pytest.mark.parametrize("seconds", [0.5, 81 / 25, 81 / 23, 81 / 16])
def test_token_count_equals_wav2vec2(seconds):
    samples = int(seconds * 16000)
    encoder = MelSpeechEncoder()
    features = encoder(torch.randn(1, samples)).last_hidden_state
    assert features.shape == (1, (samples - 400) // 320 + 1, 80) == (1, encoder.num_tokens(samples), 80)
    assert torch.isfinite(features).all()


def test_mel_front_end_in_the_audio_conditioner_gives_the_release_windows():
    cond = AudioConditioner(80, 16, encoder=MelSpeechEncoder(), feature_extractor=MelFeatureExtractor())
    t = np.arange(int(81 / 23 * 16000)) / 16000
    speech = (np.sin(2 * np.pi * 300 * t) * (t > 1.0)).astype(np.float32)  # silence, then a tone
    features = cond.extract_features(speech)
    assert features.shape == (1, 175, 80)
    # the tone raises the energy of the mel bands around 300 Hz after 1 s, not before
    assert features[0, 60:, :20].mean() > features[0, :40, :20].mean() + 5
    out = cond(features, num_frames=81)
    assert out.tokens.shape == (1, 21, 17, 16) and out.key_lengths.tolist()[:2] == [6, 14]
    with pytest.raises(InputError):
        MelFeatureExtractor()([speech], sampling_rate=22050)
