"""Variable-length batches (``layer(x, lengths=lengths)``): PyTorch's packed-sequence semantics.

* Kernels: with ``batch_sizes`` (some rows inactive at some steps) the Numba CPU kernels and the
  CUDA kernels (simulator) equal the numpy reference, outputs NaN-filled first.
* Layers against ``torch.nn.utils.rnn.pack_padded_sequence(enforce_sorted=False)`` with copied
  weights: outputs (0 at padding), final states, every gradient; fused == composed; gradcheck;
  ``nn.Bidirectional``; junk at padded positions changes nothing.
"""
import re

import numpy as np
import pytest

import tinyrnn as tr
from tinyrnn import nn, ops
from tinyrnn.gradcheck import gradcheck
from tinyrnn.kernels import cpu as CPU
from tinyrnn.kernels import reference as R

GATES = {"lstm": 4, "gru": 3, "rnn": 1}
TOL = {np.float32: dict(rtol=1e-4, atol=2e-5), np.float64: dict(rtol=1e-11, atol=1e-13)}  # (fast float32 math)


def batch_sizes_of(lengths, T):
    """(T,) rows active at each step of a batch sorted by decreasing length."""
    lengths = np.asarray(lengths)
    return (lengths[None, :] > np.arange(T)[:, None]).sum(axis=1).astype(np.int64)


# ------------------------------------------------------------------------------------ kernels
def kernel_case(kind, T, B, H, lengths, dtype, seed=0):
    """Inputs of one layer's forward and backward kernels, and NaN-filled outputs, as one dict."""
    rng = np.random.default_rng(seed)
    G = GATES[kind]
    r = lambda *s, scale=1.0: (scale * rng.standard_normal(s)).astype(dtype)  # noqa: E731
    nan = lambda *s: np.full(s, np.nan, dtype)  # noqa: E731
    return dict(xproj=r(T, B, G * H), w_hh=r(G * H, H, scale=1 / np.sqrt(H)), b_hh=r(G * H, scale=0.5), h0=r(B, H),
                c0=r(B, H), dhs=r(T, B, H), dh_n=r(B, H), dc_n=r(B, H), bs=batch_sizes_of(lengths, T),
                hs=nan(T + 1, B, H), cs=nan(T + 1, B, H), acts=nan(T, B, G * H), ghn=nan(T, B, H),
                d1=nan(T, B, G * H), d2=nan(T, B, G * H), dh0=nan(B, H), dc0=nan(B, H))


def run_kernels(K, kind, a, to=lambda x: x, back=lambda x: x, relu=False):
    """Forward then backward with kernel module K; ``to``/``back`` move arrays to/from its device.
    Returns every output as host arrays."""
    d = {k: (to(v) if k != "bs" else v) for k, v in a.items()}
    d["xproj"] = to(R.pack_steps(a["xproj"], a["bs"]))     # (N, G*H): only the active rows, packed
    if kind == "lstm":
        K.lstm_sequence_forward(d["xproj"], d["w_hh"], d["h0"], d["c0"], d["bs"], d["hs"], d["cs"], d["acts"])
        K.lstm_sequence_backward(d["w_hh"], d["hs"], d["cs"], d["acts"], d["dhs"], d["dh_n"], d["dc_n"], d["bs"],
                                 d["d1"], d["dh0"], d["dc0"])
        names = ("hs", "cs", "acts", "d1", "dh0", "dc0")
    elif kind == "gru":
        K.gru_sequence_forward(d["xproj"], d["w_hh"], d["b_hh"], d["h0"], d["bs"], d["hs"], d["acts"], d["ghn"])
        K.gru_sequence_backward(d["w_hh"], d["hs"], d["acts"], d["ghn"], d["dhs"], d["dh_n"], d["bs"],
                                d["d1"], d["d2"], d["dh0"])
        names = ("hs", "acts", "ghn", "d1", "d2", "dh0")
    else:
        K.rnn_sequence_forward(d["xproj"], d["w_hh"], d["h0"], d["bs"], d["hs"], relu)
        K.rnn_sequence_backward(d["w_hh"], d["hs"], d["dhs"], d["dh_n"], relu, d["bs"], d["d1"], d["dh0"])
        names = ("hs", "d1", "dh0")
    return {k: back(d[k]) for k in names}


