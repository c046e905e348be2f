"""A character model as an ONNX graph built from ONNX's own ``LSTM`` / ``GRU`` / ``RNN`` operators.

Language model (unidirectional), the recurrent state explicit so a caller can stream one
character at a time (feed ``h_n``/``c_n`` back as ``h0``/``c0``; zeros to start):

    ids (T, B) int64 -> Gather(embed.weight) (T, B, E) -> layer 0 .. L-1 (T, B, H) -> MatMul + Add -> logits (T, B, V)
    h0, c0 (L, B, H) -> Split into layers -> initial_h / initial_c;  Y_h, Y_c of every layer -> Concat -> h_n, c_n (L, B, H)

    (``c0``/``c_n`` only for an LSTM.) T and B are dynamic (``dim_param`` "T" and "batch").

Fill-in model (``bidir=True``): ids (T, B) -> logits (T, B, V), no state. The backward stack is
the operators' ``direction="reverse"``: its output at t is the state after reading x_{T-1}..x_t,
in time order, exactly tinyrnn's ``bwd``. The shifts by one step are Pad + Slice:

    before = Slice(Pad(fwd, 1 zero step in front), 0 : T)     after = Slice(Pad(bwd, 1 zero step behind), 1 : T+1)
    logits = MatMul(Concat(before, after, axis=2)) + Add

Weights (PyTorch layout -> ONNX): per layer W (1, G*H, I), R (1, G*H, H), B (1, 2*G*H) = [b_ih, b_hh],
with the gate blocks reordered: LSTM i,f,g,o -> i,o,f,c; GRU r,z,n -> z,r,h (and
``linear_before_reset=1``: PyTorch applies r to W_hn h + b_hn, after the linear map); RNN: one
block, tanh. Opset 17 and IR version 8 (ONNX 1.12's pair): every operator used here is
unchanged since opset 14, and any ONNX Runtime since 1.12 (2022) loads the file.

Tagger (``tagger_model``): what a caller has at hand in, per-token scores out (int64, time-major):

    words = Gather(word_embed.weight, word_ids (T, B))                                   (T, B, word_dim)
    chars = Gather(char_embed.weight, char_ids (T, B, W) -> (W, T*B))                    (W, T*B, char_dim)
    Y_h = BiOp(chars, sequence_lens = max(char_lengths (T, B), 1) -> (T*B,))             (2, T*B, char_hidden)
    x = Concat(words, [Y_h forward ; Y_h backward] -> (T, B, 2*char_hidden), axis=2)
    per sentence layer: x = BiOp(x, sequence_lens = lengths (B,)).Y -> [forward ; backward]   (T, B, 2*hidden)
    emissions = MatMul + Add (T, B, K);  with a CRF also transitions (K, K), start (K,), end (K,)

(BiOp: one LSTM/GRU/RNN operator with ``direction="bidirectional"``, W/R/B of the forward weights
then the ``_reverse`` ones; a padding token's length becomes 1: it reads one <pad> and is never scored.)

``sequence_lens`` gives PyTorch's packed-sequence semantics: the reverse direction starts at each
sequence's own last step, Y is zero beyond it, and Y_h holds the forward state at the last step
and the reverse one at the first, which is ``Tagger.char_vectors``'s [h_n forward ; h_n backward].
T, B and W are dynamic; an input whose half the model lacks (word_dim=0, char_hidden=0) is left
out. Decoding is the caller's: argmax, or Viterbi with the CRF outputs.
"""
import json

import numpy as np

from ..errors import TinyRNNError

OPSET = 17
IR_VERSION = 8
FLOAT, INT32, INT64 = 1, 6, 7   # onnx.TensorProto.FLOAT, .INT32, .INT64
MAX_BYTES = 2_000_000_000    # a protobuf message (one .onnx file with its weights) stays under 2 GiB
OPS = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}
# ONNX's gate order as indices of PyTorch's gate blocks: position k of the ONNX weight holds block ORDER[k].
ORDER = {"rnn": [0], "lstm": [0, 3, 1, 2], "gru": [1, 0, 2]}
INSTALL = "pip install 'tinyrnn[onnx]' (onnx and onnxruntime)"


