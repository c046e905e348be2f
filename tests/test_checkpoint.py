"""Checkpoint files: one .npz archive (arrays + meta.json) round trip, no pickle, atomic writes, the old
two-file layout still read, and clear errors when damaged."""
import json
import os

import numpy as np
import pytest

from tinyrnn import checkpoint
from tinyrnn.errors import TinyRNNError


def make(tmp_path, name="last"):
    arrays = {"model/w": np.arange(6, dtype=np.float32).reshape(2, 3), "model/b": np.ones(3, np.float64)}
    optimizer = {"type": "Adam", "hyper": {"lr": 0.1, "betas": [0.9, 0.999]}, "steps": [3, 3],
                 "state": {"0.m": np.full((2, 3), 0.5, np.float32), "1.m": np.zeros(3)}}
    meta = {"step": 7, "vocab": "ab你🙂", "optimizer": checkpoint.pack(optimizer, arrays, "optim"),
            "rng": {"state": {"state": 2 ** 100 + 5}}}
    stem = str(tmp_path / name)
    checkpoint.save(stem, arrays, meta)
    return stem, arrays, optimizer


def test_round_trip(tmp_path):
    stem, arrays, optimizer = make(tmp_path)
    meta, loaded = checkpoint.load(stem)
    assert meta["step"] == 7 and meta["vocab"] == "ab你🙂" and meta["version"] == checkpoint.VERSION
    assert meta["rng"]["state"]["state"] == 2 ** 100 + 5          # big ints survive JSON
    for k, v in arrays.items():
        assert loaded[k].dtype == v.dtype and np.array_equal(loaded[k], v)
    restored = checkpoint.unpack(meta["optimizer"], loaded)
    assert restored["hyper"] == optimizer["hyper"] and restored["steps"] == [3, 3]
    assert np.array_equal(restored["state"]["0.m"], optimizer["state"]["0.m"])
    # The .npz holds only plain arrays: it loads with pickle disabled.
    with np.load(stem + ".npz", allow_pickle=False) as z:
        assert set(z.files) == set(loaded) | {checkpoint.META_MEMBER}
        assert json.loads(z[checkpoint.META_MEMBER])["step"] == 7
    # The JSON beside it is a readable copy, never required.
    with open(stem + ".json", encoding="utf-8") as f:
        assert json.load(f)["format"] == checkpoint.FORMAT
    os.remove(stem + ".json")
    assert checkpoint.load(stem)[0]["step"] == 7


def test_pack_handles_non_string_keys_and_tuples():
    arrays = {}
    packed = checkpoint.pack({"a": {0: np.ones(2), 1: (1, 2.5)}}, arrays, "p")
    json.dumps(packed)
    back = checkpoint.unpack(json.loads(json.dumps(packed)), arrays)
    assert np.array_equal(back["a"][0], np.ones(2)) and back["a"][1] == [1, 2.5]