def check_against_reference(K, kind, T, B, H, lengths, dtype, relu=False, **move):
    a = kernel_case(kind, T, B, H, lengths, dtype)
    ref = run_kernels(R, kind, {k: v.copy() for k, v in a.items()}, relu=relu)
    got = run_kernels(K, kind, a, relu=relu, **move)
    for name, expected in ref.items():
        assert not np.isnan(expected).any(), f"reference left {name} unwritten"
        np.testing.assert_allclose(got[name], expected, err_msg=f"{kind} {name}", **TOL[dtype])
    return ref


CELLS = [("lstm", False), ("gru", False), ("rnn", False), ("rnn", True)]


def one_row(a, b, L):
    """The inputs of row b alone, for its own L steps (a batch of 1, full), outputs NaN."""
    rows = lambda v: v[:L, b:b + 1].copy()  # noqa: E731
    one = {k: np.full((L, 1) + a[k].shape[2:], np.nan, a[k].dtype) for k in ("acts", "ghn", "d1", "d2")}
    one.update(xproj=rows(a["xproj"]), dhs=rows(a["dhs"]), w_hh=a["w_hh"], b_hh=a["b_hh"], bs=np.ones(L, np.int64))
    one.update({k: a[k][b:b + 1].copy() for k in ("h0", "c0", "dh_n", "dc_n", "dh0", "dc0")})
    one.update({k: np.full((L + 1, 1, a["h0"].shape[1]), np.nan, a["h0"].dtype) for k in ("hs", "cs")})
    return one


