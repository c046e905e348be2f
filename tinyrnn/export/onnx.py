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
"""
import json

import numpy as np

from ..errors import TinyRNNError

OPSET = 17
IR_VERSION = 8
FLOAT, INT64 = 1, 7          # onnx.TensorProto.FLOAT, onnx.TensorProto.INT64
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


def layer_weights(state, prefix, layer, cell, hidden):
    """PyTorch-layout weights of one layer -> ONNX's W (1, G*H, I), R (1, G*H, H), B (1, 2*G*H).

    state: {name: array} (``model.state_dict()``); prefix: "rnn" or "rnn_backward"."""
    def reorder(a):
        return np.concatenate([a[k * hidden:(k + 1) * hidden] for k in ORDER[cell]], axis=0)

    get = lambda name: state[f"{prefix}.{name}_l{layer}"].astype(np.float32)  # noqa: E731
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


def head(g, x, state):
    """Linear head: x (T, B, F) -> logits (T, B, V) = x @ head.weight^T + head.bias."""
    y = g.op("MatMul", [x, g.const("head.weight_t", state["head.weight"].T.astype(np.float32))], name="head.matmul")
    return g.op("Add", [y, g.const("head.bias", state["head.bias"].astype(np.float32))], name="logits")


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
    onnx = require_onnx()
    size = sum(a.nbytes for a in model.state_dict().values())
    if size > MAX_BYTES:
        raise TinyRNNError(f"the model's weights ({size / 1e9:.1f} GB) do not fit in one ONNX file (2 GB): "
                           "export it as safetensors or torch instead")
    helper = onnx.helper
    g = Graph(onnx)
    inputs, outputs = char_graph(g, model)
    kind = "fill-in" if model.bidir else "language"
    graph = helper.make_graph(g.nodes, f"tinyrnn_char_{model.cell}_{kind}",
                              [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
                              [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
                              initializer=g.initializers)
    proto = helper.make_model(graph, producer_name="tinyrnn", opset_imports=[helper.make_opsetid("", OPSET)],
                              doc_string=f"tinyrnn character {kind} model ({model.cell}, {model.layers} layers, "
                                         f"hidden {model.hidden})")
    proto.ir_version = IR_VERSION
    props = {"family": model.family, "config": json.dumps(model.config()),
             "vocab": json.dumps(vocab.chars, ensure_ascii=False)}
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
