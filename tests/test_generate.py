"""Batch-1 sampling through the generation kernels agrees with the model's own forward pass."""
import os
import subprocess
import sys

import numpy as np
import pytest

from tinyrnn import manual_seed, no_grad
from tinyrnn.generate import sample_indices
from tinyrnn.models import CharRNN


def greedy_with_layers(model, prime, length):
    """The slow way: the model's forward (tape ops, no_grad), one character at a time."""
    out, state = [], None
    with no_grad():
        logits, state = model(np.asarray(prime, dtype=np.int64).reshape(-1, 1), state)
        for _ in range(length):
            i = int(np.argmax(logits.data[-1, 0]))
            out.append(i)
            logits, state = model(np.array([[i]]), state)
    return out


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("layers,hidden", [(1, 8), (2, 8), (2, 260)])
def test_kernel_sampling_matches_layers(cell, layers, hidden):
    """hidden 260: every layer is big enough to be shared between the workers (``kernels/cpu/generate.py``,
    ``_block``: on two threads units 0-143 and 144-259; the last block is not a whole number of SIMD vectors)."""
    from tinyrnn.kernels.cpu import generate as cpu_generate

    gates = {"lstm": 4, "gru": 3, "rnn": 1}[cell] * hidden
    assert (gates * hidden >= cpu_generate.PARALLEL_MIN) == (hidden == 260)    # layer 0's w_hh, the smallest
    manual_seed(0)
    model = CharRNN(vocab_size=11, cell=cell, hidden=hidden, layers=layers, embed=hidden if hidden > 8 else 5).double()
    model.eval()
    prime = [3, 1, 4, 1, 5]
    fast = np.concatenate(list(sample_indices(model, prime, 40, temperature=0.0, chunk=7)))
    assert fast.tolist() == greedy_with_layers(model, prime, 40)


