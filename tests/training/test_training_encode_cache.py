"""The frozen-encode cache: same loss as encoding every step, hits on the second epoch, kept on disk."""

from __future__ import annotations

import torch
from training_helpers import one_thread, synthetic_batch, tiny_module  # noqa: F401

from fantasytalking.training.encode_cache import EncodeCache, clip_digest


def _loss(module, batch, seed=0):
    return module.compute_loss(batch, torch.Generator().manual_seed(seed)).loss


def test_cached_encodes_give_the_same_loss_and_hit(tmp_path):
    batch = synthetic_batch(2)
    plain = tiny_module()
    cached = tiny_module(objective={"cache_encodes": True, "cache_dir": str(tmp_path / "cache")})
    cached.load_state_dict(plain.state_dict())
    reference = _loss(plain, batch)
    first = _loss(cached, batch)  # miss: encodes and stores
    second = _loss(cached, batch)  # hit
    torch.testing.assert_close(first, reference)
    torch.testing.assert_close(second, reference)
    cache = cached._encode_cache()
    assert cache is not None and len(cache) == 2 and cache.hits == 2
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 2

    # A new process (stage two) reads the entries from disk instead of encoding again.
    again = tiny_module(objective={"cache_encodes": True, "cache_dir": str(tmp_path / "cache")})
    again.load_state_dict(plain.state_dict())

    def fail(*args, **kwargs):
        raise AssertionError("encoded although the cache holds the clip")

    again.pipe.encode_video = fail
    again.pipe.encode_condition = fail
    torch.testing.assert_close(_loss(again, batch), reference)


def test_digest_depends_on_pixels_window_and_salt():
    video = torch.rand(3, 5, 8, 8)
    assert clip_digest(video) == clip_digest(video.clone())
    assert clip_digest(video) != clip_digest(video[:, :4])
    changed = video.clone()
    changed[0, 0, 0, 0] += 1e-3
    assert clip_digest(video) != clip_digest(changed)
    assert clip_digest(video, "vae-a") != clip_digest(video, "vae-b")


def test_damaged_entry_is_recomputed(tmp_path):
    cache = EncodeCache(tmp_path)
    key = cache.key(torch.zeros(3, 1, 2, 2))
    (tmp_path / f"{key}.pt").write_bytes(b"not a tensor file")
    assert cache.get(key) is None and cache.misses == 1
    cache.put(key, {"latents": torch.ones(2)})
    assert torch.equal(EncodeCache(tmp_path).get(key)["latents"], torch.ones(2))
    assert not list(tmp_path.glob("*.tmp"))


def test_cache_refuses_posterior_samples():
    import pytest

    from fantasytalking.errors import InputError

    module = tiny_module(objective={"cache_encodes": True, "sample_latents": True})
    with pytest.raises(InputError, match="sample_latents"):
        _loss(module, synthetic_batch(1))
