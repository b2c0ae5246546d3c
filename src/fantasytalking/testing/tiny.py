"""Tiny random weight folders in the official layouts, for tests and smoke runs (seconds on CPU).

``make_tiny_weights(dir, layout)`` writes::

    dir/
      README.txt                        says the weights are random
      Wan2.1-I2V-14B-720P/              layout="original": Wan's file names and key names
        config.json                     Wan's DiT config (dim, num_heads, model_type "i2v", ...)
        diffusion_pytorch_model-0000{1,2}-of-00002.safetensors (+ .index.json)
        Wan2.1_VAE.pth  models_t5_umt5-xxl-enc-bf16.pth  models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth
        models_clip_...-14.pth.config.json   {"num_attention_heads": 2}: a 32-wide CLIP has no 80-d heads
        google/umt5-xxl/                tokenizer
      Wan2.1-I2V-14B-720P-Diffusers/    layout="diffusers": WanImageToVideoPipeline.save_pretrained, sharded
      wav2vec2-base-960h/               Wav2Vec2ForCTC + Wav2Vec2FeatureExtractor (16 kHz, ~50 tokens/s)
      fantasytalking_model.ckpt         release pickle layout, non-zero random values

Both layouts hold the same values for the same seed (the original one is written by converting the diffusers
components back to Wan's names with the inverse mappings of :mod:`fantasytalking.loading.mappings`), and the
folder is byte-for-byte reproducible for a seed.
"""

from __future__ import annotations

import json
import shutil
import string
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import save_file

from fantasytalking.errors import InputError
from fantasytalking.loading.fantasytalking_ckpt import fantasytalking_expected_shapes, save_fantasytalking_state
from fantasytalking.loading.hf import quiet_transformers
from fantasytalking.loading.image_encoder import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from fantasytalking.loading.mappings import (
    clip_hf_to_wan,
    diffusers_dit_key_to_wan,
    diffusers_vae_key_to_wan,
    t5_hf_key_to_wan,
)
from fantasytalking.loading.resolve import WAN_DIFFUSERS_DIR, WAN_DIR, WAV2VEC_DIR
from fantasytalking.loading.wan import WAN_CLIP_FILE, WAN_T5_FILE, WAN_TOKENIZER_DIR, WAN_VAE_FILE

__all__ = [
    "TINY_CLIP",
    "TINY_DIT",
    "TINY_FANTASYTALKING",
    "TINY_T5",
    "TINY_VAE",
    "TINY_WAV2VEC2",
    "make_tiny_weights",
]

# Sizes the project's tests rely on: keep them.
TINY_DIT = {
    "patch_size": (1, 2, 2),
    "num_attention_heads": 2,
    "attention_head_dim": 12,  # model width D = 24
    "in_channels": 36,  # 16 noisy latent + 4 mask + 16 image latent
    "out_channels": 16,
    "text_dim": 32,  # = TINY_T5 d_model
    "freq_dim": 16,
    "ffn_dim": 32,
    "num_layers": 2,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "eps": 1e-6,
    "image_dim": 32,  # = TINY_CLIP hidden_size
    "added_kv_proj_dim": 24,  # = D (image keys/values project the embedded image tokens)
    "rope_max_seq_len": 1024,
}
TINY_VAE = {  # Wan2.1 VAE structure (stride 4x8x8, 4 stages of 2 residual blocks), 8 channels at the base
    "base_dim": 8,
    "z_dim": 16,
    "dim_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_scales": [],
    "temperal_downsample": [False, True, True],
}
TINY_T5 = {
    "vocab_size": 128,  # >= the tiny tokenizer's size
    "d_model": 32,
    "d_kv": 16,
    "d_ff": 64,
    "num_layers": 2,
    "num_decoder_layers": 2,
    "num_heads": 2,
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "feed_forward_proj": "gated-gelu",
    "layer_norm_epsilon": 1e-6,
    "tie_word_embeddings": False,
    "pad_token_id": 0,
    "eos_token_id": 1,
    "decoder_start_token_id": 0,
}
TINY_CLIP = {
    "hidden_size": 32,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "image_size": 32,
    "patch_size": 16,  # 2x2 patches + class token = 5 image tokens
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-5,
    "projection_dim": 16,
}
TINY_WAV2VEC2 = {  # real conv stack (kernels 10,3,3,3,3,2,2 / strides 5,2,2,2,2,2,2 -> 320x: 50 tokens/s)
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "conv_dim": (16, 16, 16, 16, 16, 16, 16),
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 2,
    "vocab_size": 32,
}
TINY_FANTASYTALKING = {"audio_dim": 32, "proj_dim": 16, "model_dim": 24, "num_layers": 2}

