"""All of FantasyTalking's models from resolved weight paths (what ``FantasyTalkingPipeline.from_pretrained`` uses).

Precision policy: the DiT and the umT5 encoder take ``dtype`` (bfloat16 on a GPU); the VAE, the CLIP image
encoder and wav2vec2 stay float32, as diffusers' Wan I2V examples load VAE and CLIP (they are small next to the
DiT, and the VAE is sensitive to precision). The audio projector stays float32, as in the release.
"""

from __future__ import annotations

from typing import Any

import torch

from .audio import load_wav2vec2
from .fantasytalking_ckpt import check_fantasytalking_compatible, load_fantasytalking_state
from .files import read_json
from .image_encoder import load_image_encoder
from .resolve import WeightPaths
from .text_encoder import load_text_encoder
from .wan import load_wan_transformer, load_wan_vae

__all__ = ["build_pipeline_components"]

DEFAULT_TEXT_LEN = 512  # umT5 prompt length Wan pads to (the stock processor splits image/text at total - 512)


def build_pipeline_components(
    paths: WeightPaths, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> dict[str, Any]:
    """Load and assemble the pipeline's components.

    Returns ``transformer`` (``FantasyTalkingTransformer`` with the audio branch loaded), ``conditioning``
    (a ``ConditioningStack`` holding the ``AudioConditioner`` with wav2vec2 and the projector loaded), ``vae``,
    ``text_encoder``, ``tokenizer``, ``image_encoder``, ``image_processor``. The audio weights are read and
    checked against the DiT and wav2vec2 sizes before the big models are built.
    """
    from fantasytalking.conditioning import AudioConditioner, ConditioningStack
    from fantasytalking.models import FantasyTalkingTransformer

    audio_state = load_fantasytalking_state(paths.fantasytalking)
    source = f"the FantasyTalking weights in {paths.fantasytalking}"

    wav2vec, extractor = load_wav2vec2(paths.wav2vec, dtype=torch.float32, device=device)
    dit = load_wan_transformer(paths.wan, dtype=dtype, device=device)
    check_fantasytalking_compatible(
        audio_state,
        num_layers=dit.config.num_layers,
        model_dim=dit.config.num_attention_heads * dit.config.attention_head_dim,
        audio_dim=wav2vec.config.hidden_size,
        source=source,
    )
    proj_dim = audio_state["proj_model.proj.weight"].shape[0]  # [P, A]
    text_len = DEFAULT_TEXT_LEN
    if paths.wan_layout == "original":
        text_len = int(read_json(paths.wan / "config.json").get("text_len", DEFAULT_TEXT_LEN))
    transformer = FantasyTalkingTransformer(dit, audio_dim=proj_dim, text_len=text_len).eval()
    transformer.load_audio_branch(audio_state, source=source)

    conditioner = AudioConditioner(
        audio_in_dim=audio_state["proj_model.proj.weight"].shape[1],
        proj_dim=proj_dim,
        encoder=wav2vec,
        feature_extractor=extractor,
    )
    conditioner.load_projector(audio_state, source=source)
    # The release keeps its projector in fp32 (it is never cast with the DiT); its tokens are cast to the
    # DiT dtype by the audio k/v projections.
    conditioner.proj_model.to(device=device, dtype=torch.float32)
    del audio_state

    text_encoder, tokenizer = load_text_encoder(paths.wan, dtype=dtype, device=device)
    image_encoder, image_processor = load_image_encoder(paths.wan, dtype=torch.float32, device=device)
    vae = load_wan_vae(paths.wan, dtype=torch.float32, device=device)
    return {
        "transformer": transformer,
        "conditioning": ConditioningStack([conditioner]).eval(),
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "image_encoder": image_encoder,
        "image_processor": image_processor,
    }
