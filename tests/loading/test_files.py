"""``save_safetensors``: atomic, reproducible writes (one content, one sha256)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open

from fantasytalking.loading.files import file_sha256, save_safetensors

WRITE = r"""
import sys, torch
from fantasytalking.loading.files import save_safetensors
tensors = {"b.w": torch.arange(6.0).reshape(2, 3), "a.x": torch.ones(3, dtype=torch.float16),
           "c": torch.zeros(5, dtype=torch.int64)}
metadata = {"format": "x", "format_version": "1", "config": '{"name": "ünïcode \\"quoted\\""}', "z": "last"}
save_safetensors(tensors, sys.argv[1], metadata)
"""


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_same_content_written_by_separate_processes_has_one_sha256(tmp_path):
    """safetensors' own writer emits the metadata in hash-map order, which changes from process to process (the
    packaged demo's records name files by sha256); save_safetensors sorts it, so every write is the same bytes."""
    paths = [tmp_path / f"{i}.safetensors" for i in range(3)]  # 4 keys: 3 hash orders alike by chance 1 in 576
    for path in paths:
        subprocess.run([sys.executable, "-c", WRITE, str(path)], check=True)
    assert len({_sha(p) for p in paths}) == 1
    size = int.from_bytes(paths[0].read_bytes()[:8], "little")
    assert size % 8 == 0  # the data stays aligned
    header = json.loads(paths[0].read_bytes()[8 : 8 + size])
    assert list(header["__metadata__"]) == ["config", "format", "format_version", "z"]
    with safe_open(str(paths[0]), framework="pt") as handle:  # a valid file, tensors and metadata intact
        assert handle.metadata()["config"] == '{"name": "ünïcode \\"quoted\\""}'
        assert torch.equal(handle.get_tensor("b.w"), torch.arange(6.0).reshape(2, 3))
        assert handle.get_tensor("a.x").dtype == torch.float16 and handle.get_tensor("c").dtype == torch.int64
    assert sorted(p.name for p in tmp_path.iterdir()) == [p.name for p in paths]  # no temporary files left


def test_save_safetensors_replaces_atomically_and_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "sub" / "w.safetensors"
    save_safetensors({"a": torch.ones(2)}, target, {"format": "pt"})
    before = target.read_bytes()
    with pytest.raises(ValueError, match="contiguous"):
        save_safetensors({"a": torch.ones(2), "b": torch.ones(4)[::2]}, target, {"format": "pt"})  # not contiguous
    assert target.read_bytes() == before  # the old file is whole
    assert [p.name for p in target.parent.iterdir()] == ["w.safetensors"]
    save_safetensors({"a": torch.zeros(2)}, target)  # no metadata at all
    with safe_open(str(target), framework="pt") as handle:
        assert handle.metadata() is None and torch.equal(handle.get_tensor("a"), torch.zeros(2))


def test_a_header_of_another_length_is_rewritten_with_the_data_moved(tmp_path):
    """A header whose canonical form has another length (here: a writer that padded it more) is rewritten whole."""
    from fantasytalking.loading.files import _sort_metadata

    plain = tmp_path / "plain.safetensors"
    save_safetensors({"w": torch.arange(5.0), "i": torch.arange(3)}, plain, {"b": "2", "a": "1"})
    data = plain.read_bytes()
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    header["__metadata__"] = {"b": "2", "a": "1"}  # unsorted, as safetensors may write it
    text = json.dumps(header, separators=(",", ":")).encode() + b" " * 24  # padded beyond the alignment
    text += b" " * (-len(text) % 8)
    padded = tmp_path / "padded.safetensors"
    padded.write_bytes(len(text).to_bytes(8, "little") + text + data[8 + size :])
    _sort_metadata(padded)
    assert padded.read_bytes() == data  # the canonical bytes, the data moved with the header


def test_file_sha256_reads_in_pieces_and_names_the_bytes(tmp_path):
    path = tmp_path / "x.bin"
    data = bytes(range(256)) * 41 + b"tail"  # not a multiple of the piece size
    path.write_bytes(data)
    want = hashlib.sha256(data).hexdigest()
    assert file_sha256(path) == file_sha256(str(path), chunk=1000) == file_sha256(path, chunk=len(data)) == want
    path.write_bytes(data[:-1])
    assert file_sha256(path) != want
    with pytest.raises(FileNotFoundError):
        file_sha256(tmp_path / "missing.bin")