def require_onnx():
    """The ``onnx`` module, or one TinyRNNError saying what to install."""
    try:
        import onnx
        import onnx.numpy_helper  # noqa: F401
    except ImportError:
        raise TinyRNNError(f"ONNX export needs the onnx package: {INSTALL}") from None
    except Exception as e:      # installed but broken, e.g. onnx >= 1.17 with an ml_dtypes too old for it
        raise TinyRNNError(f"the onnx package is installed but does not import ({type(e).__name__}: {e}): "
                           "pip install -U onnx ml_dtypes (onnx 1.16 if your numpy is older than 1.24)") from None
    return onnx


class Graph:
    """Collects nodes and initializers; ``op`` adds a node and returns its output name(s)."""

    def __init__(self, onnx):
        self.onnx, self.nodes, self.initializers, self.names = onnx, [], [], set()

    def const(self, name, array):
        """An initializer (a constant); a second call with the same name reuses the first."""
        if name not in self.names:
            self.names.add(name)
            self.initializers.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def ints(self, name, values):
        return self.const(name, np.asarray(values, dtype=np.int64))

    def op(self, op_type, inputs, n_out=1, name=None, **attrs):
        name = name or f"{op_type}_{len(self.nodes)}"
        outputs = [name] if n_out == 1 else [f"{name}_{k}" for k in range(n_out)]
        self.nodes.append(self.onnx.helper.make_node(op_type, inputs, outputs, name=name, **attrs))
        return outputs[0] if n_out == 1 else outputs


def layer_weights(state, prefix, layer, cell, hidden, suffix=""):
    """PyTorch-layout weights of one layer -> ONNX's W (1, G*H, I), R (1, G*H, H), B (1, 2*G*H).

    state: {name: array} (``model.state_dict()``); prefix: "rnn" or "rnn_backward" (a tagger's
    "char_rnn" or "rnn"); suffix: "" or "_reverse" (the backward direction of a bidirectional layer)."""
    def reorder(a):
        return np.concatenate([a[k * hidden:(k + 1) * hidden] for k in ORDER[cell]], axis=0)

    get = lambda name: state[f"{prefix}.{name}_l{layer}{suffix}"].astype(np.float32)  # noqa: E731
    W, R = reorder(get("weight_ih"))[None], reorder(get("weight_hh"))[None]
    B = np.concatenate([reorder(get("bias_ih")), reorder(get("bias_hh"))])[None]
    return W, R, B


def stack(g, x, state, prefix, cfg, direction="forward", h0=None, c0=None):
    """One recurrent stack of ``cfg["layers"]`` ONNX operators over x (T, B, I).

    h0, c0: per-layer initial state names ((1, B, H) each) or None for zeros.
    Returns (output name (T, B, H), [Y_h per layer], [Y_c per layer] (LSTM) or [])."""
    cell, H = cfg["cell"], cfg["hidden"]
    squeeze_axis = g.ints("axis_1", [1])
    finals_h, finals_c = [], []
    for k in range(cfg["layers"]):
        W, R, B = layer_weights(state, prefix, k, cell, H)
        name = f"{prefix}.l{k}"
        inputs = [x, g.const(f"{name}.W", W), g.const(f"{name}.R", R), g.const(f"{name}.B", B), "",
                  h0[k] if h0 else ""]
        if cell == "lstm":
            inputs.append(c0[k] if c0 else "")
        attrs = {"linear_before_reset": 1} if cell == "gru" else {}
        outs = g.op(OPS[cell], inputs, n_out=3 if cell == "lstm" else 2, name=name, hidden_size=H,
                    direction=direction, **attrs)
        x = g.op("Squeeze", [outs[0], squeeze_axis], name=f"{name}.out")      # (T, 1, B, H) -> (T, B, H)
        finals_h.append(outs[1])
        if cell == "lstm":
            finals_c.append(outs[2])
    return x, finals_h, finals_c


