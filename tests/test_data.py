"""The data pipeline: vocabulary, chunked UTF-8 reading and its errors, caching, splits, batches."""
import os

import numpy as np
import pytest

from tinyrnn.data import StreamBatches, Vocab, index_dtype, iter_text, load_corpus, remap
from tinyrnn.errors import TinyRNNError

MIXED = "Héllo wörld! 你好，世界。🙂🚲 naïve café\nzweite Zeile — ünïcödé 😀\n" * 3


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return str(path)


def test_vocab_is_code_points_and_round_trips():
    v = Vocab(MIXED)
    assert len(v) == len(set(MIXED))
    assert list(v.chars) == sorted(set(MIXED))
    ids = v.encode(MIXED)
    assert ids.min() >= 0 and v.decode(ids) == MIXED
    assert v.encode("H€")[0] == v.index["H"] and v.encode("H€")[1] == -1
    assert v.missing("H€H¥") == "€¥"


def test_index_dtype_is_compact():
    assert index_dtype(200) == np.uint8
    assert index_dtype(256) == np.uint8
    assert index_dtype(257) == np.uint16
    assert index_dtype(70000) == np.int32
    big = Vocab(chr(c) for c in range(0x4E00, 0x4E00 + 300))
    assert big.dtype == np.uint16


@pytest.mark.parametrize("chunk_bytes", [1, 3, 7, 1 << 20])
def test_load_corpus_chunked_matches_whole(tmp_path, chunk_bytes):
    path = write(tmp_path, "mixed.txt", MIXED)
    corpus = load_corpus(path, chunk_bytes=chunk_bytes)
    assert corpus.ids.dtype == np.uint8 and len(corpus) == len(MIXED)
    assert corpus.text() == MIXED
    assert corpus.vocab == Vocab(MIXED)


def test_bom_is_dropped(tmp_path):
    path = write(tmp_path, "bom.txt", b"\xef\xbb\xbfabc")
    assert load_corpus(path).text() == "abc"


@pytest.mark.parametrize("chunk_bytes", [4, 1 << 20])
def test_invalid_utf8_names_byte_offset(tmp_path, chunk_bytes):
    data = "héllo wörld ".encode() + b"\xff" + " more text".encode()
    offset = data.index(b"\xff")
    path = write(tmp_path, "bad.txt", data)
    with pytest.raises(TinyRNNError, match=rf"byte offset {offset}\b.*--encoding-errors replace"):
        load_corpus(path, chunk_bytes=chunk_bytes)
    corpus = load_corpus(path, encoding_errors="replace", chunk_bytes=chunk_bytes)
    assert "\ufffd" in corpus.vocab.chars and corpus.text().startswith("héllo wörld \ufffd")


def test_truncated_multibyte_at_end(tmp_path):
    path = write(tmp_path, "cut.txt", "ab你".encode()[:-1])
    with pytest.raises(TinyRNNError, match=r"byte offset 2\b"):
        load_corpus(path)


def test_bad_files(tmp_path):
    with pytest.raises(TinyRNNError, match="no such file"):
        load_corpus(str(tmp_path / "missing.txt"))
    with pytest.raises(TinyRNNError, match="empty"):
        load_corpus(write(tmp_path, "empty.txt", b""))
    with pytest.raises(TinyRNNError, match="empty"):
        load_corpus(write(tmp_path, "bom-only.txt", b"\xef\xbb\xbf"))
    with pytest.raises(TinyRNNError, match=r"binary file \(NUL byte at byte offset 3\)"):
        load_corpus(write(tmp_path, "bin.dat", b"abc\x00\x01\x02"))
    with pytest.raises(TinyRNNError, match="is a directory"):
        load_corpus(str(tmp_path))


def test_unreadable_file(tmp_path):
    path = write(tmp_path, "secret.txt", "text")
    os.chmod(path, 0)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        # root reads anything: try it as an unprivileged user instead, in a forked child
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:                                   # the child: drop to nobody, report, exit
            message = b"no error"
            try:
                os.setgid(65534)
                os.setuid(65534)
                load_corpus(path)
            except TinyRNNError as e:
                message = str(e).encode()
            except BaseException as e:                 # noqa: BLE001 - reported to the parent
                message = repr(e).encode()
            os.write(write_end, message)
            os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as f:
            message = f.read().decode()
        os.waitpid(pid, 0)
        assert message == f"cannot read {path}: permission denied (check its permissions)"
    else:
        with pytest.raises(TinyRNNError, match="permission denied"):
            load_corpus(path)


