"""The learning-curve benchmark (``tinyrnn.bench.curves``): its PyTorch side follows tinyrnn's recipe
(the same schedule, the same scoring of held-out text), and the picture is a well-formed SVG."""
import math
import xml.dom.minidom

import numpy as np
import pytest

from tinyrnn import Tensor, manual_seed, optim
from tinyrnn.train import TrainConfig
from tinyrnn.bench import curves
from tinyrnn.models import CharRNN


def test_schedule_is_tinyrnns_warmup_and_cosine():
    args = curves._parse(["corpus.txt", "--out", "x", "--lr", "0.006", "--warmup", "7"])
    horizon = 40
    opt = optim.SGD([Tensor(np.zeros(1), requires_grad=True)], lr=args.lr)
    sched = optim.WarmupLR(opt, args.warmup, after=optim.CosineLR(opt, horizon - args.warmup,
                                                               min_lr=args.lr * TrainConfig.FINAL_LR))
    for step in range(horizon + 5):                 # update number step + 1 runs with lr_at(step)
        assert curves.lr_at(step, args, horizon) == pytest.approx(opt.lr, rel=1e-12), step
        sched.step()
    assert curves.lr_at(horizon, args, horizon) == pytest.approx(args.lr * TrainConfig.FINAL_LR, abs=1e-15)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_torch_scoring_is_tinyrnn_eval(cell):
    """The same weights score the same bits/char in both (tinyrnn.generate.evaluate: what `tinyrnn eval` runs)."""
    torch = pytest.importorskip("torch")
    from tinyrnn.generate import evaluate

    manual_seed(3)
    ours = CharRNN(vocab_size=9, cell=cell, hidden=12, layers=2, embed=5)
    args = curves._parse(["corpus.txt", "--out", "x", "--cell", cell, "--hidden", "12", "--layers", "2", "--embed", "5"])
    theirs = curves.torch_model(args, 9)
    theirs.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in ours.state_dict().items()})
    ids = np.random.default_rng(0).integers(0, 9, size=3000)
    nats, _ = evaluate(ours, ids, batch_size=16, seq_len=256)
    assert curves.torch_bpc(theirs, ids) == pytest.approx(nats / math.log(2), rel=1e-5)


def test_svg_chart_is_well_formed():
    svg = curves.svg_chart({"a & b": ("#d62728", [(0, 3.0), (10, 2.5), (20, 2.2)]),
                            "c": ("#1f77b4", [(0, 3.1), (15, 2.4)])}, "title <x>", "seconds", "bits/char")
    doc = xml.dom.minidom.parseString(svg)                 # names are escaped: & and < stay text
    lines = doc.getElementsByTagName("polyline")
    assert len(lines) == 2 and len(lines[0].getAttribute("points").split()) == 3
    assert "a & b" in [t.firstChild.data for t in doc.getElementsByTagName("text")]