def test_atomic_write_leaves_no_temp_files_and_replaces(tmp_path):
    make(tmp_path)
    make(tmp_path)        # overwrite
    assert sorted(os.listdir(tmp_path)) == ["last.json", "last.npz"]
    path = tmp_path / "x.bin"
    checkpoint.atomic_write(str(path), b"one")
    checkpoint.atomic_write(str(path), b"two")
    assert path.read_bytes() == b"two" and sorted(os.listdir(tmp_path)) == ["last.json", "last.npz", "x.bin"]


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "f.bin"
    checkpoint.atomic_write(str(path), b"old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        checkpoint.atomic_write(str(path), b"new")
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["f.bin"]


def test_resolve_directory_and_extensions(tmp_path):
    make(tmp_path, "last")
    assert checkpoint.resolve(str(tmp_path)) == str(tmp_path / "last")
    make(tmp_path, "best")
    assert checkpoint.resolve(str(tmp_path)) == str(tmp_path / "best")      # best preferred
    assert checkpoint.resolve(str(tmp_path / "last.npz")) == str(tmp_path / "last")
    assert checkpoint.resolve(str(tmp_path / "last.json")) == str(tmp_path / "last")
    with pytest.raises(TinyRNNError, match="no checkpoint"):
        checkpoint.resolve(str(tmp_path / "nope"))
    os.mkdir(tmp_path / "empty_dir")
    with pytest.raises(TinyRNNError, match="no checkpoint in"):
        checkpoint.resolve(str(tmp_path / "empty_dir"))


def test_truncated_or_flipped_archive(tmp_path):
    stem, _, _ = make(tmp_path)
    data = open(stem + ".npz", "rb").read()
    open(stem + ".npz", "wb").write(data[: len(data) // 2])
    with pytest.raises(TinyRNNError, match="truncated"):
        checkpoint.load(stem)
    flipped = bytearray(data)
    flipped[200] ^= 0xFF                      # inside the first array: the zip's CRC-32 catches it
    open(stem + ".npz", "wb").write(bytes(flipped))
    with pytest.raises(TinyRNNError, match="corrupt"):
        checkpoint.load(stem)


def save_v1(stem, arrays, meta):
    """The old two-file layout (version 1), as tinyrnn 0.1 wrote it."""
    import hashlib
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    data = buf.getvalue()
    meta = {"format": checkpoint.FORMAT, "version": 1, "weights_sha256": hashlib.sha256(data).hexdigest(), **meta}
    open(stem + ".npz", "wb").write(data)
    open(stem + ".json", "w", encoding="utf-8").write(json.dumps(meta))
    return stem


def test_reads_the_old_two_file_layout(tmp_path):
    arrays = {"model/w": np.arange(6, dtype=np.float32)}
    stem = save_v1(str(tmp_path / "last"), arrays, {"step": 3, "vocab": "ab"})
    meta, loaded = checkpoint.load(stem)
    assert meta["step"] == 3 and np.array_equal(loaded["model/w"], arrays["model/w"])
    assert checkpoint.resolve(str(tmp_path)) == stem
    truncated = open(stem + ".npz", "rb").read()[:50]
    open(stem + ".npz", "wb").write(truncated)
    with pytest.raises(TinyRNNError, match="do not match"):
        checkpoint.load(stem)


def test_corrupt_weights_with_matching_checksum(tmp_path):
    stem = save_v1(str(tmp_path / "last"), {"model/w": np.ones(2)}, {"step": 1})
    junk = b"this is not a zip file"
    open(stem + ".npz", "wb").write(junk)
    meta = json.load(open(stem + ".json"))
    import hashlib

    meta["weights_sha256"] = hashlib.sha256(junk).hexdigest()
    json.dump(meta, open(stem + ".json", "w"))
    with pytest.raises(TinyRNNError, match="corrupt"):
        checkpoint.load(stem)


def test_corrupt_json_and_other_version(tmp_path):
    stem = save_v1(str(tmp_path / "last"), {"model/w": np.ones(2)}, {"step": 1})
    text = open(stem + ".json").read()
    open(stem + ".json", "w").write(text[:40])
    with pytest.raises(TinyRNNError, match="corrupt or truncated"):
        checkpoint.load(stem)
    stem = save_v1(str(tmp_path / "last"), {"model/w": np.ones(2)}, {"step": 1})
    meta = json.load(open(stem + ".json"))
    meta["version"] = 99
    json.dump(meta, open(stem + ".json", "w"))
    with pytest.raises(TinyRNNError, match="format version 99"):
        checkpoint.load(stem)
    json.dump({"hello": 1}, open(stem + ".json", "w"))
    with pytest.raises(TinyRNNError, match="not a tinyrnn checkpoint"):
        checkpoint.load(stem)


def test_missing_weights(tmp_path):
    stem = save_v1(str(tmp_path / "last"), {"model/w": np.ones(2)}, {"step": 1})
    os.remove(stem + ".npz")
    with pytest.raises(TinyRNNError, match="cannot read checkpoint weights"):
        checkpoint.load(stem)
    stem, _, _ = make(tmp_path, "best")
    os.remove(stem + ".npz")                   # the readable copy alone is not a checkpoint
    with pytest.raises(TinyRNNError, match="not a tinyrnn checkpoint|do not match|cannot read"):
        checkpoint.load(stem)