def head(g, x, state, name="logits"):
    """Linear head: x (T, B, F) -> logits (T, B, V) = x @ head.weight^T + head.bias."""
    y = g.op("MatMul", [x, g.const("head.weight_t", state["head.weight"].T.astype(np.float32))], name="head.matmul")
    return g.op("Add", [y, g.const("head.bias", state["head.bias"].astype(np.float32))], name=name)


def char_graph(g, model):
    """The nodes of a ``CharRNN``'s graph -> (inputs, outputs), each a list of (name, elem type, shape)."""
    cfg, state = model.config(), model.state_dict()
    x = g.op("Gather", [g.const("embed.weight", state["embed.weight"].astype(np.float32)), "ids"],
             name="embed", axis=0)                                                     # (T, B, E)
    ids = ("ids", INT64, ["T", "batch"])
    if cfg["bidir"]:
        return [ids], [(fill_logits(g, x, state, cfg), FLOAT, ["T", "batch", cfg["vocab_size"]])]
    inputs, outputs = language_model(g, x, state, cfg)
    return [ids] + inputs, outputs


def language_model(g, x, state, cfg):
    """Embedded input x (T, B, E) -> logits and the final state; the initial state as graph inputs."""
    L, H, lstm = cfg["layers"], cfg["hidden"], cfg["cell"] == "lstm"
    names = ["h0", "c0"] if lstm else ["h0"]
    per_layer = [g.op("Split", [n], n_out=L, name=f"{n}.layers", axis=0) if L > 1 else [n] for n in names]
    out, finals_h, finals_c = stack(g, x, state, "rnn", cfg, h0=per_layer[0], c0=per_layer[1] if lstm else None)
    state_shape = [L, "batch", H]
    outputs = [(head(g, out, state), FLOAT, ["T", "batch", cfg["vocab_size"]]),
               (g.op("Concat", finals_h, name="h_n", axis=0), FLOAT, state_shape)]
    if lstm:
        outputs.append((g.op("Concat", finals_c, name="c_n", axis=0), FLOAT, state_shape))
    return [(n, FLOAT, state_shape) for n in names], outputs


def fill_logits(g, x, state, cfg):
    """Embedded input x (T, B, E) -> fill-in logits (T, B, V): logits[t] sees x[:t] and x[t+1:] only."""
    fwd, _, _ = stack(g, x, state, "rnn", cfg)                                   # fwd[t]: after x_0..x_t
    bwd, _, _ = stack(g, x, state, "rnn_backward", cfg, direction="reverse")    # bwd[t]: after x_{T-1}..x_t
    time, start, stop = g.ints("time_axis", [0]), g.ints("zero", [0]), g.ints("minus_one", [-1])
    front = g.op("Pad", [fwd, g.ints("pad_front", [1, 0, 0, 0, 0, 0])], name="before.pad")   # (T+1, B, H)
    before = g.op("Slice", [front, start, stop, time], name="before")           # before[t]: after x_0..x_{t-1}
    back = g.op("Pad", [bwd, g.ints("pad_back", [0, 0, 0, 1, 0, 0])], name="after.pad")      # (T+1, B, H)
    end = g.ints("end", [np.iinfo(np.int64).max])
    after = g.op("Slice", [back, g.ints("one", [1]), end, time], name="after")  # after[t]: after x_{T-1}..x_{t+1}
    return head(g, g.op("Concat", [before, after], name="features", axis=2), state)