def test_reference_rows_are_independent_and_keep_their_final_state():
    """The reference with batch_sizes == each row run alone for its own length; hs[T] = its final state;
    the gradients of the padded steps are 0."""
    lengths, T, H = [7, 7, 5, 2, 1], 7, 3
    for kind, relu in CELLS:
        a = kernel_case(kind, T, len(lengths), H, lengths, np.float64)
        full = run_kernels(R, kind, {k: v.copy() for k, v in a.items()}, relu=relu)
        for b, L in enumerate(lengths):
            alone = run_kernels(R, kind, one_row(a, b, L), relu=relu)
            np.testing.assert_allclose(full["hs"][:L + 1, b], alone["hs"][:, 0], rtol=1e-12)
            np.testing.assert_array_equal(full["hs"][L:, b], np.broadcast_to(full["hs"][L, b], (T + 1 - L, H)))
            np.testing.assert_allclose(full["d1"][:L, b], alone["d1"][:, 0], rtol=1e-12, atol=1e-14)
            np.testing.assert_array_equal(full["d1"][L:, b], 0)
            np.testing.assert_allclose(full["dh0"][b], alone["dh0"][0], rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind,relu", CELLS)
@pytest.mark.parametrize("T,B,H,lengths", [
    (7, 5, 19, [7, 7, 5, 2, 1]),               # B not a multiple of 4 (MR), H not a multiple of 16
    (6, 9, 70, [6, 6, 6, 6, 6, 4, 3, 3, 1]),   # H over one 64-unit chunk; a 4-row tile, then ragged
    (5, 3, 16, [3, 2, 2]),                     # T > max(lengths): steps with no active row
])
def test_cpu_kernels_match_reference(kind, relu, dtype, T, B, H, lengths):
    check_against_reference(CPU, kind, T, B, H, lengths, dtype, relu=relu)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind,relu", CELLS)
def test_cuda_kernels_match_reference(kind, relu, dtype):
    cuda = pytest.importorskip("numba.cuda")
    if not cuda.is_available():
        pytest.skip("neither a CUDA GPU nor the CUDA simulator is available")
    from tinyrnn.kernels import cuda as C
    from tinyrnn.kernels.cuda import device
    check_against_reference(C, kind, 5, 3, 5, [5, 3, 1], dtype, relu=relu,
                            to=device.to_device, back=device.to_host)


# ------------------------------------------------------------------------------------- layers
KINDS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
LENGTHS = [3, 7, 1, 5, 7]           # unsorted, with ties, a length-1 and a full-length sequence
LAYER_TOL = {np.float64: dict(rtol=1e-10, atol=1e-10), np.float32: dict(rtol=1e-5, atol=1e-5)}


def padded_batch(T, B, I, lengths, dtype, batch_first=False, seed=0, junk=1.0):
    """x (T, B, I) (or (B, T, I)) with ``junk`` times random numbers at the padded positions."""
    x = np.random.default_rng(seed).standard_normal((T, B, I))
    pad = np.arange(T)[:, None] >= np.asarray(lengths)[None, :]
    x[pad] *= junk
    x = x.astype(dtype)
    return np.ascontiguousarray(x.transpose(1, 0, 2)) if batch_first else x


def run_ours(layer, x_np, lengths, state_np, weights, requires_grad=True):
    """out, finals (list), loss and the tensors x, h0(, c0) of one forward + backward."""
    x = tr.Tensor(x_np, requires_grad=requires_grad)
    state = [tr.Tensor(s, requires_grad=requires_grad) for s in state_np]
    out, finals = layer(x, tuple(state) if len(state) == 2 else state[0], lengths=lengths)
    finals = list(finals) if isinstance(finals, tuple) else [finals]
    loss = (out * weights[0]).sum()
    for f, w in zip(finals, weights[1:]):
        loss = loss + (f * w).sum()
    loss.backward()
    return out, finals, [x] + state


def run_torch(torch, tl, x_np, lengths, state_np, weights, batch_first):
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
    x = torch.tensor(x_np, requires_grad=True)
    state = [torch.tensor(s, requires_grad=True) for s in state_np]
    packed = pack_padded_sequence(x, torch.tensor(lengths), batch_first=batch_first, enforce_sorted=False)
    out_p, finals = tl(packed, tuple(state) if len(state) == 2 else state[0])
    out, _ = pad_packed_sequence(out_p, batch_first=batch_first, total_length=x_np.shape[1 if batch_first else 0])
    finals = list(finals) if isinstance(finals, tuple) else [finals]
    loss = (out * torch.tensor(weights[0])).sum()
    for f, w in zip(finals, weights[1:]):
        loss = loss + (f * torch.tensor(w)).sum()
    loss.backward()
    return out, finals, [x] + state


def layer_case(kind, num_layers, bidirectional, dtype, batch_first, T=7, I=4, H=5, lengths=LENGTHS):
    B, D = len(lengths), 2 if bidirectional else 1
    rng = np.random.default_rng(1)
    x = padded_batch(T, B, I, lengths, dtype, batch_first)
    state = [rng.standard_normal((num_layers * D, B, H)).astype(dtype) for _ in range(2 if kind == "lstm" else 1)]
    out_shape = (B, T, D * H) if batch_first else (T, B, D * H)
    weights = [rng.standard_normal(s).astype(dtype) for s in [out_shape] + [s.shape for s in state]]
    return x, state, weights


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("num_layers,bidirectional,batch_first", [
    (1, False, False), (1, True, False), (2, False, True), (2, True, False), (2, True, True)])
def test_layer_matches_pytorch_packed(kind, num_layers, bidirectional, batch_first, dtype):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    tl = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind](
        4, 5, num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first,
        dtype=torch.float64 if dtype == np.float64 else torch.float32)
    ours = KINDS[kind](4, 5, num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first, dtype=dtype)
    ours.load_state_dict({k: v.detach().numpy() for k, v in tl.state_dict().items()})
    x, state, weights = layer_case(kind, num_layers, bidirectional, dtype, batch_first)
    out, finals, inputs = run_ours(ours, x, np.array(LENGTHS), state, weights)
    out_t, finals_t, inputs_t = run_torch(torch, tl, x, LENGTHS, state, weights, batch_first)
    tol = LAYER_TOL[dtype]
    np.testing.assert_allclose(out.data, out_t.detach().numpy(), **tol)
    pad = np.arange(7)[:, None] >= np.array(LENGTHS)[None, :]
    assert np.all((out.data.transpose(1, 0, 2) if batch_first else out.data)[pad] == 0)
    for a, b in zip(finals, finals_t):
        np.testing.assert_allclose(a.data, b.detach().numpy(), **tol)
    for a, b in zip(inputs, inputs_t):
        np.testing.assert_allclose(a.grad, b.grad.numpy(), **tol)
    dx = inputs[0].grad.transpose(1, 0, 2) if batch_first else inputs[0].grad
    assert np.all(dx[pad] == 0), "padding must get exactly zero gradient"
    params_t = dict(tl.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad, params_t[name].grad.numpy(), err_msg=name, **tol)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_gradcheck_bidirectional_two_layers(kind):
    tr.manual_seed(3)
    lengths = np.array([2, 4, 1])
    layer = KINDS[kind](2, 2, num_layers=2, bidirectional=True).double()
    x, state_np, _ = layer_case(kind, 2, True, np.float64, False, T=4, I=2, H=2, lengths=list(lengths))
    tensors = [tr.Tensor(a, requires_grad=True) for a in [x] + state_np]

    def run(x, *rest):
        state = rest[:len(state_np)]
        out, finals = layer(x, tuple(state) if len(state) == 2 else state[0], lengths=lengths)
        finals = list(finals) if isinstance(finals, tuple) else [finals]
        return ops.concat([out.reshape(-1)] + [f.reshape(-1) for f in finals], axis=0)

    assert gradcheck(run, tensors + layer.parameters())


