"""Recurrent kernels: cells and whole sequences (forward + BPTT), and batch-1 generation.

* every Numba kernel against its numpy reference (float64 tight, float32 loose: fast tanh there);
* the reference sequences against an explicit loop over the reference cells, against finite
  differences (float64) and, if installed, against PyTorch's nn.LSTM / nn.GRU / nn.RNN.
"""
import numpy as np
import pytest

from tinyrnn.kernels import cpu, reference as ref
from tinyrnn.kernels.reference.weight_formats import (activation_levels, from_bfloat16, from_bfloat16_pairs,
                                                      from_int8_rows, from_stored_bfloat16, from_stored_int8, no_scale,
                                                      times, to_bfloat16, to_bfloat16_pairs, to_int8_activations,
                                                      to_int8_rows, to_stored_bfloat16, to_stored_int8)

TOL = {np.float64: dict(rtol=1e-12, atol=1e-12), np.float32: dict(rtol=1e-5, atol=1e-5)}
GATES = {"lstm": 4, "gru": 3, "rnn": 1}
# (T, B, H): awkward sizes (only partial chunks: the plain loop), a full 64-unit chunk (the SIMD
# micro tile) with a ragged last tile of batch rows, then a partial chunk, and two full chunks
# with whole 4-row tiles (stored straight from the registers)
SIZES = [(1, 1, 1), (5, 3, 7), (4, 6, 37), (3, 5, 83), (2, 8, 128)]