def char_model(model, vocab, meta=None):
    """A ``CharRNN`` (and its ``Vocab``) -> a checked ``onnx.ModelProto``.

    The model's metadata_props hold ``family``, ``config`` and ``vocab`` (JSON strings), so a
    caller can map ids to characters and size the state from the file alone."""
    kind = "fill-in" if model.bidir else "language"
    return build_model(model, char_graph, f"tinyrnn_char_{model.cell}_{kind}",
                       f"tinyrnn character {kind} model ({model.cell}, {model.layers} layers, hidden {model.hidden})",
                       {"vocab": json.dumps(vocab.chars, ensure_ascii=False)}, meta)


def build_model(model, graph_fn, graph_name, doc, props, meta=None):
    """``graph_fn(g, model) -> (inputs, outputs)`` as a checked ModelProto with ``props`` (plus family,
    config and step) in its metadata_props; refused with one line when the weights exceed 2 GB."""
    onnx = require_onnx()
    size = sum(a.nbytes for a in model.state_dict().values())
    if size > MAX_BYTES:
        raise TinyRNNError(f"the model's weights ({size / 1e9:.1f} GB) do not fit in one ONNX file (2 GB): "
                           "export it as safetensors or torch instead")
    helper = onnx.helper
    g = Graph(onnx)
    inputs, outputs = graph_fn(g, model)
    graph = helper.make_graph(g.nodes, graph_name,
                              [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
                              [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
                              initializer=g.initializers)
    proto = helper.make_model(graph, producer_name="tinyrnn", opset_imports=[helper.make_opsetid("", OPSET)],
                              doc_string=doc)
    proto.ir_version = IR_VERSION
    props = {"family": model.family, "config": json.dumps(model.config()), **props}
    if meta and "step" in meta:
        props["step"] = str(meta["step"])
    helper.set_model_props(proto, props)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def write_char(model, vocab, meta, out):
    """Export a character model to ``out`` (an .onnx file) -> [out]."""
    from . import atomic_write

    atomic_write(out, char_model(model, vocab, meta).SerializeToString())
    return [out]


# ----------------------------------------------------------------------------- taggers

def bidir_layer(g, x, state, prefix, layer, cell, hidden, seq_lens):
    """One bidirectional ONNX operator over x (S, N, I), each sequence n read up to seq_lens[n] (int32).

    Returns (Y (S, N, 2H): [forward ; backward] at each step, zero beyond a sequence's length,
    Y_h (2, N, H): the forward state at each sequence's last step, the backward one at its first)."""
    both = [layer_weights(state, prefix, layer, cell, hidden, suffix) for suffix in ("", "_reverse")]
    W, R, B = (np.concatenate(parts, axis=0) for parts in zip(*both))          # (2, ...): forward first
    name = f"{prefix}.l{layer}"
    attrs = {"linear_before_reset": 1} if cell == "gru" else {}
    y, y_h = g.op(OPS[cell], [x, g.const(f"{name}.W", W), g.const(f"{name}.R", R), g.const(f"{name}.B", B),
                              seq_lens], n_out=2, name=name, hidden_size=hidden, direction="bidirectional", **attrs)
    y = g.op("Transpose", [y], name=f"{name}.steps", perm=[0, 2, 1, 3])        # (S, 2, N, H) -> (S, N, 2, H)
    return g.op("Reshape", [y, g.ints("keep_keep_merge", [0, 0, -1])], name=f"{name}.out"), y_h


def tagger_graph(g, model):
    """The nodes of a ``Tagger``'s graph -> (inputs, outputs), each a list of (name, elem type, shape)."""
    cfg, state = model.config(), model.state_dict()
    f32 = lambda name: state[name].astype(np.float32)  # noqa: E731
    inputs, parts = [], []
    if cfg["word_dim"]:
        inputs.append(("word_ids", INT64, ["T", "batch"]))
        parts.append(g.op("Gather", [g.const("word_embed.weight", f32("word_embed.weight")), "word_ids"],
                          name="word_vectors", axis=0))                               # (T, B, word_dim)
    if cfg["char_hidden"]:
        inputs += [("char_ids", INT64, ["T", "batch", "W"]), ("char_lengths", INT64, ["T", "batch"])]
        parts.append(char_vectors(g, state, cfg))                                    # (T, B, 2*char_hidden)
    inputs.append(("lengths", INT64, ["batch"]))
    x = parts[0] if len(parts) == 1 else g.op("Concat", parts, name="token_vectors", axis=2)
    lengths = g.op("Cast", ["lengths"], name="sentence_lengths", to=INT32)
    for k in range(cfg["layers"]):
        x, _ = bidir_layer(g, x, state, "rnn", k, cfg["cell"], cfg["hidden"], lengths)   # (T, B, 2*hidden)
    K = state["head.bias"].shape[0]
    outputs = [(head(g, x, state, name="emissions"), FLOAT, ["T", "batch", K])]
    if cfg["crf"]:
        for name, shape in (("transitions", [K, K]), ("start", [K]), ("end", [K])):
            outputs.append((g.op("Identity", [g.const(f"crf.{name}", f32(f"crf.{name}"))], name=name), FLOAT, shape))
    return inputs, outputs


def char_vectors(g, state, cfg):
    """char_ids (T, B, W), char_lengths (T, B) -> (T, B, 2*char_hidden): each token's [forward h_n ; backward h_n].

    The T*B tokens are one batch of character sequences, time-major (W, T*B); a length below 1
    (a padding token) reads one <pad> character instead, harmless: padding never reaches a score."""
    chars = g.op("Transpose", ["char_ids"], name="chars.time_major", perm=[2, 0, 1])          # (W, T, B)
    chars = g.op("Reshape", [chars, g.ints("keep_merge", [0, -1])], name="chars.flat")        # (W, T*B)
    x = g.op("Gather", [g.const("char_embed.weight", state["char_embed.weight"].astype(np.float32)), chars],
             name="char_embed", axis=0)                                                        # (W, T*B, char_dim)
    n = g.op("Reshape", ["char_lengths", g.ints("flat", [-1])], name="char_lengths.flat")     # (T*B,)
    n = g.op("Max", [n, g.ints("one_length", [1])], name="char_lengths.at_least_1")
    n = g.op("Cast", [n], name="char_lengths.int32", to=INT32)
    _, y_h = bidir_layer(g, x, state, "char_rnn", 0, cfg["char_cell"], cfg["char_hidden"], n)   # (2, T*B, H)
    h = g.op("Transpose", [y_h], name="char_states", perm=[1, 0, 2])                          # (T*B, 2, H)
    shape = g.op("Concat", [g.op("Shape", ["char_lengths"], name="tokens_shape"),
                            g.ints("char_vector_size", [2 * cfg["char_hidden"]])], name="char_vectors_shape", axis=0)
    return g.op("Reshape", [h, shape], name="char_vectors")                                   # (T, B, 2H)


def tagger_model(model, vocabs, meta=None):
    """A ``Tagger`` (and its ``TaggerVocabs``) -> a checked ``onnx.ModelProto``.

    metadata_props: ``family`` ("tagger"), ``config``, ``vocab`` ({"words", "chars", "tags"}: each
    ``Vocab.to_json()``) and ``column`` (the CoNLL-U column it tags), JSON strings."""
    props = {"vocab": json.dumps({k: v.to_json() for k, v in vocabs._asdict().items()}, ensure_ascii=False),
             "column": (meta or {}).get("column", "upos")}
    crf = ", CRF: Viterbi over emissions with the transitions/start/end outputs" if model.use_crf else ""
    return build_model(model, tagger_graph, f"tinyrnn_tagger_{model.cell}",
                       f"tinyrnn tagger ({model.cell}, {model.layers} sentence layers, hidden {model.hidden}, "
                       f"char {model.char_cell} {model.char_hidden}{crf})", props, meta)


def write_tagger(model, vocabs, meta, out):
    """Export a tagger to ``out`` (an .onnx file) -> [out]."""
    from . import atomic_write

    atomic_write(out, tagger_model(model, vocabs, meta).SerializeToString())
    return [out]