_README = """These weights are RANDOM.

This folder was written by `python -m fantasytalking.testing make-tiny-weights` (layout: {layout}, seed: {seed}).
It has the file layout of the real FantasyTalking weights (Wan2.1-I2V-14B-720P, wav2vec2-base-960h,
fantasytalking_model.ckpt) with tiny random models, for tests and smoke runs. Videos made with it are noise.
"""


def _perturb_constants(module: torch.nn.Module, gen: torch.Generator) -> None:
    """Give constant-initialised tensors (norm weights = 1, biases = 0) random values, so that any mix-up of
    names in a mapping changes outputs and tests can see it."""
    with torch.no_grad():
        for _, p in sorted(module.named_parameters(), key=lambda kv: kv[0]):
            if p.numel() > 0 and bool((p == p.flatten()[0]).all()):
                p.add_(0.1 * torch.randn(p.shape, generator=gen))


def _round_to(module: torch.nn.Module, dtype: torch.dtype) -> None:
    """Round values to ``dtype`` (kept in float32), so a copy stored in ``dtype`` holds the same values."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(p.to(dtype).float())


def _build_tokenizer():
    """A small offline umT5-like tokenizer: sentencepiece-style unigram over characters, ``</s>`` appended."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "</s>", "<unk>"]  # ids 0, 1, 2 as in umT5
    chars = ["▁", *string.ascii_lowercase, *string.ascii_uppercase, *string.digits, *".,!?'\"-:;()"]
    vocab = [(s, 0.0) for s in specials] + [(c, -1.0) for c in chars]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=512
    )