def randn(rng, *shape, dtype=np.float64, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(dtype)


def assert_close(got, want, dtype):
    np.testing.assert_allclose(got, want, **TOL[dtype])


def nans(shape, dtype):
    return np.full(shape, np.nan, dtype)


# the outputs each kind's kernels write (the others are not theirs and stay NaN)
CELL_OUTPUTS = {"lstm": (0, 1, 2, 3, 5), "gru": (0, 1, 3, 4, 5), "rnn": (1, 5)}
SEQUENCE_OUTPUTS = {"lstm": ("hs", "cs", "acts", "d1", "dh0", "dc0"), "gru": ("hs", "acts", "ghn", "d1", "d2", "dh0"),
                    "rnn": ("hs", "d1", "dh0")}


# --------------------------------------------------------------------------------------- cells

def run_cells(kernels, kind, arrays, relu=False):
    """One forward + backward step of a cell; returns every output."""
    a = arrays
    B, H = a["h_prev"].shape
    dt = a["h_prev"].dtype
    G = GATES[kind]
    # outputs start as NaN (layers allocate them with np.empty): an element a kernel forgets to
    # write, or adds to instead of assigning, stays NaN and fails the comparison
    acts, h, c = nans((B, G * H), dt), nans((B, H), dt), nans((B, H), dt)
    d1, d2, d3 = nans((B, G * H), dt), nans((B, G * H), dt), nans((B, H), dt)
    if kind == "lstm":
        kernels.lstm_cell_forward(a["gates"], a["c_prev"], acts, c, h)
        kernels.lstm_cell_backward(acts, a["c_prev"], c, a["dh"], a["dc"], d1, d3)
    elif kind == "gru":
        kernels.gru_cell_forward(a["gi"], a["gh"], a["h_prev"], acts, h)
        kernels.gru_cell_backward(acts, a["gh"], a["h_prev"], a["dh"], d1, d2, d3)
    else:
        kernels.rnn_cell_forward(a["pre"], h, relu)
        kernels.rnn_cell_backward(h, a["dh"], d3, relu)
    return acts, h, c, d1, d2, d3


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind,relu", [("lstm", False), ("gru", False), ("rnn", False), ("rnn", True)])
@pytest.mark.parametrize("B,H", [(1, 1), (3, 7)])
def test_cells_cpu_match_reference(kind, relu, dtype, B, H):
    rng = np.random.default_rng(B * 100 + H)
    G = GATES[kind]
    arrays = {name: randn(rng, B, G * H, dtype=dtype, scale=2) for name in ("gates", "gi", "gh")}
    arrays |= {name: randn(rng, B, H, dtype=dtype) for name in ("c_prev", "h_prev", "dh", "dc")}
    arrays["pre"] = randn(rng, B, H, dtype=dtype, scale=2)
    got_all, want_all = run_cells(cpu, kind, arrays, relu), run_cells(ref, kind, arrays, relu)
    for i in CELL_OUTPUTS[kind]:
        assert not np.isnan(got_all[i]).any(), f"output {i} not fully written"
        assert_close(got_all[i], want_all[i], dtype)


def test_reference_cell_formulas():
    """Spot-check the reference cells against the formulas written out by hand."""
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    gates, c_prev = np.array([[0.3, -1.0, 0.5, 2.0]]), np.array([[0.7]])
    acts, c, h = np.zeros((1, 4)), np.zeros((1, 1)), np.zeros((1, 1))
    ref.lstm_cell_forward(gates, c_prev, acts, c, h)
    i, f, g, o = sig(0.3), sig(-1.0), np.tanh(0.5), sig(2.0)
    assert np.allclose(acts, [[i, f, g, o]]) and np.isclose(c, f * 0.7 + i * g) and np.isclose(h, o * np.tanh(f * 0.7 + i * g))
    gi, gh, h_prev = np.array([[0.1, 0.2, 0.3]]), np.array([[-0.4, 0.5, 0.6]]), np.array([[0.9]])
    acts, h = np.zeros((1, 3)), np.zeros((1, 1))
    ref.gru_cell_forward(gi, gh, h_prev, acts, h)
    r, z = sig(0.1 - 0.4), sig(0.2 + 0.5)
    n = np.tanh(0.3 + r * 0.6)
    assert np.allclose(acts, [[r, z, n]]) and np.isclose(h, (1 - z) * n + z * 0.9)


# ------------------------------------------------------------------------------------ sequence

def make_sequence_inputs(rng, kind, T, B, H, dtype=np.float64):
    G = GATES[kind]
    return dict(
        xproj=randn(rng, T, B, G * H, dtype=dtype), w_hh=randn(rng, G * H, H, dtype=dtype, scale=1.5 / np.sqrt(H)),
        b_hh=randn(rng, G * H, dtype=dtype, scale=0.5), h0=randn(rng, B, H, dtype=dtype),
        c0=randn(rng, B, H, dtype=dtype), dhs=randn(rng, T, B, H, dtype=dtype),
        dh_n=randn(rng, B, H, dtype=dtype), dc_n=randn(rng, B, H, dtype=dtype))


def run_sequence(kernels, kind, a, relu=False, batch_sizes=None):
    """Forward + backward of one layer (a full batch unless ``batch_sizes``); returns a dict of every output."""
    T, B, GH = a["xproj"].shape
    H = GH // GATES[kind]
    dt = a["xproj"].dtype
    o = dict(hs=nans((T + 1, B, H), dt), cs=nans((T + 1, B, H), dt), acts=nans((T, B, GH), dt),
             ghn=nans((T, B, H), dt), d1=nans((T, B, GH), dt), d2=nans((T, B, GH), dt),
             dh0=nans((B, H), dt), dc0=nans((B, H), dt))      # NaN: see run_cells
    bs = np.full(T, B, np.int64) if batch_sizes is None else np.asarray(batch_sizes, np.int64)
    xproj = ref.pack_steps(a["xproj"], bs)          # (N, G*H): the kernels' packed layout
    if kind == "lstm":
        kernels.lstm_sequence_forward(xproj, a["w_hh"], a["h0"], a["c0"], bs, o["hs"], o["cs"], o["acts"])
        kernels.lstm_sequence_backward(a["w_hh"], o["hs"], o["cs"], o["acts"], a["dhs"], a["dh_n"], a["dc_n"],
                                       bs, o["d1"], o["dh0"], o["dc0"])
    elif kind == "gru":
        kernels.gru_sequence_forward(xproj, a["w_hh"], a["b_hh"], a["h0"], bs, o["hs"], o["acts"], o["ghn"])
        kernels.gru_sequence_backward(a["w_hh"], o["hs"], o["acts"], o["ghn"], a["dhs"], a["dh_n"],
                                      bs, o["d1"], o["d2"], o["dh0"])
    else:
        kernels.rnn_sequence_forward(xproj, a["w_hh"], a["h0"], bs, o["hs"], relu)
        kernels.rnn_sequence_backward(a["w_hh"], o["hs"], a["dhs"], a["dh_n"], relu, bs, o["d1"], o["dh0"])
    return o


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind,relu", [("lstm", False), ("gru", False), ("rnn", False), ("rnn", True)])
def test_sequence_cpu_matches_reference(kind, relu, dtype):
    for T, B, H in SIZES:
        a = make_sequence_inputs(np.random.default_rng(T + B + H), kind, T, B, H, dtype)
        got, want = run_sequence(cpu, kind, a, relu), run_sequence(ref, kind, a, relu)
        for name in SEQUENCE_OUTPUTS[kind]:
            assert not np.isnan(got[name]).any(), f"{name} not fully written at {(T, B, H)}"
            assert_close(got[name], want[name], dtype)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_reference_sequence_matches_cell_loop(kind):
    """The reference sequence = a Python loop of reference cells with explicit recurrent matmuls."""
    T, B, H = 4, 2, 5
    a = make_sequence_inputs(np.random.default_rng(1), kind, T, B, H)
    o = run_sequence(ref, kind, a)
    G = GATES[kind]
    h, c = a["h0"], a["c0"]
    hs, cs = [h], [c]
    for t in range(T):
        acts, h_new, c_new = np.zeros((B, G * H)), np.zeros((B, H)), np.zeros((B, H))
        if kind == "lstm":
            ref.lstm_cell_forward(a["xproj"][t] + h @ a["w_hh"].T, c, acts, c_new, h_new)
        elif kind == "gru":
            ref.gru_cell_forward(a["xproj"][t], h @ a["w_hh"].T + a["b_hh"], h, acts, h_new)
        else:
            ref.rnn_cell_forward(a["xproj"][t] + h @ a["w_hh"].T, h_new, False)
        assert np.array_equal(o["hs"][t + 1], h_new)
        if kind != "rnn":
            assert np.array_equal(o["acts"][t], acts)
        h, c = h_new, c_new
        hs.append(h)
        cs.append(c)
    # backward, one cell at a time
    dh, dc = a["dh_n"], a["dc_n"]
    for t in reversed(range(T)):
        d, d2, dprev = np.zeros((B, G * H)), np.zeros((B, G * H)), np.zeros((B, H))
        if kind == "lstm":
            ref.lstm_cell_backward(o["acts"][t], cs[t], cs[t + 1], dh + a["dhs"][t], dc, d, dprev)
            dh, dc = d @ a["w_hh"], dprev
        elif kind == "gru":
            gh = hs[t] @ a["w_hh"].T + a["b_hh"]
            ref.gru_cell_backward(o["acts"][t], gh, hs[t], dh + a["dhs"][t], d, d2, dprev)
            dh = dprev + d2 @ a["w_hh"]
            np.testing.assert_allclose(o["d2"][t], d2, rtol=1e-13, atol=1e-13)
        else:
            ref.rnn_cell_backward(hs[t + 1], dh + a["dhs"][t], d, False)
            dh = d @ a["w_hh"]
        np.testing.assert_allclose(o["d1"][t], d, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(o["dh0"], dh, rtol=1e-13, atol=1e-13)


def sequence_loss_and_grads(kind, a, R, relu=False):
    """loss = sum(hs[1:] * R["hs"]) + sum(h_n * R["h_n"]) (+ sum(c_n * R["c_n"])), and its gradients
    w.r.t. xproj, w_hh, h0 (c0, b_hh) formed from the backward kernel's outputs."""
    o = run_sequence(ref, kind, a, relu)
    loss = np.sum(o["hs"][1:] * R["hs"]) + np.sum(o["hs"][-1] * R["h_n"])
    if kind == "lstm":
        loss += np.sum(o["cs"][-1] * R["c_n"])
    b = dict(a, dhs=R["hs"], dh_n=R["h_n"], dc_n=R["c_n"])
    g = run_sequence(ref, kind, b, relu)
    dgh = g["d2"] if kind == "gru" else g["d1"]    # gradient w.r.t. h_{t-1} @ W_hh.T (+ b_hh)
    grads = dict(xproj=g["d1"], w_hh=np.einsum("tbg,tbh->gh", dgh, o["hs"][:-1]), h0=g["dh0"])
    if kind == "lstm":
        grads["c0"] = g["dc0"]
    if kind == "gru":
        grads["b_hh"] = dgh.sum(axis=(0, 1))
    return loss, grads


@pytest.mark.parametrize("kind,relu", [("lstm", False), ("gru", False), ("rnn", False), ("rnn", True)])
def test_reference_sequence_backward_finite_differences(kind, relu):
    T, B, H = 3, 2, 3
    rng = np.random.default_rng(7)
    a = make_sequence_inputs(rng, kind, T, B, H)
    R = dict(hs=randn(rng, T, B, H), h_n=randn(rng, B, H), c_n=randn(rng, B, H))
    _, grads = sequence_loss_and_grads(kind, a, R, relu)
    eps = 1e-6
    for name, grad in grads.items():
        x = a[name]
        numeric = np.zeros_like(x)
        for idx in np.ndindex(x.shape):
            old = x[idx]
            x[idx] = old + eps
            plus = sequence_loss_and_grads(kind, a, R, relu)[0]
            x[idx] = old - eps
            minus = sequence_loss_and_grads(kind, a, R, relu)[0]
            x[idx] = old
            numeric[idx] = (plus - minus) / (2 * eps)
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8, err_msg=f"{kind} d{name}")


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_reference_sequence_matches_torch(kind):
    torch = pytest.importorskip("torch")
    T, B, I, H = 4, 3, 5, 6
    rng = np.random.default_rng(3)
    layer = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[kind](I, H).double()
    x, h0, c0 = randn(rng, T, B, I), randn(rng, 1, B, H), randn(rng, 1, B, H)
    xt, h0t, c0t = (torch.tensor(v, requires_grad=True) for v in (x, h0, c0))
    out, state = layer(xt, (h0t, c0t) if kind == "lstm" else h0t)
    R = randn(rng, T, B, H)
    (out * torch.tensor(R)).sum().backward()

    w_ih, w_hh, b_ih, b_hh = (p.detach().numpy() for p in (layer.weight_ih_l0, layer.weight_hh_l0,
                                                           layer.bias_ih_l0, layer.bias_hh_l0))
    a = dict(xproj=x @ w_ih.T + b_ih + (0 if kind == "gru" else b_hh), w_hh=w_hh, b_hh=b_hh, h0=h0[0], c0=c0[0],
             dhs=R, dh_n=np.zeros((B, H)), dc_n=np.zeros((B, H)))
    o = run_sequence(ref, kind, a)
    np.testing.assert_allclose(o["hs"][1:], out.detach().numpy(), rtol=1e-12, atol=1e-12)
    dgh = o["d2"] if kind == "gru" else o["d1"]
    np.testing.assert_allclose(np.einsum("tbg,tbh->gh", dgh, o["hs"][:-1]), layer.weight_hh_l0.grad.numpy(),
                               rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.einsum("tbg,tbi->gi", o["d1"], x), layer.weight_ih_l0.grad.numpy(),
                               rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(o["d1"] @ w_ih, xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(o["dh0"], h0t.grad.numpy()[0], rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------- generation

def make_char_model(rng, kind, V=11, E=5, H=6, L=2, dtype=np.float64):
    G = GATES[kind]
    m = dict(embedding=randn(rng, V, E, dtype=dtype), w_ih0=randn(rng, G * H, E, dtype=dtype, scale=0.7),
             w_ih=randn(rng, L - 1, G * H, H, dtype=dtype, scale=0.7),
             w_hh=randn(rng, L, G * H, H, dtype=dtype, scale=0.5), b=randn(rng, L, G * H, dtype=dtype, scale=0.3),
             b_hh=randn(rng, L, G * H, dtype=dtype, scale=0.3), w_out=randn(rng, V, H, dtype=dtype, scale=2.0),
             b_out=randn(rng, V, dtype=dtype), h=randn(rng, L, H, dtype=dtype, scale=0.5),
             c=randn(rng, L, H, dtype=dtype, scale=0.5))
    return m


def joined(m):
    """m in the generators' layout: layer 0's input products as a table x0 (V, G*H) and its w_hh as
    w0 (G*H, H); each further layer's [w_ih | w_hh] as one matrix, w (L-1, G*H, 2H)."""
    j = {k: v for k, v in m.items() if k not in ("embedding", "w_ih0", "w_ih", "w_hh")}
    j["x0"] = m["embedding"] @ m["w_ih0"].T
    j["w0"] = m["w_hh"][0].copy()
    j["w"] = np.concatenate([m["w_ih"], m["w_hh"][1:]], axis=2)
    return j


def generate(kernels, kind, m, prime, uniforms, temperature, top_k, top_p):
    m = {k: v.copy() for k, v in (m if "w0" in m else joined(m)).items()}      # the state is updated in place
    out = np.full(len(uniforms), -1, dtype=np.int64)
    tail = (prime, uniforms, temperature, top_k, top_p, out)
    # each matrix with its row scales: the int8 ones in m, else empty (float and bfloat16)
    w0, w, w_out = ((m[name], m.get("s" + name[1:], no_scale(m[name]))) for name in ("w0", "w", "w_out"))
    if kind == "lstm":
        kernels.lstm_generate(m["x0"], *w0, *w, m["b"], *w_out, m["b_out"], m["h"], m["c"], *tail)
    elif kind == "gru":
        kernels.gru_generate(m["x0"], *w0, *w, m["b"], m["b_hh"], *w_out, m["b_out"], m["h"], *tail)
    else:
        kernels.rnn_generate(m["x0"], *w0, *w, m["b"], True, *w_out, m["b_out"], m["h"], *tail)
    return out, m


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_generate_cpu_matches_reference(kind):
    rng = np.random.default_rng(11)
    m = make_char_model(rng, kind)
    prime = np.array([3, 1, 4, 1, 5], dtype=np.int64)
    uniforms = rng.random(40)
    for temperature, top_k, top_p in [(1.0, 0, 1.0), (0.7, 4, 1.0), (1.3, 0, 0.8), (1.0, 3, 0.5), (0.0, 0, 1.0)]:
        want, m_ref = generate(ref, kind, m, prime, uniforms, temperature, top_k, top_p)
        got, m_cpu = generate(cpu, kind, m, prime, uniforms, temperature, top_k, top_p)
        assert np.array_equal(got, want), (temperature, top_k, top_p)
        assert want.min() >= 0 and want.max() < len(m["b_out"])
        np.testing.assert_allclose(m_cpu["h"], m_ref["h"], rtol=1e-12, atol=1e-12)
    # top_k = 1 and temperature 0 are both greedy; greedy is deterministic whatever the uniforms
    greedy, _ = generate(cpu, kind, m, prime, uniforms, 0.0, 0, 1.0)
    assert np.array_equal(generate(cpu, kind, m, prime, rng.random(40), 0.0, 0, 1.0)[0], greedy)
    assert np.array_equal(generate(cpu, kind, m, prime, uniforms, 1.0, 1, 1.0)[0], greedy)
    assert len(np.unique(generate(cpu, kind, m, prime, uniforms, 5.0, 0, 1.0)[0])) > 1  # it samples


def test_generate_state_matches_sequence_forward():
    """After generating, h and c are the LSTM state after reading prime + out[:-1]."""
    rng = np.random.default_rng(5)
    m = make_char_model(rng, "lstm", L=2)
    prime = np.array([2, 7], dtype=np.int64)
    out, m_after = generate(cpu, "lstm", m, prime, rng.random(6), 1.0, 0, 1.0)
    inputs = np.concatenate([prime, out[:-1]])
    x = m["embedding"][inputs][:, None, :]        # (T, 1, E)
    for layer in range(2):
        w_in = m["w_ih0"] if layer == 0 else m["w_ih"][layer - 1]
        T, H = len(inputs), m["h"].shape[1]
        hs, cs, acts = np.zeros((T + 1, 1, H)), np.zeros((T + 1, 1, H)), np.zeros((T, 1, 4 * H))
        xproj = (x @ w_in.T + m["b"][layer]).reshape(T, 4 * H)       # packed: (T*B, 4H), B = 1
        ref.lstm_sequence_forward(xproj, m["w_hh"][layer], m["h"][layer][None],
                                  m["c"][layer][None], np.ones(T, np.int64), hs, cs, acts)
        np.testing.assert_allclose(m_after["h"][layer], hs[-1, 0], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(m_after["c"][layer], cs[-1, 0], rtol=1e-12, atol=1e-12)
        x = hs[1:]


def test_generate_float32_one_layer():
    rng = np.random.default_rng(2)
    m = make_char_model(rng, "lstm", L=1, dtype=np.float32)
    assert m["w_ih"].shape[0] == 0
    prime, uniforms = np.array([1], dtype=np.int64), rng.random(30).astype(np.float32)
    got, m_cpu = generate(cpu, "lstm", m, prime, uniforms, 0.0, 0, 1.0)
    want, m_ref = generate(ref, "lstm", m, prime, uniforms, 0.0, 0, 1.0)
    assert np.array_equal(got, want)
    np.testing.assert_allclose(m_cpu["h"], m_ref["h"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("fmt", ["bf16", "int8"])
def test_generate_compact_weights(kind, dtype, fmt):
    """bfloat16 matrices (uint16) and int8 ones with row scales: the CPU kernel matches the reference,
    and both stay close to float weights holding the same (rounded) values: the products also round
    their vector, to bfloat16 (summed in float32: ``test_bfloat16_products``) or to 8-bit integers
    (``test_int8_activations``)."""
    rng = np.random.default_rng(12)
    m = joined(make_char_model(rng, kind, H=37, dtype=dtype))     # 37: ragged against the 4-row blocks
    packed = dict(m)
    rounded = dict(m)
    for name in ("w0", "w", "w_out"):
        if fmt == "bf16":
            packed[name] = to_stored_bfloat16(m[name])          # the layout the kernels read on this build
            rounded[name] = from_stored_bfloat16(packed[name]).astype(dtype)
        else:
            q, packed["s" + name[1:]] = to_int8_rows(m[name])
            packed[name] = to_stored_int8(q)                     # in excess 128, as the kernels read it
            rounded[name] = from_int8_rows(q, packed["s" + name[1:]]).astype(dtype)
    assert packed["w0"].dtype == {"bf16": np.uint16, "int8": np.uint8}[fmt]
    assert not np.array_equal(rounded["w0"], m["w0"])
    prime, uniforms = np.array([3, 1, 4], dtype=np.int64), rng.random(40)
    # float32: the kernel's sums (SIMD, FMA) and numpy's go in different orders, and the ReLU RNN's
    # state grows to 1e13 over the 43 steps, so the two part by up to ~3e-5 relative
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-4, atol=2e-5)
    if fmt == "int8" and dtype == np.float32:
        # an ulp between numpy's and the kernel's float32 unit math can move an element of h across
        # a rounding boundary of the next product (one step of the 8-bit grid); float64 shows the
        # two round by the same rule (relative: this ReLU RNN's state grows to 1e13)
        tol = dict(rtol=1e-2, atol=2e-4)
    # bfloat16 products sum in float32 whatever the dtype, and a float32 ulp between the kernel's
    # sums and numpy's can move an element of the next vector across a bfloat16 rounding boundary
    # (2**-9 of it), which these random models amplify step by step (about x10 in 5 steps): draws
    # are compared over the first 30 characters, states after reading 5 (below)
    horizon = 30 if fmt == "bf16" else len(uniforms)
    for temperature, top_k, top_p in [(1.0, 0, 1.0), (0.0, 0, 1.0), (0.8, 3, 0.9)]:
        got, m_cpu = generate(cpu, kind, packed, prime, uniforms, temperature, top_k, top_p)
        want, m_ref = generate(ref, kind, packed, prime, uniforms, temperature, top_k, top_p)
        assert np.array_equal(got[:horizon], want[:horizon]), (temperature, top_k, top_p)
        if fmt == "int8":
            np.testing.assert_allclose(m_cpu["h"], m_ref["h"], **tol)
    # read 5 characters (no draw to flip): the kernel's state is the reference's, and every
    # format's stays close to the float weights' state, relative to its largest element: bfloat16
    # within 2% (its vector moves each product as much as the bfloat16 weights do, ~0.3% of h after
    # one step), int8 within 5% (its 8-bit vector moves each element by up to 1/128 of the largest:
    # 2.3-3.8% after these random models' five steps)
    five = prime[:1].repeat(5)
    _, m_cpu = generate(cpu, kind, packed, five, uniforms[:1], 1.0, 0, 1.0)
    _, m_ref = generate(ref, kind, packed, five, uniforms[:1], 1.0, 0, 1.0)
    _, m_same = generate(cpu, kind, rounded, five, uniforms[:1], 1.0, 0, 1.0)
    scale = np.abs(m_same["h"]).max()
    assert np.abs(m_cpu["h"] - m_ref["h"]).max() <= (1e-3 if fmt == "bf16" else 1e-4) * scale
    assert np.abs(m_cpu["h"] - m_same["h"]).max() <= (0.02 if fmt == "bf16" else 0.05) * scale


def test_generate_mixed_formats():
    """The head may have a format of its own: int8 layers (their vectors rounded to bytes) with a
    bfloat16 head (its vector rounded to bfloat16), through the one rounding buffer; the CPU kernel
    draws what the reference draws. (w0 and w share one: the kernel picks one of them a layer.)"""
    rng = np.random.default_rng(4)
    m = joined(make_char_model(rng, "lstm", H=37, L=3))
    for name in ("w0", "w"):
        q, m["s" + name[1:]] = to_int8_rows(m[name])
        m[name] = to_stored_int8(q)
    m["w_out"] = to_stored_bfloat16(m["w_out"])
    prime, uniforms = np.array([3, 1, 4], dtype=np.int64), rng.random(20)
    got, m_cpu = generate(cpu, "lstm", m, prime, uniforms, 1.0, 0, 1.0)
    want, m_ref = generate(ref, "lstm", m, prime, uniforms, 1.0, 0, 1.0)
    assert np.array_equal(got, want)
    np.testing.assert_allclose(m_cpu["h"], m_ref["h"], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("K", [1, 37, 516, 517, 4000, 140_000])
def test_int8_activations(K):
    """A vector rounded for int8 products: every element within half a step of its value, the step
    max|x| / levels, levels small enough that no int32 dot can overflow (the kernels' dots of
    q + 128, stored so, either); ``times`` is the float
    product of the rounded vector, and the CPU kernel's rounding is the reference's, bit for bit."""
    from tinyrnn.kernels.cpu.generate import quantize_activations

    rng = np.random.default_rng(K)
    x = (rng.standard_normal(K) * 3).astype(np.float32)
    xq, step = to_int8_activations(x)
    levels = activation_levels(K)
    assert xq.dtype == np.int8 and levels == min(64, (2 ** 31 - 1) // (255 * K))
    assert 255 * levels * K < 2 ** 31 and np.abs(xq.astype(int)).max() == levels
    assert np.all(np.abs(xq * step - x) <= step * (0.5 + 1e-9))
    got = np.empty(K + 3, np.int8)
    assert quantize_activations(x, got) == step and np.array_equal(got[:K], xq)
    assert quantize_activations(np.zeros(K, np.float32), got) == 0 and not got[:K].any()
    q, scale = to_int8_rows(rng.standard_normal((5, K)))
    stored = to_stored_int8(q)
    exact = from_int8_rows(q, scale) @ (xq * step)
    np.testing.assert_allclose(times(stored, scale, x.astype(np.float64)), exact, rtol=1e-12, atol=1e-12)
    worst = np.abs(from_int8_rows(q, scale)).sum(axis=1) * step / 2         # the rounding's bound
    assert np.all(np.abs(times(stored, scale, x.astype(np.float64)) - from_int8_rows(q, scale) @ x) <= worst + 1e-12)


def test_int8_rows():
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((3, 50, 40)) * np.exp(rng.uniform(-5, 5, (3, 50, 1)))).astype(np.float32)
    x[1, 7] = 0.0                                                          # an all-zero row
    q, scale = to_int8_rows(x)
    assert q.dtype == np.int8 and q.shape == x.shape and scale.dtype == np.float32 and scale.shape == (3, 50)
    assert np.abs(q.astype(int)).max() <= 127 and -128 not in q
    nonzero = scale > 0
    assert np.array_equal(np.abs(q.astype(int)).max(axis=-1)[nonzero], np.full(nonzero.sum(), 127))  # full range
    y = from_int8_rows(q, scale)
    assert np.all(np.abs(y - x) <= scale[..., None] * (0.5 + 1e-5))        # half a step of the row's grid
    assert not scale[1, 7] and not y[1, 7].any()
    np.testing.assert_allclose(from_int8_rows(*to_int8_rows(y)), y, rtol=1e-6)   # values on the grid are kept
    stored = to_stored_int8(q)                                             # the kernels' layout: excess 128
    assert stored.dtype == np.uint8 and np.array_equal(stored.astype(int), q.astype(int) + 128)
    assert np.array_equal(from_stored_int8(stored), q)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_int8_row_products_in_every_cut(dtype):
    """The CPU kernel's int8 rows (``_int8_rows``: groups of 8 rows on AVX-512, else 4; whole rows
    finished four at a time as vectors, a group with clamped rows or a column tail row by row) add
    (scale * step) * dot into out as the scalar code does: the dots exact, scale * step in out's
    dtype, the rest in float64, rounded once. Cuts: any begin and end (rows before, after and
    between whole groups), column ranges that are whole vectors or not (the GRU's halves).
    float32 bit for bit (the float64 product of a float32 factor and a dot under 2**29 is exact);
    no row outside begin:end is touched."""
    from tinyrnn.kernels.cpu.generate import _int8_rows, quantize_activations

    rng = np.random.default_rng(5)
    for R, K in ((40, 128), (19, 256), (33, 200), (8, 64)):
        q, scale = to_int8_rows(rng.standard_normal((R, K)))
        stored = to_stored_int8(q)
        x = rng.standard_normal(K).astype(dtype)
        xq = np.zeros(K + 64, np.int8)
        step = quantize_activations(x, xq)
        factors = scale.astype(dtype) * dtype(step)            # the kernel's scale[r] * step, in out's dtype
        for begin, end in ((0, R), (3, R), (0, min(13, R)), (5, 6), (min(8, R), min(16, R)), (R - 1, R)):
            for c0, c1 in ((0, K), (0, K // 2), (K // 2, K), (1, K - 3)):
                dots = q[begin:end, c0:c1].astype(np.int64) @ xq[c0:c1].astype(np.int64)
                out = rng.standard_normal(R).astype(dtype)
                want, terms = out.copy(), factors[begin:end].astype(np.float64) * dots
                want[begin:end] = (out[begin:end].astype(np.float64) + terms).astype(dtype)
                bound = 4 * np.finfo(np.float64).eps * (np.abs(out[begin:end]) + np.abs(terms))
                _int8_rows(stored, scale, xq, step, out, begin, end, c0, c1)
                if dtype == np.float32:
                    assert np.array_equal(out, want), (R, K, begin, end, c0, c1)
                else:       # float64: the product may be fused into the addition (fastmath), or not
                    assert np.all(np.abs(out - want)[begin:end] <= bound) and np.array_equal(
                        np.delete(out, np.s_[begin:end]), np.delete(want, np.s_[begin:end]))


@pytest.mark.parametrize("K", [1, 31, 32, 33, 100, 517])
def test_bfloat16_products(K):
    """A product with a bfloat16 matrix rounds its vector to bfloat16 and sums the exact products in
    float32 (``times``); the CPU kernel's rounding is ``to_bfloat16``'s, bit for bit, and its rows
    match ``times`` over any columns c0:c1 (an odd c0 starts inside a pair: its vectors start on the
    next column), with the matrix in the layout of the build (pairs where ``isa.bf16_pairs``)."""
    from tinyrnn.kernels.cpu.generate import _bf16_rows, round_to_bfloat16

    rng = np.random.default_rng(K)
    w = to_stored_bfloat16(rng.standard_normal((37, K)))
    for dtype in (np.float32, np.float64):
        x = (rng.standard_normal(K) * 3).astype(dtype)
        xb = np.empty(K + 5, np.int16)
        round_to_bfloat16(x, xb)
        assert np.array_equal(xb[:K].view(np.uint16), to_bfloat16(x))
        exact = from_stored_bfloat16(w).astype(np.float64) @ from_bfloat16(to_bfloat16(x)).astype(np.float64)
        got = times(w, no_scale(w), x)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, exact, rtol=1e-5, atol=1e-5 * np.sqrt(K))
        for c0, c1 in [(0, K), (K // 3, K), (1, max(1, K - 2)), (0, K // 2), (K // 2, K // 2 + 1), (K - 1, K)]:
            out = np.full(37, 0.5, dtype)
            _bf16_rows(w, xb, out, 0, 37, c0, c1)
            want = 0.5 + times(w, no_scale(w), x, slice(c0, c1))
            np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5 * np.sqrt(K))
        out = np.zeros(37, dtype)
        _bf16_rows(w, xb, out, 5, 18, 0, K)                             # rows 5:18 only, ragged against 4
        assert not out[:5].any() and not out[18:].any()
        np.testing.assert_allclose(out[5:18], times(w[5:18], no_scale(w), x), rtol=1e-5, atol=1e-5 * np.sqrt(K))


@pytest.mark.parametrize("K", [1, 15, 16, 17, 100, 517])
def test_float_rows(K):
    """The float rows product (16 columns a vector FMA, the rest one by one) is w @ x over any rows
    begin:end (ragged against its 4-row blocks) and any columns c0:c1 (vectors starting at any
    column), added to out, in float64 and float32; rows outside begin:end are left alone."""
    from tinyrnn.kernels.cpu.generate import _float_rows

    rng = np.random.default_rng(K)
    for dtype, tol in ((np.float64, 1e-12), (np.float32, 1e-5)):
        w = rng.standard_normal((37, K)).astype(dtype)
        x = rng.standard_normal(K).astype(dtype)
        for (begin, end), (c0, c1) in [((0, 37), (0, K)), ((5, 18), (K // 3, K)), ((3, 4), (1, max(1, K - 2))),
                                       ((0, 37), (0, K // 2))]:
            out = np.full(37, 0.5, dtype)
            _float_rows(w, x, out, begin, end, c0, c1)
            want = np.full(37, 0.5)
            want[begin:end] += w[begin:end, c0:c1].astype(np.float64) @ x[c0:c1].astype(np.float64)
            np.testing.assert_allclose(out, want, rtol=tol, atol=tol * np.sqrt(K))


def test_bfloat16_rounding():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(100_000) * np.exp(rng.uniform(-20, 20, 100_000))).astype(np.float32)
    y = from_bfloat16(to_bfloat16(x))
    assert y.dtype == np.float32 and np.all(np.sign(y) == np.sign(x))
    assert np.all(np.abs(y - x) <= np.abs(x) * 2.0 ** -8)                 # half a unit of the 8-bit mantissa
    assert np.array_equal(from_bfloat16(to_bfloat16(y)), y)               # bfloat16 values are kept exactly
    # ties go to the even mantissa: 1 + 2^-8 is halfway between 1 and 1 + 2^-7
    halfway = np.array([1 + 2.0 ** -8, 1 + 3 * 2.0 ** -8, -(1 + 2.0 ** -8)], np.float32)
    np.testing.assert_array_equal(from_bfloat16(to_bfloat16(halfway)), [1.0, 1 + 2.0 ** -6, -1.0])
    bits = to_bfloat16(np.array([1.0, -2.0, 0.0], np.float32))
    np.testing.assert_array_equal(bits, [0x3F80, 0xC000, 0x0000])         # the top 16 bits of the float32s


def _bits(rng, shape):
    """float32s of random bit patterns (NaNs replaced by 1.0) and, first, the awkward ones: ties to even
    up and down, carries into the exponent, the largest finite numbers (rounding to inf), denormals,
    signed zeros, infinities."""
    bits = rng.integers(0, 2 ** 32, size=shape, dtype=np.uint64).astype(np.uint32)
    special = [0x3F808000, 0x3F818000, 0x3FFF8000, 0x7F7FFFFF, 0xFF7FFFFF, 0x7F7FFFFF, 0x00000001, 0x00008000,
               0x80000000, 0x00000000, 0x00000000, 0x80000000, 0x7F800000, 0xFF800000, 0x3F807FFF, 0xBF808001,
               0x3F800000, 0x00000000, 0xFFFFFFFF, 0x3F800000]
    bits.reshape(-1)[:len(special)] = special
    bits[np.isnan(bits.view(np.float32))] = 0x3F800000     # NaN payloads are no rounding rule's business
    return bits.view(np.float32)


def test_bfloat16_pairs():
    """``to_bfloat16_pairs``: along each row, even columns are plain bfloat16s; an odd column's top half
    makes its pair's 32-bit word the float32 nearest the weight among all top halves (checked against
    the four around it), so it moves the weight by at most 2**-8 of itself as a bfloat16 does; zeros
    read as tiny denormals, infinities stay infinite (or NaN), finite weights stay finite; an odd row
    length leaves the last column alone. The CPU kernel's rounding is the rule's, bit for bit."""
    from tinyrnn.kernels.cpu.generate import round_to_bfloat16_pairs

    rng = np.random.default_rng(3)
    for K in (33, 64):
        a = _bits(rng, (40, K))
        u = to_bfloat16_pairs(a)
        assert u.dtype == np.uint16 and u.shape == a.shape
        np.testing.assert_array_equal(u[:, 0::2], to_bfloat16(a)[:, 0::2])
        values = from_bfloat16_pairs(u)
        np.testing.assert_array_equal(values[:, 0::2], from_bfloat16(u)[:, 0::2])
        with np.errstate(invalid="ignore"):                          # an infinity's word may be a signalling NaN
            seconds, read = a[:, 1::2].astype(np.float64), values[:, 1::2].astype(np.float64)
        finite = np.isfinite(seconds)
        assert np.array_equal(np.isfinite(read), finite)
        error = np.abs(read - seconds)[finite]
        assert np.all(error <= np.maximum(np.abs(seconds[finite]) * 2.0 ** -8, 2.0 ** -133))
        low = u[:, 0:2 * (K // 2):2].astype(np.int64)
        for step in (-2, -1, 1, 2):                                   # no other top half is nearer
            other = ((u[:, 1::2].astype(np.int64) + step) & 0xFFFF) << 16 | low
            with np.errstate(invalid="ignore"):
                near = np.abs(other.astype(np.uint32).view(np.float32).astype(np.float64) - seconds)
            assert np.all(error <= np.where(np.isnan(near), np.inf, near)[finite])
        stored = np.zeros(a.shape, np.int16)
        round_to_bfloat16_pairs(a.astype(np.float64), stored)       # float64 rows: rounded to float32 first
        np.testing.assert_array_equal(stored.view(np.uint16), u)
    zeros = from_bfloat16_pairs(to_bfloat16_pairs(np.array([[1.0, 0.0, -3.0, -0.0]], np.float32)))
    assert zeros[0, 0] == 1.0 and zeros[0, 2] == -3.0 and np.all(np.abs(zeros[0, 1::2]) <= 2.0 ** -133)


@pytest.mark.parametrize("kernels", [cpu, ref], ids=["cpu", "reference"])
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_sequence_gates_written_over_their_input(kernels, kind):
    """Without padding, acts_out may be xproj's own memory (the layers do that on the CPU): the same
    numbers, bit for bit, as with a separate acts_out, for a small batch (a step's work cut by units)
    and a large one (rows cut, one region)."""
    for T, B, H in [(5, 3, 70), (6, 16, 130)]:
        a = make_sequence_inputs(np.random.default_rng(T * B), kind, T, B, H, np.float32)
        want = run_sequence(kernels, kind, a)
        bs, G = np.full(T, B, np.int64), GATES[kind]
        xproj = ref.pack_steps(a["xproj"], bs)                  # (T*B, G*H)
        acts = xproj.reshape(T, B, G * H)                       # the same memory
        hs, cs, ghn = nans((T + 1, B, H), np.float32), nans((T + 1, B, H), np.float32), nans((T, B, H), np.float32)
        if kind == "lstm":
            kernels.lstm_sequence_forward(xproj, a["w_hh"], a["h0"], a["c0"], bs, hs, cs, acts)
            assert np.array_equal(cs, want["cs"])
        else:
            kernels.gru_sequence_forward(xproj, a["w_hh"], a["b_hh"], a["h0"], bs, hs, acts, ghn)
            assert np.array_equal(ghn, want["ghn"])
        assert np.shares_memory(acts, xproj)
        assert np.array_equal(acts, want["acts"]) and np.array_equal(hs, want["hs"])