def all_results(layer, x, lengths, state, weights):
    out, finals, inputs = run_ours(layer, x, lengths, state, weights)
    results = [out.data] + [f.data for f in finals] + [t.grad for t in inputs]
    return results + [p.grad for p in layer.parameters()]


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_fused_equals_composed(kind):
    tr.manual_seed(4)
    layer = KINDS[kind](4, 5, num_layers=2, bidirectional=True).double()
    x, state, weights = layer_case(kind, 2, True, np.float64, False)
    fused = all_results(layer, x, np.array(LENGTHS), state, weights)
    layer.zero_grad()
    layer.fused = False
    composed = all_results(layer, x, np.array(LENGTHS), state, weights)
    for a, b in zip(fused, composed):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "composed"])
def test_padding_junk_changes_nothing(kind, fused):
    tr.manual_seed(5)
    layer = KINDS[kind](4, 5, num_layers=2, bidirectional=True, fused=fused).double()
    x, state, weights = layer_case(kind, 2, True, np.float64, False)
    junk = padded_batch(7, len(LENGTHS), 4, LENGTHS, np.float64, junk=1e3)
    first = all_results(layer, x, np.array(LENGTHS), state, weights)
    layer.zero_grad()
    second = all_results(layer, junk, np.array(LENGTHS), state, weights)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_full_lengths_equal_no_lengths_and_sorted_skips_the_gather():
    tr.manual_seed(6)
    layer = nn.LSTM(4, 5, bidirectional=True).double()
    x, state, weights = layer_case("lstm", 1, True, np.float64, False, lengths=[7] * 5)
    with_lengths = all_results(layer, x, np.full(5, 7), state, weights)
    layer.zero_grad()
    without = all_results(layer, x, None, state, weights)
    for a, b in zip(with_lengths, without):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-13)
    out, _ = layer(tr.Tensor(x), lengths=[7, 6, 6, 2, 1])      # already sorted: no gather on the tape
    assert out._op == "concat"
    out, _ = layer(tr.Tensor(x), lengths=[6, 7, 6, 2, 1])      # not sorted: gathered back at the end
    assert out._op == "permute"


@pytest.mark.parametrize("bad,named", [([7, 0, 3, 1, 2], "bad values: [0]"), ([8, 9, 1, 1, 8], "bad values: [8, 9]"),
                                       ([-1, 2, 2, 2, 2], "bad values: [-1]"), ([1.5, 2, 2, 2, 2], "integers"),
                                       ([3, 3], "shape (5,)")])
def test_bad_lengths_raise_value_error_naming_them(bad, named):
    for layer in (nn.GRU(4, 5), nn.Bidirectional(nn.LSTM(4, 5))):
        with pytest.raises(ValueError, match=re.escape(named)):
            layer(tr.Tensor(np.zeros((7, 5, 4), np.float32)), lengths=bad)


@pytest.mark.parametrize("kind,merge_mode,batch_first", [("lstm", "concat", False), ("gru", "sum", False),
                                                        ("lstm", "concat", True)])
