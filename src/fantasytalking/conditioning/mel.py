"""A speech encoder that needs no download: log-mel features at wav2vec2's token rate.

For small models trained from scratch (the CPU demo preset, SynthTalk experiments) a fixed log-mel
front end is enough, and nothing has to be fetched. :class:`MelSpeechEncoder` and
:class:`MelFeatureExtractor` mimic the interface :class:`~fantasytalking.conditioning.AudioConditioner`
uses from transformers' ``Wav2Vec2Model`` / ``Wav2Vec2FeatureExtractor`` (``config.hidden_size``,
``encoder(input_values).last_hidden_state``, ``extractor(list_of_waveforms, sampling_rate=...,
return_tensors="pt").input_values``), and give exactly wav2vec2's number of tokens for a waveform
(window 400 samples, hop 320 at 16 kHz: ``(T - 400) // 320 + 1``), so the audio windows of
FANTASYTALKING.md section 3.5 are the same as with wav2vec2.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import torch
import torchaudio
from torch import nn

from fantasytalking.errors import InputError

# wav2vec2's convolutional front end: receptive field and stride in samples at 16 kHz (~50 tokens/s).
WAV2VEC2_WINDOW = 400
WAV2VEC2_HOP = 320


@dataclass
class MelConfig:
    """Log-mel settings; ``hidden_size`` is the feature width (the number of mel bands)."""

    hidden_size: int = 80
    sampling_rate: int = 16000
    n_fft: int = 512
    win_length: int = WAV2VEC2_WINDOW
    hop_length: int = WAV2VEC2_HOP
    f_min: float = 40.0
    f_max: float = 7600.0


class MelSpeechEncoder(nn.Module):
    """Waveforms ``(B, T)`` at 16 kHz -> log-mel features ``(B, L, n_mels)`` with ``L = (T - 400) // 320 + 1``.

    No trainable parameters: the :class:`~fantasytalking.conditioning.AudioProjModel` after it learns.
    """

    def __init__(self, config: MelConfig | None = None) -> None:
        super().__init__()
        self.config = config or MelConfig()
        c = self.config
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=c.sampling_rate, n_fft=c.n_fft, win_length=c.win_length, hop_length=c.hop_length,
            f_min=c.f_min, f_max=c.f_max, n_mels=c.hidden_size, center=False, power=2.0,
        )  # fmt: skip

    def num_tokens(self, num_samples: int) -> int:
        return max(0, (num_samples - self.config.win_length) // self.config.hop_length + 1)

    def forward(self, input_values: torch.Tensor) -> SimpleNamespace:
        c = self.config
        if input_values.shape[-1] < c.win_length:
            raise InputError(f"the audio is shorter than {c.win_length / c.sampling_rate:.3f} s; give more speech.")
        if c.n_fft > c.win_length:  # centre the 400-sample window in the FFT frame, keep wav2vec2's framing
            pad = c.n_fft - c.win_length
            input_values = nn.functional.pad(input_values, (pad // 2, pad - pad // 2))
        power = self.mel(input_values.float())  # (B, n_mels, L)
        features = torch.log(power.clamp(min=1e-10)).transpose(1, 2)  # (B, L, n_mels)
        return SimpleNamespace(last_hidden_state=features)


class MelFeatureExtractor:
    """The waveform side: per-utterance zero-mean / unit-variance normalisation, as wav2vec2's extractor."""

    def __init__(self, sampling_rate: int = 16000, do_normalize: bool = True) -> None:
        self.sampling_rate = sampling_rate
        self.do_normalize = do_normalize

    def __call__(self, waveforms: list[np.ndarray], sampling_rate: int, return_tensors: str = "pt") -> SimpleNamespace:
        if sampling_rate != self.sampling_rate:
            raise InputError(f"audio at {sampling_rate} Hz given to a {self.sampling_rate} Hz encoder; resample it.")
        batch = np.stack([np.asarray(w, np.float32) for w in waveforms])  # (B, T), all of one length
        if self.do_normalize:
            batch = (batch - batch.mean(axis=1, keepdims=True)) / np.sqrt(batch.var(axis=1, keepdims=True) + 1e-7)
        return SimpleNamespace(input_values=torch.from_numpy(batch))
