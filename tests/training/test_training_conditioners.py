"""Face and motion conditioners: shapes, nulls, statistics, and zero-initialised = backbone unchanged."""

from __future__ import annotations

import pytest
import torch
from tests.helpers import TEXT_LEN, TINY_WAN, tiny_inputs, tiny_pair
from training_helpers import one_thread  # noqa: F401 (autouse fixture)

from fantasytalking.conditioning import ConditioningStack, FaceConditioner, MotionConditioner
from fantasytalking.errors import InputError
from fantasytalking.training import attach_face, attach_motion


def test_face_tokens_shape_and_dim_check():
    face = FaceConditioner(face_dim=128, dim=32, num_queries=4, num_layers=2, num_heads=2)
    out = face(torch.randn(3, 128))
    assert out.tokens.shape == (3, 4, 32) and out.scale == 0.5  # the paper's l2
    assert face(torch.randn(3, 5, 128)).tokens.shape == (3, 4, 32)  # several feature tokens
    assert face.null(out) is out  # unguided: the identity stays in every pass, like the image
    guided = FaceConditioner(face_dim=128, dim=32, num_queries=4, num_layers=1, num_heads=2, guided=True)
    assert guided.null(guided(torch.randn(3, 128))).scale == 0.0  # guided: the branch off
    with pytest.raises(InputError, match=r"512.*128-d.*dlib"):
        face(torch.randn(3, 512))
    assert not any(k.startswith("encoder") for k in face.state_dict())  # the face encoder is not a weight


def test_face_feature_tokens_give_the_qformer_several_keys_per_vector():
    face = FaceConditioner(face_dim=16, dim=8, num_queries=3, num_layers=1, num_heads=2, feature_tokens=4)
    assert face.token_dim == 8 and face.input_proj.out_features == 32
    seen = {}
    face.layers[0].register_forward_hook(lambda mod, args, out: seen.update(features=args[1].shape))
    assert face(torch.randn(2, 16)).tokens.shape == (2, 3, 8)
    assert seen["features"] == (2, 4, 8)  # one vector -> 4 keys of width C
    assert face.config()["feature_tokens"] == 4
    assert "feature_tokens" not in FaceConditioner(face_dim=16, dim=8, num_heads=2).config()  # older configs: 1
    rebuilt = FaceConditioner(**face.config())
    rebuilt.load_state_dict(face.state_dict(), strict=True)
    with pytest.raises(ValueError, match="feature_tokens"):
        FaceConditioner(face_dim=16, dim=8, num_heads=2, feature_tokens=0)


def test_face_standardize_input_reads_standardised_features():
    face = FaceConditioner(face_dim=6, dim=8, num_queries=2, num_layers=1, num_heads=2, feature_tokens=2)
    before = torch.nn.Linear(6, 16)
    before.load_state_dict(face.input_proj.state_dict())
    mean, std = torch.rand(6), torch.rand(6) + 0.5
    face.standardize_input(mean, std)
    x = torch.randn(3, 6)
    assert torch.allclose(face.input_proj(x), before((x - mean) / std), atol=1e-5)
    with pytest.raises(InputError, match="do not fit 6-d"):
        face.standardize_input(torch.zeros(5), torch.ones(5))


def test_face_embed_uses_the_given_encoder():
    class Encoder:
        def encode(self, image, landmarks):
            return image.mean(axis=(0, 1)).repeat(4)[:8]

    face = FaceConditioner(face_dim=8, dim=16, num_heads=2, encoder=Encoder())
    import numpy as np

    features = face.embed(np.ones((4, 4, 3), np.uint8), np.zeros((68, 2)))
    assert features.shape == (1, 8)
    assert face(features).tokens.shape == (1, 16, 16)