def test_bidirectional_wrapper_matches_pytorch(kind, merge_mode, batch_first):
    torch = pytest.importorskip("torch")
    torch.manual_seed(7)
    tl = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind](4, 5, bidirectional=True, batch_first=batch_first,
                                                             dtype=torch.float64)
    wrapper = nn.Bidirectional(KINDS[kind](4, 5, batch_first=batch_first, dtype=np.float64), merge_mode=merge_mode)
    sd = {k: v.detach().numpy() for k, v in tl.state_dict().items()}
    wrapper.forward_layer.load_state_dict({k: v for k, v in sd.items() if not k.endswith("_reverse")})
    wrapper.backward_layer.load_state_dict({k[:-len("_reverse")]: v for k, v in sd.items() if k.endswith("_reverse")})
    x, _, _ = layer_case(kind, 1, True, np.float64, batch_first)
    merged, (final_f, final_b) = wrapper(tr.Tensor(x), lengths=np.array(LENGTHS))
    weights = [np.ones(x.shape[:2] + (10,))] + [np.ones((2, 5, 5))] * (2 if kind == "lstm" else 1)
    out_t, finals_t, _ = run_torch(torch, tl, x, LENGTHS, [np.zeros((2, 5, 5))] * (len(weights) - 1), weights,
                                   batch_first)
    out_t = out_t.detach().numpy()
    expected = out_t if merge_mode == "concat" else out_t[..., :5] + out_t[..., 5:]
    np.testing.assert_allclose(merged.data, expected, rtol=1e-10, atol=1e-10)
    h_f, h_b = (final_f[0], final_b[0]) if kind == "lstm" else (final_f, final_b)
    np.testing.assert_allclose(h_f.data[0], finals_t[0].detach().numpy()[0], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(h_b.data[0], finals_t[0].detach().numpy()[1], rtol=1e-10, atol=1e-10)


def test_reverse_padded_is_its_own_inverse_and_gradient():
    x = tr.Tensor(np.arange(2 * 4 * 3, dtype=np.float64).reshape(4, 2, 3), requires_grad=True)
    y = ops.reverse_padded(x, [2, 4])
    np.testing.assert_array_equal(y.data[:, 0], x.data[[1, 0, 2, 3], 0])
    np.testing.assert_array_equal(y.data[:, 1], x.data[::-1, 1])
    np.testing.assert_array_equal(ops.reverse_padded(y, [2, 4]).data, x.data)
    assert gradcheck(lambda x: ops.reverse_padded(x, [2, 4]), [x])
    xb = tr.Tensor(np.ascontiguousarray(x.data.transpose(1, 0, 2)))
    np.testing.assert_array_equal(ops.reverse_padded(xb, [2, 4], axis=1).data, y.data.transpose(1, 0, 2))


def test_work_is_proportional_to_the_real_tokens():
    """Not a timing test: the kernels run sum(batch_sizes) row-steps, and that is sum(lengths)."""
    from tinyrnn.ops.recurrent import Steps
    lengths = np.array([64] * 4 + [8] * 28)
    for reverse in (False, True):
        steps = Steps(64, 32, reverse, lengths)
        assert steps.batch_sizes.sum() == lengths.sum() == 480
        assert list(steps.batch_sizes[[0, 7, 8, 63]]) == [32, 32, 4, 4]


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_embedding_input_with_lengths(kind, monkeypatch):
    """An embedding lookup as input (projected over the table, not the rows) == the same rows given densely.
    The lengths are unsorted, so the layer permutes the batch first: the permuted rows are still a lookup."""
    from tinyrnn.ops import recurrent as rec
    projected_rows = []
    project = rec._project
    monkeypatch.setattr(rec, "_project", lambda K, A, x2, w, b: projected_rows.append(x2.shape[0]) or project(K, A, x2, w, b))
    tr.manual_seed(8)
    layer = KINDS[kind](4, 5, bidirectional=True).double()
    table = np.random.default_rng(9).standard_normal((3, 4))       # V = 3 < T*B
    idx = np.random.default_rng(10).integers(0, 3, (7, 5))
    lengths = np.array(LENGTHS)
    E = tr.Tensor(table.copy(), requires_grad=True)
    out, _ = layer(ops.embedding(E, idx), lengths=lengths)
    assert projected_rows == [3, 3]              # both directions multiplied the 3-row table, not 23 tokens
    out.sum().backward()
    grads = [p.grad.copy() for p in layer.parameters()]
    layer.zero_grad()
    x = tr.Tensor(table[idx], requires_grad=True)
    out_dense, _ = layer(x, lengths=lengths)
    out_dense.sum().backward()
    np.testing.assert_allclose(out.data, out_dense.data, rtol=1e-12, atol=1e-13)
    for a, p in zip(grads, layer.parameters()):
        np.testing.assert_allclose(a, p.grad, rtol=1e-12, atol=1e-13)
    dE = np.zeros_like(table)
    np.add.at(dE, idx, x.grad)
    np.testing.assert_allclose(E.grad, dE, rtol=1e-12, atol=1e-13)
