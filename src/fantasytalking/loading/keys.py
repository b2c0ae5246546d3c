"""Key accounting for weight loading: every tensor in a file must land in the model and vice versa.

The public release's loader skips keys it does not know and leaves unknown ones at their initial values, so a
misnamed tensor loads nothing and says nothing. Everything here reports such problems as one-line
:class:`~fantasytalking.errors.WeightsError` messages that name the offending keys (the first few of each kind,
plus counts) and say what to do.

Models are built on the ``meta`` device (``accelerate.init_empty_weights``) and filled tensor by tensor
(``accelerate.utils.set_module_tensor_to_device``), so a checkpoint can be loaded piece by piece (one shard at
a time) without ever holding two full copies in host memory. A tensor that no piece provided stays on ``meta``:
:func:`check_no_meta` turns those into a "missing keys" error at the end.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
from accelerate.utils import set_module_tensor_to_device

from fantasytalking.errors import WeightsError

__all__ = [
    "assign_state_dict",
    "check_no_meta",
    "check_state_dict",
    "describe_key_problems",
    "expected_shapes",
    "format_names",
    "natural_key",
]

# How many names of each kind of problem a message lists before "... (+N more)".
_MAX_NAMES = 3

Shape = tuple[int, ...]
ShapeLike = torch.Size | Sequence[int]
Rename = Callable[[str], str]


def natural_key(name: str) -> tuple:
    """Sort key that orders ``blocks.2`` before ``blocks.10``."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def _shape(value: torch.Tensor | ShapeLike) -> Shape:
    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    return tuple(int(d) for d in value)


def _fmt_shape(shape: Shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def format_names(names: Sequence[str], limit: int = _MAX_NAMES) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... (+{len(names) - limit} more)" if len(names) > limit else "")


def describe_key_problems(
    missing: Iterable[str] = (),
    unexpected: Iterable[str] = (),
    misshaped: Iterable[tuple[str, Shape, Shape]] = (),
    *,
    rename: Rename | None = None,
) -> str:
    """One-line summary of missing / unexpected / mis-shaped keys (empty string if there are none).

    ``misshaped`` holds ``(key, expected_shape, got_shape)``. ``rename`` maps a key to the name shown to the
    user (e.g. a diffusers key back to the original checkpoint's name).
    """
    show = rename or (lambda k: k)
    # Sorted by the names shown, so "blocks.2" comes before "blocks.10" in the user's naming.
    missing = sorted((show(k) for k in missing), key=natural_key)
    unexpected = sorted((show(k) for k in unexpected), key=natural_key)
    misshaped = sorted(((show(k), e, g) for k, e, g in misshaped), key=lambda m: natural_key(m[0]))
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing ({format_names(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected ({format_names(unexpected)})")
    if misshaped:
        items = [f"{k}: expected {_fmt_shape(e)}, got {_fmt_shape(g)}" for k, e, g in misshaped]
        parts.append(f"{len(misshaped)} mis-shaped ({format_names(items)})")
    return "; ".join(parts)


def check_state_dict(
    expected: Mapping[str, ShapeLike],
    got: Mapping[str, torch.Tensor | ShapeLike],
    *,
    what: str,
    hint: str,
    rename: Rename | None = None,
) -> None:
    """Raise :class:`WeightsError` unless ``got`` has exactly the keys of ``expected``, with the same shapes.

    Args:
        expected: key -> shape the model needs.
        got: key -> tensor (or just its shape, e.g. read from a safetensors header) the checkpoint provides.
        what: names the checkpoint in the message, e.g. ``"Wan2.1 DiT weights in /w/Wan2.1-I2V-14B-720P"``.
        hint: what to do about it, e.g. ``"re-download the folder"``.
        rename: maps a key to the name shown to the user.
    """
    exp = {k: _shape(v) for k, v in expected.items()}
    have = {k: _shape(v) for k, v in got.items()}
    missing = [k for k in exp if k not in have]
    unexpected = [k for k in have if k not in exp]
    misshaped = [(k, exp[k], have[k]) for k in exp if k in have and exp[k] != have[k]]
    problems = describe_key_problems(missing, unexpected, misshaped, rename=rename)
    if problems:
        raise WeightsError(f"{what} do not match the model: {problems}. {hint}")


def expected_shapes(module: torch.nn.Module) -> dict[str, Shape]:
    """Key -> shape of everything ``module.state_dict()`` holds (works on ``meta`` modules)."""
    return {k: tuple(v.shape) for k, v in module.state_dict(keep_vars=True).items()}


def _keep_fp32(key: str, keep_in_fp32: Sequence[str]) -> bool:
    # Same rule as diffusers' loader: a module name appearing as one dotted component of the key.
    parts = key.split(".")
    return any(m in parts for m in keep_in_fp32)


def assign_state_dict(
    module: torch.nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    what: str,
    hint: str,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    keep_in_fp32: Sequence[str] | None = None,
    rename: Rename | None = None,
    expected: Mapping[str, ShapeLike] | None = None,
) -> None:
    """Fill ``module`` (typically built on ``meta``) from a possibly partial ``state_dict``.

    Every key must exist in the module with the same shape (else :class:`WeightsError` naming the keys; nothing
    is assigned in that case). Keys the dict does not cover are left as they are: call :func:`check_no_meta`
    once all pieces are in. Floating tensors are cast to ``dtype`` (except keys under a module named in
    ``keep_in_fp32``, kept in float32 as diffusers does); integer/bool tensors keep their dtype.

    ``expected`` may pass precomputed :func:`expected_shapes` of the module (saves recomputing it per shard).
    """
    exp = expected if expected is not None else expected_shapes(module)
    unexpected = [k for k in state_dict if k not in exp]
    misshaped = [
        (k, _shape(exp[k]), tuple(v.shape))
        for k, v in state_dict.items()
        if k in exp and _shape(exp[k]) != tuple(v.shape)
    ]
    problems = describe_key_problems((), unexpected, misshaped, rename=rename)
    if problems:
        raise WeightsError(f"{what} do not match the model: {problems}. {hint}")

    device = torch.device(device) if device is not None else torch.device("cpu")
    keep = tuple(keep_in_fp32 or ())
    for key, value in state_dict.items():
        if value.is_floating_point():
            target = torch.float32 if keep and _keep_fp32(key, keep) else (dtype or value.dtype)
        else:
            target = value.dtype
        new = value.to(target).contiguous()
        if device.type == "cpu" and new.untyped_storage().data_ptr() == value.untyped_storage().data_ptr():
            # Own the memory: a tensor read from a memory-mapped file would otherwise keep the whole file
            # mapped (and die with SIGBUS if the file is replaced while the model lives).
            new = new.clone()
        # Pass dtype explicitly: without it accelerate casts to the (meta) placeholder's dtype.
        set_module_tensor_to_device(module, key, device, value=new, dtype=target, clear_cache=False)


def check_no_meta(
    module: torch.nn.Module,
    *,
    what: str,
    hint: str,
    rename: Rename | None = None,
    ignore: Iterable[str] = (),
) -> None:
    """Raise :class:`WeightsError` naming every parameter/buffer of ``module`` still on ``meta`` (= missing keys)."""
    skip = set(ignore)
    left = [
        name
        for name, t in [*module.named_parameters(remove_duplicate=False), *module.named_buffers(remove_duplicate=False)]
        if t.device.type == "meta" and name not in skip
    ]
    if left:
        problems = describe_key_problems(left, rename=rename)
        raise WeightsError(f"{what} do not match the model: {problems}. {hint}")