def test_motion_embedding_statistics_and_null():
    motion = MotionConditioner(embed_dim=24, hidden_dim=16)
    out = motion(torch.tensor([[0.1, 0.9], [1.0, 0.0]]))
    assert out.time_embedding.shape == (2, 24)
    assert torch.count_nonzero(out.time_embedding) == 0  # zero-initialised last layer
    assert motion(None, batch_size=3).time_embedding.shape == (3, 24)  # default 0.5 / 0.5
    assert motion.null(out) is out  # not guided: the motion stays in every pass
    guided = MotionConditioner(embed_dim=24, guided=True)
    assert torch.count_nonzero(guided.null(guided(torch.rand(2, 2))).time_embedding) == 0
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        motion(torch.tensor([[1.5, 0.2]]))

    motion.set_statistics_from({"face": {"p1": 1.0, "p99": 3.0}, "body": {"p1": 0.0, "p99": 0.5}})
    norm = motion.normalise(torch.tensor([[2.0, 1.0], [0.0, 0.25]]))
    torch.testing.assert_close(norm, torch.tensor([[0.5, 1.0], [0.0, 0.5]]))
    # the statistics are buffers: saved with the weights
    state = motion.state_dict()
    torch.testing.assert_close(state["raw_low"], torch.tensor([1.0, 0.0]))
    fresh = MotionConditioner(embed_dim=24, hidden_dim=16)
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh.normalise(torch.tensor([[2.0, 1.0]])), norm[:1])
    fresh.set_statistics([1.0, 0.0], [1.0, 1.0])  # degenerate face range -> 0.5, as the datasets do
    assert fresh.normalise(torch.tensor([[7.0, 0.5]])).tolist() == [[0.5, 0.5]]


def test_motion_gain_extrapolates_from_the_default_embedding():
    """gain g: e(default) + g (e(m) - e(default)); 1 is the trained embedding, the default is a fixed point."""
    torch.manual_seed(0)
    motion = MotionConditioner(embed_dim=24, hidden_dim=16, default=(0.4, 0.6))
    torch.nn.init.normal_(motion.out[1].weight)  # a trained-like (non-zero) last layer
    m = torch.tensor([[0.1, 0.9], [1.0, 0.0]])
    plain = motion(m).time_embedding  # (2, 24)
    centre = motion(torch.tensor([[0.4, 0.6]] * 2)).time_embedding
    assert not torch.allclose(plain, centre)
    assert torch.equal(motion(m, gain=1.0).time_embedding, plain)
    torch.testing.assert_close(motion(m, gain=8.0).time_embedding, centre + 8.0 * (plain - centre))
    torch.testing.assert_close(motion(m, gain=0.0).time_embedding, centre)  # 0: the request is ignored
    assert torch.equal(motion(None, batch_size=2, gain=8.0).time_embedding, centre)  # the default stays put
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(InputError, match="motion gain"):
            motion(m, gain=bad)


def test_motion_request_scale_maps_requests_to_the_training_clips_quantiles():
    """Requests are quantiles of the training clips' motion: 0.5 is the median clip's label, not label 0.5."""
    torch.manual_seed(0)
    motion = MotionConditioner(embed_dim=24, hidden_dim=16)
    torch.nn.init.normal_(motion.out[1].weight)
    requests = torch.tensor([[0.1, 0.9], [0.5, 0.5], [1.0, 0.0]])
    assert motion.request_scale is None and torch.equal(motion.labels(requests), requests)  # no table: as is
    assert "request_scale" not in motion.config()
    # heavy-tailed raw intensities (variances): 0, 1, 4, 9, 16 for the face; 0, 2, 4, 6, 8 for the body
    stats = {"face": {"p1": 0.0, "p99": 16.0, "quantiles": [0.0, 1.0, 4.0, 9.0, 16.0]},
             "body": {"p1": 0.0, "p99": 8.0, "quantiles": [0.0, 2.0, 4.0, 6.0, 8.0]}}  # fmt: skip
    motion.set_statistics_from(stats)
    torch.testing.assert_close(motion.request_scale, torch.tensor(
        [[0.0, 0.0], [1 / 16, 0.25], [0.25, 0.5], [9 / 16, 0.75], [1.0, 1.0]], dtype=torch.float64))
    # piecewise linear between the table's requests k / 4; the median request gets the median clip's label
    torch.testing.assert_close(motion.labels(requests), torch.tensor(
        [[0.4 * 1 / 16, 0.9], [0.25, 0.5], [1.0, 0.0]]))  # fmt: skip
    torch.testing.assert_close(motion.default_labels(), torch.tensor([[0.25, 0.5]]))
    # the default and the gain's centre are the default REQUEST's labels
    centre = motion(torch.tensor([[0.25, 0.5]])).time_embedding
    torch.testing.assert_close(motion(None).time_embedding, centre)
    torch.testing.assert_close(motion(None, gain=4.0).time_embedding, centre)
    # a config entry: rebuilt from config() with the same weights, the same labels
    rebuilt = MotionConditioner(**motion.config())
    rebuilt.load_state_dict(motion.state_dict(), strict=True)
    torch.testing.assert_close(rebuilt.labels(requests), motion.labels(requests))
    # a stats.json without quantiles (written before them) leaves the scale as it is
    motion.set_statistics_from({"face": {"p1": 0.0, "p99": 16.0}, "body": {"p1": 0.0, "p99": 8.0}})
    assert motion.request_scale is not None
    motion.set_request_scale(None)
    assert torch.equal(motion.labels(requests), requests)
    for bad, match in (([[0.0, 0.0], [0.5, 0.6], [0.4, 1.0]], "non-decreasing"), ([[0.0, 0.0]], r"K \+ 1 >= 2"),
                       ([[0.0, 0.0], [1.5, 1.0]], r"in \[0, 1\]"), ([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]], r"got \(2, 3\)"),
                       ("abc", "table of numbers")):  # fmt: skip
        with pytest.raises(InputError, match=match):
            motion.set_request_scale(bad)
    with pytest.raises(InputError, match="different lengths"):
        motion.set_statistics_from({"face": {"p1": 0.0, "p99": 1.0, "quantiles": [0.0, 0.5, 1.0]},
                                    "body": {"p1": 0.0, "p99": 1.0, "quantiles": [0.0, 1.0]}})  # fmt: skip
    with pytest.raises(InputError, match="for one of face/body only \\(none for body\\)"):
        motion.set_statistics_from({"face": {"p1": 0.0, "p99": 1.0, "quantiles": [0.0, 1.0]},
                                    "body": {"p1": 0.0, "p99": 1.0}})  # fmt: skip
    with pytest.raises(InputError, match="not lists of numbers"):
        motion.set_statistics_from({"face": {"p1": 0.0, "p99": 1.0, "quantiles": [0.0, "x"]},
                                    "body": {"p1": 0.0, "p99": 1.0, "quantiles": [0.0, 1.0]}})  # fmt: skip
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        motion.labels(torch.tensor([[1.2, 0.0]]))