@pytest.mark.parametrize("weights", ["f32", "int8"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_generation_in_row_blocks_matches_the_reference_kernel(cell, weights):
    """At hidden 260 the CPU kernel cuts every layer's products into row blocks shared between the
    threads; its samples and its final state equal the numpy reference kernel's (every gate row
    feeds the state, so a block that skips or repeats a row shows there even when argmax does not)."""
    from tinyrnn.generate import generation_weights, run_generation
    from tinyrnn.kernels import cpu, reference

    manual_seed(2)
    model = CharRNN(vocab_size=11, cell=cell, hidden=260, layers=2, embed=260).double()
    w = generation_weights(model, weights)
    prime, uniforms = np.array([3, 1, 4], np.int64), np.random.default_rng(3).random(30)
    results = []
    for K in (cpu, reference):
        h, c, out = np.zeros((2, 260)), np.zeros((2, 260)), np.empty(30, np.int64)
        run_generation(K, model, w, h, c, prime, uniforms, 1.0, 0, 1.0, out)
        results.append((out, h, c))
    (out, h, c), (ref_out, ref_h, ref_c) = results
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_allclose(h, ref_h, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(c, ref_c, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("weights", ["f32", "bf16", "int8"])
def test_a_large_head_in_row_blocks_matches_the_reference_kernel(weights):
    """A vocabulary of 300 at hidden 260: the head's product (78,000 weights) is cut into row blocks
    shared between the threads like a layer's; draws (temperature 1, 300 characters to choose from,
    and greedy) and the final state equal the numpy reference kernel's."""
    from tinyrnn.generate import generation_weights, run_generation
    from tinyrnn.kernels import cpu, reference
    from tinyrnn.kernels.cpu import generate as cpu_generate

    assert 300 * 260 >= cpu_generate.PARALLEL_MIN
    manual_seed(4)
    model = CharRNN(vocab_size=300, cell="lstm", hidden=260, layers=1, embed=16).double()
    w = generation_weights(model, weights)
    prime, uniforms = np.array([3, 1, 4], np.int64), np.random.default_rng(5).random(30)
    for temperature in (1.0, 0.0):
        results = []
        for K in (cpu, reference):
            h, c, out = np.zeros((1, 260)), np.zeros((1, 260)), np.empty(30, np.int64)
            run_generation(K, model, w, h, c, prime, uniforms, temperature, 0, 1.0, out)
            results.append((out, h))
        (out, h), (ref_out, ref_h) = results
        np.testing.assert_array_equal(out, ref_out)
        assert len(np.unique(out)) > (10 if temperature else 0)
        # bfloat16 products are summed in float32 (in another order than numpy's)
        np.testing.assert_allclose(h, ref_h, **(dict(rtol=1e-5, atol=1e-7) if weights == "bf16" else
                                                dict(rtol=1e-9, atol=1e-12)))


def test_sampling_is_seeded_and_respects_top_k():
    manual_seed(1)
    model = CharRNN(vocab_size=20, cell="lstm", hidden=16, layers=2, embed=8)
    a = np.concatenate(list(sample_indices(model, [0], 200, temperature=1.0, seed=5)))
    b = np.concatenate(list(sample_indices(model, [0], 200, temperature=1.0, seed=5)))
    np.testing.assert_array_equal(a, b)
    assert len(set(a.tolist())) > 3  # actually samples, not argmax
    one = np.concatenate(list(sample_indices(model, [0], 50, temperature=1.0, top_k=1, seed=5)))
    greedy = np.concatenate(list(sample_indices(model, [0], 50, temperature=0.0)))
    np.testing.assert_array_equal(one, greedy)


@pytest.mark.parametrize("weights", ["bf16", "int8"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_compact_sampling_is_the_model_with_rounded_weights(cell, weights):
    """sample_indices(weights="bf16" / "int8") samples what the model's own forward gives after
    ``round_to_weights`` (what `tinyrnn eval --weights` scores)."""
    from tinyrnn.generate import round_to_weights

    def model():
        manual_seed(4)
        return CharRNN(vocab_size=13, cell=cell, hidden=24, layers=2, embed=6).double()

    prime = [3, 1, 4, 1, 5]
    fast = np.concatenate(list(sample_indices(model(), prime, 40, temperature=0.0, chunk=9, weights=weights)))
    rounded = round_to_weights(model(), weights)
    assert fast.tolist() == greedy_with_layers(rounded, prime, 40)
    plain = model()
    assert not np.array_equal(plain.rnn.weight_hh_l0.data, rounded.rnn.weight_hh_l0.data)
    with pytest.raises(Exception, match="unknown --weights"):
        next(sample_indices(plain, prime, 5, weights="int4"))


def test_f32_rounding_touches_no_parameter():
    """``round_to_weights(model, "f32")`` (every plain `tinyrnn eval`) leaves each parameter's array
    the same object with the same values: on a real GPU an ``[...] =`` into a device array from a
    host array fails inside numba.cuda (`eval --device cuda` did, on an H200; the simulator allows it)."""
    from tinyrnn.generate import round_to_weights

    manual_seed(2)
    model = CharRNN(vocab_size=11, cell="lstm", hidden=12, layers=2, embed=5)
    before = {name: (p.data, p.data.copy()) for name, p in model.named_parameters()}
    for p in model.parameters():
        p.data.flags.writeable = False      # any write, even of equal values, raises here
    assert round_to_weights(model, "f32") is model
    for name, p in model.named_parameters():
        array, values = before[name]
        assert p.data is array, name
        np.testing.assert_array_equal(p.data, values, err_msg=name)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_rounding_tool_reads_like_evaluate(cell):
    """``python -m tinyrnn.bench.rounding``: one character at a time, float32, it scores what
    ``evaluate`` scores in one stream; compact weights move it a little; rounding the vectors too
    moves each format by about as much again as its weights (8-bit integers:
    ``test_int8_activations``; 8 bits of bfloat16 mantissa: ``test_bfloat16_products``)."""
    from tinyrnn.bench.rounding import bits_per_char
    from tinyrnn.generate import evaluate

    manual_seed(7)
    model = CharRNN(vocab_size=12, cell=cell, hidden=40, layers=2, embed=9)
    model.eval()
    ids = np.random.default_rng(0).integers(0, 12, 300)
    loss, count = evaluate(model, ids, batch_size=1, seq_len=50)
    f32 = bits_per_char(model, ids, "f32", False)
    assert count == 299 and abs(f32 - loss / np.log(2)) < 1e-5
    weights_only, sampled = bits_per_char(model, ids, "int8", False), bits_per_char(model, ids, "int8", True)
    assert 0 < abs(weights_only - f32) < 0.01 and 0 < abs(sampled - weights_only) < 1e-3
    weights_only, sampled = bits_per_char(model, ids, "bf16", False), bits_per_char(model, ids, "bf16", True)
    assert 0 < abs(weights_only - f32) < 1e-3 and 0 < abs(sampled - weights_only) < 1e-3


def test_rounding_tool_names_a_bad_format(capsys):
    from tinyrnn.bench.rounding import main

    with pytest.raises(SystemExit) as e:
        main(["RUN", "TEXT", "--weights", "bf16,int4"])
    assert e.value.code == 2 and "--weights 'bf16,int4': use a comma-separated list of bf16, int8" in capsys.readouterr().err


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compact_bfloat16_is_the_reference_rule_bit_for_bit(dtype):
    """generation_weights rounds its matrices to bfloat16 with the CPU kernel ``round_to_bfloat16``
    (numpy's uint64 arithmetic took 5 ms a million numbers), or ``round_to_bfloat16_pairs`` where the
    kernels read pairs (``isa.bf16_pairs``): the same 16 bits as the reference rule
    ``to_stored_bfloat16`` for every kind of number (ties to even up and down, a carry into the
    exponent, the largest finite float32 rounding to inf, denormals, signed zeros, infinities, random
    bit patterns), in a 3-D stack, into an array on a cache line. Both kernels are checked, whatever
    this build reads."""
    from tinyrnn.generate import compact
    from tinyrnn.kernels.cpu.aligned import ALIGNMENT
    from tinyrnn.kernels.cpu.generate import round_to_bfloat16, round_to_bfloat16_pairs
    from tinyrnn.kernels.reference.weight_formats import to_bfloat16, to_bfloat16_pairs, to_stored_bfloat16

    from test_kernels_recurrent import _bits

    matrix = _bits(np.random.default_rng(5), (2, 33, 70)).astype(dtype)
    stored, scales = compact(matrix, "bf16")
    assert stored.dtype == np.uint16 and stored.shape == matrix.shape and scales.shape == (2, 0)
    assert stored.ctypes.data % ALIGNMENT == 0
    assert np.array_equal(stored, to_stored_bfloat16(matrix))
    assert compact(matrix[:0], "bf16")[0].shape == (0, 33, 70)
    plain, pairs = np.zeros(matrix.size, np.int16), np.zeros((66, 70), np.int16)
    round_to_bfloat16(matrix.reshape(-1), plain)
    round_to_bfloat16_pairs(matrix.reshape(66, 70), pairs)
    assert np.array_equal(plain.view(np.uint16), to_bfloat16(matrix).reshape(-1))
    assert np.array_equal(pairs.view(np.uint16), to_bfloat16_pairs(matrix).reshape(66, 70))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compact_int8_is_the_reference_rule_bit_for_bit(dtype):
    """generation_weights rounds its matrices to int8 rows with the CPU kernel ``round_to_int8_rows``
    (numpy took 6.4 ms for c's weights): the same bytes (stored in excess 128) and float32 scales as
    the reference rule ``to_int8_rows``, on rows of every scale (normal, huge, tiny, denormal, all
    zero), quotients tied halfway (ties to even, up and down), random bit patterns, in a 3-D stack
    and an empty one, into an array on a cache line. (Its divisions are made in float64 under the
    kernels' fastmath, which may multiply by a reciprocal: these rows would catch a quotient rounded
    the other way.)"""
    from tinyrnn.generate import compact
    from tinyrnn.kernels.cpu.aligned import ALIGNMENT
    from tinyrnn.kernels.reference.weight_formats import to_int8_rows, to_stored_int8

    rng = np.random.default_rng(6)
    K = 67
    rows = [rng.standard_normal(K), rng.standard_normal(K) * 1e30, rng.standard_normal(K) * 1e-30,
            rng.standard_normal(K) * 1e-40, np.zeros(K), np.arange(K) - 33.5]     # tied quotients
    rows[-1][0] = 127                                       # scale 1: the halves tie, to even
    bits = rng.integers(0, 2 ** 32, size=(40, K), dtype=np.uint64).astype(np.uint32)
    bits[~np.isfinite(bits.view(np.float32))] = 0x3F800000  # finite numbers only: the rule's domain
    step = rng.uniform(0.5, 2, (60, 1)).astype(np.float32)          # quotients a hair off a half: where
    near = ((np.arange(K) - 33.5) * step).astype(np.float32)           # a quotient rounded off by a last
    near[:, 0] = 127 * step[:, 0]                                       # bit would round the other way
    many = np.concatenate([np.array(rows), bits.view(np.float32), near, rng.standard_normal((600, K)) *
                           np.exp(rng.uniform(-20, 20, (600, 1)))])
    matrix = many[:640].reshape(2, 320, K).astype(dtype)
    stored, scales = compact(matrix, "int8")
    want_q, want_scale = to_int8_rows(matrix)
    assert stored.dtype == np.uint8 and stored.shape == matrix.shape and scales.shape == (2, 320)
    assert stored.ctypes.data % ALIGNMENT == 0
    assert np.array_equal(stored, to_stored_int8(want_q))
    assert np.array_equal(scales.view(np.uint32), want_scale.view(np.uint32))
    assert [compact(matrix[:0], "int8")[k].shape for k in (0, 1)] == [(0, 320, K), (0, 320)]


@pytest.mark.parametrize("weights", ["f32", "bf16", "int8"])
def test_generation_weights_start_on_cache_lines(weights):
    """Every array the generation kernels read starts on a 64-byte boundary (a 512-bit load that
    straddles two cache lines costs more: ``kernels/cpu/aligned.py``), and holds what the model's
    own weights give."""
    from tinyrnn.generate import compact, generation_weights
    from tinyrnn.kernels.cpu.aligned import ALIGNMENT

    manual_seed(3)
    model = CharRNN(vocab_size=13, cell="lstm", hidden=24, layers=2, embed=7)
    w = generation_weights(model, weights)
    assert all(a.flags.c_contiguous for a in w.values())
    assert all(a.ctypes.data % ALIGNMENT == 0 for a in w.values() if a.size)   # empty scales: nothing to load
    w_hh0 = model.rnn.layer_weights(0)[1].numpy()
    stored, scales = compact(np.ascontiguousarray(w_hh0), weights)
    assert np.array_equal(w["w0"], stored) and np.array_equal(w["s0"], scales)
    np.testing.assert_allclose(w["x0"], model.embed.weight.numpy() @ model.rnn.layer_weights(0)[0].numpy().T,
                               rtol=1e-5, atol=1e-6)


def test_workers_that_never_run_at_once_still_finish_the_run():
    """The CPU kernel's workers wait for each other at every phase (``kernels/cpu/generate.py``,
    ``_phase``). A threading layer may run them one after another (TBB can), so no worker may wait
    for one that has not started. Here worker 0 of 2 runs the whole run alone (it does worker 1's
    slots too), then worker 1 starts and finds every slot done. Samples and state equal the numpy
    reference kernel's, and both workers end on the same state buffer."""
    import numba

    from tinyrnn.generate import generation_weights
    from tinyrnn.kernels import reference
    from tinyrnn.kernels.cpu import generate as G

    lstm = G.LSTM   # a constant in the compiled function: the cell is chosen when compiling

    @numba.njit
    def one_after_another(x0, w0, s0, w, s, b, w_out, s_out, b_out, h, c, prime, uniforms, out):
        model = (x0, w0, s0, w, s, b, b, w_out, s_out, b_out)
        sync, state, work, _ = G._shared_state(model, h, c, 2)
        draw = (uniforms, 1.0, 0, 1.0, out)
        first = G._worker(np.int64(0), 2, sync, lstm, False, model, state, work, prime, draw)   # int64: one compile
        second = G._worker(np.int64(1), 2, sync, lstm, False, model, state, work, prime, draw)
        G._copy_state(h, state[0][first])
        return first == second

    manual_seed(6)
    model = CharRNN(vocab_size=11, cell="lstm", hidden=40, layers=2, embed=7).double()
    w = generation_weights(model, "f32")
    prime, uniforms = np.array([3, 1, 4], np.int64), np.random.default_rng(7).random(25)
    matrices = [w[k] for k in ("x0", "w0", "s0", "w", "s", "b", "w_out", "s_out", "b_out")]
    h, c, out = np.zeros((2, 40)), np.zeros((2, 40)), np.empty(25, np.int64)
    assert one_after_another(*matrices, h, c, prime, uniforms, out)
    ref_h, ref_c, ref_out = np.zeros((2, 40)), np.zeros((2, 40)), np.empty(25, np.int64)
    reference.lstm_generate(*matrices, ref_h, ref_c, prime, uniforms, 1.0, 0, 1.0, ref_out)
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_allclose(h, ref_h, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(c, ref_c, rtol=1e-9, atol=1e-12)


def test_the_workers_count_no_references():
    """Everything a worker runs per character is a ``leaf_kernel`` (``jit.py``: compiled without
    Numba's reference counts, an atomic instruction each, on counters both workers share): every
    kernel of ``cpu/generate.py`` but the three entry points and ``_shared_state``, which allocates
    all a run uses first. ~3-9% of a character's time (BENCHMARKS.md)."""
    from numba.core.registry import CPUDispatcher

    from tinyrnn.kernels.cpu import generate as G

    kernels = {name: f for name, f in vars(G).items()
               if isinstance(f, CPUDispatcher) and f.py_func.__module__ == G.__name__}
    counting = {name for name, f in kernels.items() if f.targetoptions.get("_nrt") is not False}
    assert counting == {"_shared_state", "_lstm_run", "_gru_run", "_rnn_run"}
    assert {"_worker", "_phase", "_slot", "_sample_index", "_float_rows"} < set(kernels)


def test_sampling_frees_all_it_allocates():
    """Leaf kernels take no references and must release none: after 20 runs of every weight format
    (the draw's sort buffers used too, top_k and top_p), Numba's allocation counters show as many
    arrays freed as allocated. (A fresh process: the counters are switched on before Numba starts.)"""
    code = ("import numpy as np\n"
            "from numba.core.runtime import rtsys\n"
            "from tinyrnn.models import CharRNN\n"
            "from tinyrnn.generate import sample_indices\n"
            "model = CharRNN(65, cell='lstm', hidden=48, layers=2, embed=16)\n"
            "for weights in ('f32', 'bf16', 'int8'):\n"
            "    list(sample_indices(model, [1], 5, weights=weights))   # Numba's runtime starts\n"
            "    before = rtsys.get_allocation_stats()\n"
            "    for _ in range(20):\n"
            "        list(sample_indices(model, [1, 2], 40, top_k=5, top_p=0.9, weights=weights))\n"
            "    after = rtsys.get_allocation_stats()\n"
            "    print(after.alloc - before.alloc, after.alloc - after.free - (before.alloc - before.free))\n")
    env = dict(os.environ, NUMBA_NRT_STATS="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    for line in out.stdout.splitlines():
        allocated, live = map(int, line.split())
        assert allocated > 0 and live == 0, line


def test_chunks_grow_and_do_not_change_the_indices():
    """sample_indices yields ``chunk`` indices first, then twice as many each time up to LONGEST_CHUNK;
    the indices are the same as one call's (one uniform per index, drawn in order)."""
    from tinyrnn.generate import LONGEST_CHUNK

    manual_seed(0)
    model = CharRNN(11, cell="gru", hidden=16, layers=2, embed=8)
    model.eval()
    chunks = list(sample_indices(model, [1, 2], 1300, temperature=1.0, seed=5, chunk=5))
    assert [len(c) for c in chunks] == [5, 10, 20, 40, 80, 160, 320, 512, 153]
    assert LONGEST_CHUNK == 512
    whole = list(sample_indices(model, [1, 2], 1300, temperature=1.0, seed=5, chunk=1300))
    assert len(whole) == 1
    np.testing.assert_array_equal(np.concatenate(chunks), whole[0])


def test_generate_text_is_generate_a_kernel_call_at_a_time():
    """generate_text yields one string per kernel call (32, 64, ... characters: what `tinyrnn sample`
    writes and flushes); joined, they are generate's characters."""
    from tinyrnn.data import Vocab
    from tinyrnn.generate import generate, generate_text

    vocab = Vocab("abcdefgh \n")
    manual_seed(0)
    model = CharRNN(len(vocab.chars), cell="lstm", hidden=16, layers=1, embed=8)
    model.eval()
    texts = list(generate_text(model, vocab, "ab", 200, temperature=1.0, seed=7, weights="int8"))
    assert [len(t) for t in texts] == [32, 64, 104]
    assert "".join(texts) == "".join(generate(model, vocab, "ab", 200, temperature=1.0, seed=7, weights="int8"))
    assert set("".join(texts)) <= set(vocab.chars)