def _build_components(seed: int) -> dict:
    """The tiny diffusers/transformers components of Wan2.1 I2V, plus wav2vec2 and the audio weights."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanTransformer3DModel
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        CLIPVisionModel,
        UMT5Config,
        UMT5EncoderModel,
        Wav2Vec2Config,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2ForCTC,
    )

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        transformer = WanTransformer3DModel(**TINY_DIT)
        vae = AutoencoderKLWan(**TINY_VAE)
        text_encoder = UMT5EncoderModel(UMT5Config(**TINY_T5))
        image_encoder = CLIPVisionModel(CLIPVisionConfig(**TINY_CLIP))
        wav2vec = Wav2Vec2ForCTC(Wav2Vec2Config(**TINY_WAV2VEC2))
        for module in (transformer, vae, text_encoder, image_encoder, wav2vec):
            _perturb_constants(module, gen)
        _round_to(text_encoder, torch.bfloat16)  # the original file stores umT5 in bf16

        ft = TINY_FANTASYTALKING
        shapes = fantasytalking_expected_shapes(ft["num_layers"], ft["audio_dim"], ft["proj_dim"], ft["model_dim"])
        audio_state = {}
        for key, shape in shapes.items():
            if key == "proj_model.norm.weight":
                audio_state[key] = 1 + 0.1 * torch.randn(shape, generator=gen)
            elif key == "proj_model.norm.bias":
                audio_state[key] = 0.1 * torch.randn(shape, generator=gen)
            else:  # Linear weights [out, in], non-zero so that audio visibly changes the output
                audio_state[key] = torch.randn(shape, generator=gen) / shape[1] ** 0.5

    for module in (transformer, vae, text_encoder, image_encoder, wav2vec):
        module.eval()
    return {
        "transformer": transformer,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": _build_tokenizer(),
        "image_encoder": image_encoder,
        "image_processor": CLIPImageProcessor(  # as in the Diffusers repo: shortest edge, centre crop
            size={"shortest_edge": TINY_CLIP["image_size"]},
            crop_size={"height": TINY_CLIP["image_size"], "width": TINY_CLIP["image_size"]},
            do_center_crop=True,
            resample=3,
            image_mean=OPENAI_CLIP_MEAN,
            image_std=OPENAI_CLIP_STD,
        ),
        "scheduler": UniPCMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000, flow_shift=5.0
        ),
        "wav2vec": wav2vec,
        "feature_extractor": Wav2Vec2FeatureExtractor(
            feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True, return_attention_mask=False
        ),
        "audio_state": audio_state,
    }


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in module.state_dict().items()}


def _write_wan_original(folder: Path, c: dict) -> None:
    folder.mkdir(parents=True)
    d = TINY_DIT
    dim = d["num_attention_heads"] * d["attention_head_dim"]
    _write_json(folder / "config.json", {
        "_class_name": "WanModel", "_diffusers_version": "0.30.0", "model_type": "i2v", "text_len": 512,
        "in_dim": d["in_channels"], "dim": dim, "ffn_dim": d["ffn_dim"], "freq_dim": d["freq_dim"],
        "out_dim": d["out_channels"], "num_heads": d["num_attention_heads"], "num_layers": d["num_layers"],
        "eps": d["eps"],
    })  # fmt: skip

    # DiT: Wan key names, two shards (non-block tensors + block 0 | the other blocks) and an index.
    dit = {diffusers_dit_key_to_wan(k): v for k, v in _state(c["transformer"]).items()}
    shards: list[dict[str, torch.Tensor]] = [{}, {}]
    for key, value in dit.items():
        shards[1 if key.startswith("blocks.") and not key.startswith("blocks.0.") else 0][key] = value
    weight_map = {}
    for i, shard in enumerate(shards, start=1):
        name = f"diffusion_pytorch_model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(folder / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, name))
    total = sum(v.numel() * v.element_size() for v in dit.values())
    _write_json(folder / "diffusion_pytorch_model.safetensors.index.json",
                {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))})  # fmt: skip

    # VAE: plain state dict under Wan's names.
    vae = {
        diffusers_vae_key_to_wan(k, num_res_blocks=TINY_VAE["num_res_blocks"]): v for k, v in _state(c["vae"]).items()
    }
    torch.save(vae, str(folder / WAN_VAE_FILE))

    # umT5 encoder in bf16 under Wan's names (the tied encoder.embed_tokens alias is dropped).
    t5 = {}
    for key, value in _state(c["text_encoder"]).items():
        if key != "encoder.embed_tokens.weight":
            t5[t5_hf_key_to_wan(key)] = value.to(torch.bfloat16)
    torch.save(t5, str(folder / WAN_T5_FILE))
    c["tokenizer"].save_pretrained(str(folder / WAN_TOKENIZER_DIR))

    # CLIP: vision tower under Wan's names, plus stand-ins for the parts Wan's file has and the encoder ignores.
    gen = torch.Generator().manual_seed(1234)
    w = TINY_CLIP["hidden_size"]
    clip = clip_hf_to_wan(_state(c["image_encoder"]), "vision_model.")
    clip["visual.head"] = torch.randn(w, TINY_CLIP["projection_dim"], generator=gen)
    clip["log_scale"] = torch.tensor(4.6052)
    for key, shape in {
        "textual.token_embedding.weight": (64, 16), "textual.type_embedding.weight": (1, 16),
        "textual.pos_embedding.weight": (16, 16), "textual.norm.weight": (16,), "textual.norm.bias": (16,),
        "textual.blocks.0.attn.q.weight": (16, 16), "textual.blocks.0.ffn.0.weight": (64, 16),
        "textual.head.0.weight": (16, 16), "textual.head.2.weight": (16, 16),
    }.items():  # fmt: skip
        clip[key] = torch.randn(shape, generator=gen)
    torch.save(clip, str(folder / WAN_CLIP_FILE))
    _write_json(folder / f"{WAN_CLIP_FILE}.config.json", {"num_attention_heads": TINY_CLIP["num_attention_heads"]})


def _write_wan_diffusers(folder: Path, c: dict) -> None:
    from diffusers import WanImageToVideoPipeline

    pipe = WanImageToVideoPipeline(
        tokenizer=c["tokenizer"], text_encoder=c["text_encoder"], vae=c["vae"], scheduler=c["scheduler"],
        image_processor=c["image_processor"], image_encoder=c["image_encoder"], transformer=c["transformer"],
    )  # fmt: skip
    folder.mkdir(parents=True)
    pipe.save_config(str(folder))  # model_index.json
    # Shard the DiT and the text encoder, as the real repo does; the other components are single files.
    shard = {"transformer": "40KB", "text_encoder": "40KB"}
    for name in ("transformer", "vae", "text_encoder", "tokenizer", "image_encoder", "image_processor", "scheduler"):
        component = c[name]
        kwargs = {"max_shard_size": shard[name]} if name in shard else {}
        component.save_pretrained(str(folder / name), **kwargs)


def make_tiny_weights(
    directory: str | Path, layout: Literal["original", "diffusers"] = "original", seed: int = 0
) -> Path:
    """Write a complete tiny random weights folder (see the module docstring); returns ``directory``.

    Existing contents of the three weight locations inside ``directory`` are replaced.
    """
    if layout not in ("original", "diffusers"):
        raise InputError(f"unknown layout {layout!r}: use 'original' or 'diffusers'.")
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    wan_dir = root / (WAN_DIR if layout == "original" else WAN_DIFFUSERS_DIR)
    for old in (wan_dir, root / WAV2VEC_DIR):
        if old.exists():
            shutil.rmtree(old)

    with quiet_transformers():
        c = _build_components(seed)
        if layout == "original":
            _write_wan_original(wan_dir, c)
        else:
            _write_wan_diffusers(wan_dir, c)
        c["wav2vec"].save_pretrained(str(root / WAV2VEC_DIR))
        c["feature_extractor"].save_pretrained(str(root / WAV2VEC_DIR))
    save_fantasytalking_state(c["audio_state"], root / "fantasytalking_model.ckpt")
    (root / "README.txt").write_text(_README.format(layout=layout, seed=seed), encoding="utf-8")
    return root
