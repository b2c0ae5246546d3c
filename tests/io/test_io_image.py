"""Tests for fantasytalking.io.image: loading/conversion, error paths, the model size rule, tensors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fantasytalking.errors import InputError
from fantasytalking.io.image import (
    as_image,
    check_image_size,
    image_to_tensor,
    load_image,
    resize_for_model,
    target_size,
)


def _gradient(w: int = 64, h: int = 48) -> np.ndarray:
    """A smooth RGB test pattern (uint8, H x W x 3)."""
    x = np.linspace(0, 255, w)[None, :].repeat(h, 0)
    y = np.linspace(0, 255, h)[:, None].repeat(w, 1)
    return np.stack([x, y, 255 - x], axis=-1).round().astype(np.uint8)


def _assert_one_line_naming(err: pytest.ExceptionInfo[InputError], path: Path) -> None:
    msg = str(err.value)
    assert "\n" not in msg
    assert str(path) in msg


@pytest.fixture
def rgb_png(tmp_path: Path) -> Path:
    p = tmp_path / "face.png"
    Image.fromarray(_gradient()).save(p)
    return p


# ----------------------------------------------------------------------------- size rule


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((1024, 768), (512, 384)),
        ((768, 1024), (384, 512)),  # portrait
        ((1000, 700), (512, 368)),  # 700 * 0.512 = 358.4 -> 358 -> up to 368
        ((700, 1000), (368, 512)),
        ((512, 512), (512, 512)),
        ((1920, 1080), (512, 288)),
        ((300, 200), (512, 352)),  # upscaled: 200 * 512/300 = 341.3 -> 341 -> 352
        ((5000, 10), (512, 16)),  # never collapses to 0
    ],
)
def test_target_size_rule(size: tuple[int, int], expected: tuple[int, int]) -> None:
    assert target_size(*size) == expected


def test_target_size_options_and_multiples() -> None:
    assert target_size(1280, 720, max_edge=832, multiple=16) == (832, 480)  # 720 * 0.65 = 468 -> 480
    assert target_size(1000, 700, max_edge=512, multiple=8) == (512, 360)
    for w, h in [(123, 457), (999, 1001), (640, 481), (4032, 3024)]:
        tw, th = target_size(w, h)
        assert tw % 16 == 0 and th % 16 == 0
        assert max(tw, th) == 512
    with pytest.raises(InputError):
        target_size(0, 10)


def test_resize_for_model_and_tensor() -> None:
    img = Image.fromarray(_gradient(100, 70))
    out = resize_for_model(img)
    assert out.size == target_size(100, 70) == (512, 368)
    assert out.mode == "RGB"
    t = image_to_tensor(out)
    assert t.shape == (3, 368, 512) and t.dtype == torch.float32
    assert float(t.min()) >= -1.0 and float(t.max()) <= 1.0
    bw = Image.fromarray(np.array([[[0, 0, 0], [255, 255, 255]]], dtype=np.uint8))
    tb = image_to_tensor(bw)
    assert torch.allclose(tb[:, 0, 0], torch.full((3,), -1.0))
    assert torch.allclose(tb[:, 0, 1], torch.full((3,), 1.0))


def test_check_image_size() -> None:
    img = Image.new("RGB", (200, 100))
    check_image_size(img, 100)
    with pytest.raises(InputError, match=r"image is 200x100; the model needs at least 128 px on the shorter side"):
        check_image_size(img, 128)
    with pytest.raises(InputError, match=r"me\.png"):
        check_image_size(img, 128, path="me.png")


# ----------------------------------------------------------------------------- loading and conversion


def test_load_rgb(rgb_png: Path) -> None:
    img = load_image(rgb_png)
    assert img.mode == "RGB" and img.size == (64, 48)
    assert np.array_equal(np.asarray(img), _gradient())


def test_load_grayscale(tmp_path: Path) -> None:
    p = tmp_path / "gray.png"
    Image.fromarray(_gradient()[..., 0], mode="L").save(p)
    arr = np.asarray(load_image(p))
    assert arr.shape == (48, 64, 3)
    assert np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2])
    assert np.array_equal(arr[..., 0], _gradient()[..., 0])


def test_load_16bit_grayscale_is_rescaled(tmp_path: Path) -> None:
    p = tmp_path / "gray16.png"
    a16 = (np.linspace(0, 65535, 64)[None, :].repeat(48, 0)).round().astype(np.uint16)
    Image.fromarray(a16).save(p)
    arr = np.asarray(load_image(p))[..., 0].astype(int)
    expected = np.round(a16 / 257.0).astype(int)
    assert np.abs(arr - expected).max() <= 1  # not clipped to 255 as a plain convert("RGB") would do
    assert arr.min() == 0 and arr.max() == 255


def test_load_rgba_composited_on_white(tmp_path: Path) -> None:
    p = tmp_path / "alpha.png"
    rgba = np.zeros((48, 64, 4), dtype=np.uint8)
    rgba[..., :3] = _gradient()
    rgba[..., 3] = 255
    rgba[:, :32, 3] = 0  # left half fully transparent
    Image.fromarray(rgba, mode="RGBA").save(p)
    arr = np.asarray(load_image(p))
    assert (arr[:, :32] == 255).all()
    assert np.array_equal(arr[:, 32:], _gradient()[:, 32:])


def test_as_image_takes_paths_pil_images_and_arrays_as_a_file_is_read(tmp_path: Path) -> None:
    """A PIL image or an array gives the pixels its file would: transparency on white, not on black."""
    rgba = np.zeros((48, 64, 4), dtype=np.uint8)
    rgba[..., :3] = _gradient()
    rgba[..., 3] = 255
    rgba[:, :32, 3] = 0
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "alpha.png")
    from_file = np.asarray(as_image(tmp_path / "alpha.png"))
    assert np.array_equal(np.asarray(as_image(Image.fromarray(rgba, mode="RGBA"))), from_file)
    assert np.array_equal(np.asarray(as_image(from_file)), from_file)
    with pytest.raises(InputError, match=r"uint8 RGB of shape \(H, W, 3\)"):
        as_image(rgba)


def test_load_la_and_palette(tmp_path: Path) -> None:
    la = np.zeros((48, 64, 2), dtype=np.uint8)
    la[..., 0] = _gradient()[..., 0]
    la[..., 1] = 255
    la[:10, :, 1] = 0
    p_la = tmp_path / "la.png"
    Image.fromarray(la, mode="LA").save(p_la)
    arr = np.asarray(load_image(p_la))
    assert (arr[:10] == 255).all()

    pal = Image.fromarray(_gradient()).convert("P", palette=Image.Palette.ADAPTIVE, colors=32)
    p_pal = tmp_path / "pal.png"
    pal.save(p_pal)
    img = load_image(p_pal)
    assert img.mode == "RGB"
    assert np.array_equal(np.asarray(img), np.asarray(pal.convert("RGB")))

    pal_t = pal.copy()
    pal_t.info["transparency"] = int(np.asarray(pal)[0, 0])  # the top-left colour is transparent
    p_pt = tmp_path / "pal_t.png"
    pal_t.save(p_pt, transparency=pal_t.info["transparency"])
    arr = np.asarray(load_image(p_pt))
    assert (arr[0, 0] == 255).all()


def test_exif_orientation_applied(tmp_path: Path) -> None:
    p = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(_gradient(64, 48)).save(p, exif=exif.tobytes(), quality=95)
    assert load_image(p).size == (48, 64)


# ----------------------------------------------------------------------------- errors (one line, names the file, writes nothing)


def _broken_files(tmp_path: Path) -> dict[str, Path]:
    good = tmp_path / "good.png"
    Image.fromarray(_gradient()).save(good)
    data = good.read_bytes()
    files = {
        "text": tmp_path / "notes.png",
        "truncated": tmp_path / "truncated.png",
        "constant": tmp_path / "flat.png",
        "nearly_constant": tmp_path / "almost_flat.png",
        "empty": tmp_path / "empty.jpg",
    }
    files["text"].write_text("this is not an image\n")
    files["truncated"].write_bytes(data[: len(data) // 2])
    Image.new("RGB", (64, 48), (120, 130, 140)).save(files["constant"])
    rng = np.random.default_rng(0)
    noise = np.clip(128 + rng.normal(0, 0.6, (48, 64, 3)), 0, 255).round().astype(np.uint8)
    Image.fromarray(noise).save(files["nearly_constant"])
    files["empty"].write_bytes(b"")
    good.unlink()
    return files


@pytest.mark.parametrize("kind", ["text", "truncated", "constant", "nearly_constant", "empty"])
def test_load_errors(tmp_path: Path, kind: str) -> None:
    path = _broken_files(tmp_path)[kind]
    before = sorted(tmp_path.iterdir())
    with pytest.raises(InputError) as err:
        load_image(path)
    _assert_one_line_naming(err, path)
    assert sorted(tmp_path.iterdir()) == before


def test_load_missing_and_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nope.png"
    with pytest.raises(InputError, match="not found") as err:
        load_image(missing)
    _assert_one_line_naming(err, missing)
    with pytest.raises(InputError, match="folder") as err:
        load_image(tmp_path)
    _assert_one_line_naming(err, tmp_path)
    assert list(tmp_path.iterdir()) == []