def test_quantile_table_reads_stats_json_once_for_both_callers():
    """``quantile_table`` is the one reader of stats.json's quantiles (the conditioner and the export use it)."""
    from fantasytalking.conditioning.motion import quantile_table

    assert quantile_table({"face": {"p1": 0.0}, "body": {"p1": 0.0}}) is None  # written before the tables
    table = quantile_table({"face": {"quantiles": [0, 1, 4]}, "body": {"quantiles": ["0", 2.0, 8]}})
    torch.testing.assert_close(table, torch.tensor([[0.0, 0.0], [1.0, 2.0], [4.0, 8.0]], dtype=torch.float64))
    with pytest.raises(InputError, match=r"different lengths \(3 and 2\)"):
        quantile_table({"face": {"quantiles": [0, 1, 4]}, "body": {"quantiles": [0, 1]}})
    with pytest.raises(InputError, match="none for face"):
        quantile_table({"face": {"p1": 0.0}, "body": {"quantiles": [0, 1]}})


def test_motion_dropout_zero_by_default():
    motion = MotionConditioner(embed_dim=8)
    cond = motion(torch.rand(4, 2))
    assert motion.drop(cond, torch.Generator().manual_seed(0)) is cond


@torch.no_grad()
def test_zero_initialised_face_and_motion_leave_the_backbone_unchanged():
    _, model = tiny_pair()
    stack = ConditioningStack()
    x = tiny_inputs(frames=3)
    before = model(**x)
    attach_face(model, stack, {"face_dim": 128, "dim": 32, "num_queries": 4, "num_layers": 1, "num_heads": 2})
    motion = attach_motion(model, stack, {"hidden_dim": 16})
    assert motion.embed_dim == TINY_WAN["num_attention_heads"] * TINY_WAN["attention_head_dim"]
    conditions = stack({"face": {"features": torch.randn(1, 128)}, "motion": {"intensities": torch.tensor([[0.3, 0.8]])}})
    branches, time_embedding = stack.to_backbone(conditions)
    assert set(branches) == {"face"} and time_embedding.shape == (1, motion.embed_dim)
    after = model(**x, branches=branches, time_embedding=time_embedding)
    assert torch.equal(before, after)  # bit for bit
    # and once trained (non-zero), both change it
    for processor in model.processors:
        torch.nn.init.normal_(processor.branches["face"].k_proj.weight)
        torch.nn.init.normal_(processor.branches["face"].v_proj.weight)
    torch.nn.init.normal_(motion.out[1].weight)
    branches, time_embedding = stack.to_backbone(stack({"face": {"features": torch.randn(1, 128)},
                                                        "motion": {"intensities": torch.tensor([[0.3, 0.8]])}}))
    assert not torch.allclose(model(**x, branches=branches), before)
    assert not torch.allclose(model(**x, time_embedding=time_embedding), before)
    assert x["encoder_hidden_states"].shape[1] == TEXT_LEN