def test_unopenable_path(tmp_path):
    """A path that cannot be opened for another reason (a symlink loop): one clear error too."""
    loop = tmp_path / "loop.txt"
    os.symlink(loop, loop)
    with pytest.raises(TinyRNNError, match=r"cannot read .*loop\.txt: Too many levels of symbolic links"):
        load_corpus(str(loop))
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling.txt")
    with pytest.raises(TinyRNNError, match="no such file"):
        load_corpus(str(tmp_path / "dangling.txt"))


def test_large_corpora_are_cached_and_memory_mapped(tmp_path):
    path = write(tmp_path, "big.txt", MIXED * 10)
    cache = tmp_path / "cache"
    first = load_corpus(path, cache_dir=str(cache), mmap_min_bytes=0, chunk_bytes=64)
    assert isinstance(first.ids, np.memmap)
    assert first.text() == MIXED * 10
    (entry,) = list(cache.iterdir())
    assert (entry / "ids.npy").exists() and (entry / "meta.json").exists()
    again = load_corpus(path, cache_dir=str(cache), mmap_min_bytes=0)      # served from the cache
    assert np.array_equal(np.asarray(again.ids), np.asarray(first.ids)) and again.vocab == first.vocab
    assert np.array_equal(np.asarray(first.ids), load_corpus(path).ids)   # same as the in-memory path


def test_split_takes_the_last_fraction(tmp_path):
    corpus = load_corpus(write(tmp_path, "t.txt", "abcdefghij" * 10))
    train, val = corpus.split(0.1)
    assert len(train) == 90 and len(val) == 10
    assert corpus.vocab.decode(val) == "abcdefghij"
    with pytest.raises(TinyRNNError):
        corpus.split(1.5)


def test_remap_reports_unknown_characters():
    src = Vocab("abcé")
    ids = src.encode("abéébx"[:-1])
    out, unknown = remap(ids, src, Vocab("abc"))
    assert unknown == {"é": 2}
    assert list(out) == [0, 1, -1, -1, 1]


def test_stream_batches_are_deterministic_and_contiguous():
    ids = np.arange(1000) % 251
    T, B = 8, 4
    a = StreamBatches(ids, B, T + 1, T, seed=3)
    b = StreamBatches(ids, B, T + 1, T, seed=3)
    for step in (0, 1, 5, a.steps_per_epoch, a.steps_per_epoch + 2):
        xa, new_a = a.batch(step)
        xb, new_b = b.batch(step)
        assert xa.shape == (T + 1, B) and xa.dtype == np.int64
        assert np.array_equal(xa, xb) and new_a == new_b
    assert a.batch(0)[1] and not a.batch(1)[1] and a.batch(a.steps_per_epoch)[1]
    # Within an epoch each stream continues where it stopped: the last char of a window is the next's first.
    for k in range(a.steps_per_epoch - 1):
        assert np.array_equal(a.batch(k)[0][-1], a.batch(k + 1)[0][0])
    # Stream b reads segment b of the text.
    x0 = a.batch(0)[0]
    off = a.offset(0)
    for s in range(B):
        assert np.array_equal(x0[:, s], ids[s * a.segment + off: s * a.segment + off + T + 1])
    # Different seeds give different epoch offsets somewhere.
    offsets = {StreamBatches(ids, B, T + 1, T, seed=s).offset(0) for s in range(10)}
    assert len(offsets) > 1


def test_stream_batches_too_short():
    with pytest.raises(TinyRNNError, match="need at least 40"):
        StreamBatches(np.arange(30), 4, 10, 9)


def test_iter_text_yields_all_text(tmp_path):
    path = write(tmp_path, "m.txt", MIXED)
    assert "".join(iter_text(path, chunk_bytes=5)) == MIXED
