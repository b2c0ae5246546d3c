"""Speech conditioning: wav2vec2 features -> projector -> audio tokens (FANTASYTALKING.md 3.1-3.5)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
import torch
from torch import nn

from fantasytalking.conditioning.base import Condition, Conditioner
from fantasytalking.conditioning.windows import AudioWindows, frame_windows, gather_windows
from fantasytalking.errors import InputError, WeightsError

AlignmentMode = Literal["frame", "clip"]

# Release key names of the projector (``proj_model`` in fantasytalking_model.ckpt).
RELEASE_PROJECTOR_KEYS = ("proj_model.proj.weight", "proj_model.norm.weight", "proj_model.norm.bias")


class AudioProjModel(nn.Module):
    """The release's ``proj_model``: ``Linear(A -> P, bias=False)`` then ``LayerNorm(P)``."""

    def __init__(self, audio_in_dim: int = 768, proj_dim: int = 2048) -> None:
        super().__init__()
        self.proj = nn.Linear(audio_in_dim, proj_dim, bias=False)
        self.norm = nn.LayerNorm(proj_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(features))  # (B, L, A) -> (B, L, P)


class AudioConditioner(Conditioner):
    """Audio tokens for the ``audio`` cross-attention branch.

    Args:
        audio_in_dim: width ``A`` of the speech features (768 for wav2vec2-base).
        proj_dim: width ``P`` of the projected tokens (2048 in the release).
        mode: ``"frame"`` (each latent frame attends to its own window; the release and stage two)
            or ``"clip"`` (every visual token attends to the whole sequence; stage one).
        temporal_stride: video frames per latent frame of the VAE (4 for Wan).
        window_expand: tokens added on both sides of each window (4 in the release).
        encoder: a ``transformers.Wav2Vec2Model`` (frozen) to compute features from waveforms; not
            needed when features are given (e.g. cached in shards).
        feature_extractor: its ``Wav2Vec2FeatureExtractor`` (normalisation, sampling rate).
        dropout_p: training probability of dropping the audio (FANTASYTALKING.md section 4).
        scale: ``audio_scale`` at inference.
        window_positions: 0 (the release): a window's tokens carry no position, so a latent frame sees its
            window as an unordered set. ``W > 0`` adds a learned embedding ``(W, P)``, zero at the start, of each
            token's offset in its (unpacked) window, so a latent frame can tell which of its ``temporal_stride``
            video frames a token belongs to; ``W`` must be at least the window length (17 at 23 fps with
            wav2vec2's token rate). For speech features without context (the demo's log-mel): see
            docs/design.md. Clip level ignores it.
    """

    kind = "tokens"
    name = "audio"

    def __init__(
        self,
        audio_in_dim: int = 768,
        proj_dim: int = 2048,
        *,
        mode: AlignmentMode = "frame",
        temporal_stride: int = 4,
        window_expand: int = 4,
        encoder: nn.Module | None = None,
        feature_extractor: object | None = None,
        dropout_p: float = 0.1,
        scale: float = 1.0,
        window_positions: int = 0,
    ) -> None:
        super().__init__(dropout_p=dropout_p, scale=scale)
        if window_positions < 0:
            raise ValueError(f"window_positions must be >= 0, not {window_positions}")
        if mode not in ("frame", "clip"):
            raise ValueError(f"mode must be 'frame' or 'clip', not {mode!r}")
        self.mode: AlignmentMode = mode
        self.temporal_stride = temporal_stride
        self.window_expand = window_expand
        self.proj_model = AudioProjModel(audio_in_dim, proj_dim)
        # (W, P) offset-in-window embedding; zero-initialised so a new one leaves the model unchanged.
        self.window_position = nn.Parameter(torch.zeros(window_positions, proj_dim)) if window_positions else None
        self.encoder = encoder
        self.feature_extractor = feature_extractor
        if encoder is not None:
            self._check_encoder(encoder)
            encoder.requires_grad_(False).eval()

    @property
    def audio_in_dim(self) -> int:
        return self.proj_model.proj.in_features

    @property
    def token_dim(self) -> int:
        return self.proj_model.proj.out_features

    @property
    def window_positions(self) -> int:
        """Size of the offset-in-window embedding (0: none, as in the release)."""
        return 0 if self.window_position is None else int(self.window_position.shape[0])

    @property
    def sample_rate(self) -> int:
        return int(getattr(self.feature_extractor, "sampling_rate", 16000))

    def _check_encoder(self, encoder: nn.Module) -> None:
        width = getattr(getattr(encoder, "config", None), "hidden_size", None)
        if width is not None and width != self.audio_in_dim:
            raise WeightsError(
                f"the speech encoder gives {width}-d features but the audio projector expects {self.audio_in_dim}-d; "
                "use a wav2vec2 checkpoint of the same width as the one the FantasyTalking weights were trained with "
                "(wav2vec2-base-960h: 768)."
            )

    def train(self, mode: bool = True) -> AudioConditioner:
        super().train(mode)
        if self.encoder is not None:
            self.encoder.eval()  # frozen feature extractor: no dropout
        return self

    @torch.no_grad()
    def extract_features(self, waveform: torch.Tensor | np.ndarray) -> torch.Tensor:
        """wav2vec2 ``last_hidden_state`` of 16 kHz mono speech.

        Args:
            waveform: ``(T,)`` or ``(B, T)`` samples at :attr:`sample_rate` (all of one length).

        Returns:
            ``(B, L, A)`` features, about 50 per second, on the encoder's device.
        """
        if self.encoder is None or self.feature_extractor is None:
            raise RuntimeError("this AudioConditioner has no speech encoder; pass features instead of a waveform")
        samples = np.asarray(waveform.detach().cpu() if isinstance(waveform, torch.Tensor) else waveform, np.float32)
        if samples.ndim == 1:
            samples = samples[None]
        if samples.shape[-1] < 400:  # shorter than one wav2vec2 receptive field (25 ms at 16 kHz)
            raise InputError("the audio is too short to give speech features; give at least 0.1 s.")
        inputs = self.feature_extractor(list(samples), sampling_rate=self.sample_rate, return_tensors="pt")
        # The encoder's device and dtype: from a parameter, or a buffer for parameter-free front ends.
        anchor = next(self.encoder.parameters(), None)
        anchor = next(self.encoder.buffers(), torch.empty(0)) if anchor is None else anchor
        values = inputs.input_values.to(device=anchor.device, dtype=anchor.dtype)  # (B, T)
        return self.encoder(values).last_hidden_state  # (B, L, A)

    def forward(
        self,
        features: torch.Tensor | None = None,
        num_frames: int = 81,
        scale: float | None = None,
        *,
        waveform: torch.Tensor | np.ndarray | None = None,
    ) -> Condition:
        """Project features and arrange them for the chosen alignment.

        Args:
            features: ``(B, L, A)`` speech features of the clip ``[0, num_frames / fps]`` (e.g. cached).
            num_frames: video frames ``N`` of the clip (``4k + 1``).
            scale: branch weight (default: :attr:`scale`).
            waveform: instead of ``features``: 16 kHz speech, encoded with :meth:`extract_features`
                (inside ``forward``, so model-offload hooks place the encoder first).

        Returns:
            Frame level: tokens ``(B, F, W, P)`` and key lengths ``(F,)``. Clip level: tokens ``(B, L, P)``.
        """
        if features is None:
            if waveform is None:
                raise ValueError("give features or waveform")
            features = self.extract_features(waveform)
        parameter = self.proj_model.proj.weight
        tokens = self.proj_model(features.to(device=parameter.device, dtype=parameter.dtype))  # (B, L, P)
        scale = self.scale if scale is None else scale
        if self.mode == "clip":
            return Condition(tokens=tokens, scale=scale)
        windows = frame_windows(
            tokens.shape[1], num_frames, temporal_stride=self.temporal_stride, expand=self.window_expand
        )
        windowed, key_lengths = gather_windows(tokens, windows)  # (B, F, W, P), (F,)
        if self.window_position is not None:
            windowed = windowed + self.window_offsets(windows)  # padded keys stay masked by key_lengths
        return Condition(tokens=windowed, key_lengths=key_lengths, scale=scale)

    def window_offsets(self, windows: AudioWindows) -> torch.Tensor:
        """The offset embedding of every packed window position ``(F, W, P)``: packed token ``j`` of window ``i``
        sits at offset ``j + max(0, -start_i)`` of the window's range (zero at padded positions)."""
        table = self.window_position
        assert table is not None
        if windows.window_length > table.shape[0]:
            raise InputError(
                f"audio windows of {windows.window_length} tokens, but the window-position embedding has "
                f"{table.shape[0]}: generate at the frame rate the model was trained at (windows depend on fps)."
            )
        shift = torch.tensor([max(0, -a) for a, _ in windows.ranges], device=table.device)  # (F,)
        offsets = torch.arange(windows.window_length, device=table.device)  # (W,)
        index = (shift[:, None] + offsets[None, :]).clamp(max=windows.window_length - 1)  # (F, W)
        valid = offsets[None, :] < torch.tensor(windows.key_lengths, device=table.device)[:, None]  # (F, W)
        return table[index] * valid[..., None].to(table.dtype)  # (F, W, P)

    # ------------------------------------------------------------------ release weights

    def projector_state_dict(self) -> dict[str, torch.Tensor]:
        """The projector under the release's names (``proj_model.proj.weight``, ``proj_model.norm.*``)."""
        return {f"proj_model.{k}": v for k, v in self.proj_model.state_dict().items()}

    def load_projector(self, state: Mapping[str, torch.Tensor], *, source: str = "the audio weights") -> None:
        """Load the release's ``proj_model`` tensors; every key and shape must match."""
        expected = self.projector_state_dict()
        for key, param in expected.items():
            if key not in state:
                raise WeightsError(f"{source} have no tensor {key}; the file is not a FantasyTalking audio checkpoint.")
            if tuple(state[key].shape) != tuple(param.shape):
                raise WeightsError(
                    f"{source}: {key} has shape {tuple(state[key].shape)}, the projector expects {tuple(param.shape)} "
                    f"(speech features {self.audio_in_dim}-d -> {self.token_dim}-d tokens)."
                )
        unexpected = [k for k in state if k.startswith("proj_model.") and k not in expected]
        if unexpected:
            raise WeightsError(f"{source}: unexpected projector tensor {unexpected[0]}; the file is of another model.")
        self.proj_model.load_state_dict({k.removeprefix("proj_model."): state[k] for k in expected}, strict=True)
