"""CLI options and promises that had no test, each checked by value: eval's bits/char and
`sample --argmax` against PyTorch running the checkpoint's weights, `fill --mask`, --epochs,
--time-limit, --val-frac 0, --lr-schedule step, the optimizer choices, the inf-gradient stop, the
default run directory, --version, the progress bar, `tinyrnn bench`."""
import json
import math
import os
import re
from dataclasses import replace

import numpy as np
import pytest

from tinyrnn import checkpoint
from _cli import fails, ok
from test_cli import TEXT

TINY = ["--hidden", "16", "--layers", "1", "--embed", "8", "--batch-size", "4", "--seq-len", "16",
        "--eval-every", "4", "--save-every", "4", "--quiet"]


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return str(path)


def rows(run_dir):
    return [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8")]


def torch_model(run_dir):
    """The checkpoint's weights in torch.nn.Embedding / LSTM / Linear (float64)."""
    torch = pytest.importorskip("torch")
    meta, arrays = checkpoint.load(os.path.join(run_dir, "last"))
    cfg = meta["model"]
    w = {k[len("model/"):]: torch.tensor(np.asarray(v, np.float64)) for k, v in arrays.items() if k.startswith("model/")}
    emb = torch.nn.Embedding(cfg["vocab_size"], cfg["embed"]).double()
    lstm = torch.nn.LSTM(cfg["embed"], cfg["hidden"], cfg["layers"]).double()
    head = torch.nn.Linear(cfg["hidden"], cfg["vocab_size"]).double()
    emb.load_state_dict({"weight": w["embed.weight"]})
    lstm.load_state_dict({k[len("rnn."):]: v for k, v in w.items() if k.startswith("rnn.")})
    head.load_state_dict({"weight": w["head.weight"], "bias": w["head.bias"]})
    return torch, emb, lstm, head, meta["vocab"]


@pytest.fixture
def lstm_run(tmp_path, corpus):
    out = tmp_path / "run"
    ok("train", corpus, *TINY, "--steps", "8", "--out", out)
    return out


def test_eval_bits_per_char_matches_torch(lstm_run, tmp_path):
    torch, emb, lstm, head, vocab = torch_model(lstm_run)
    text = TEXT[:700]
    held = tmp_path / "held.txt"
    held.write_text(text, encoding="utf-8")
    r = ok("eval", lstm_run, held, "--batch-size", "3", "--seq-len", "32")
    bpc = float(re.search(r": ([0-9.]+) bits/char", r.stdout).group(1))
    count = int(re.search(r"\((\d+) characters scored\)", r.stdout).group(1))
    # the same streams: 3 equal segments of the text, each read as one sequence (the state carried)
    ids = np.array([vocab.index(c) for c in text])
    seg = (len(ids) - 1) // 3
    nll, n = 0.0, 0
    with torch.no_grad():
        for b in range(3):
            s = torch.tensor(ids[b * seg: b * seg + seg + 1])
            out, _ = lstm(emb(s[:-1])[:, None, :])
            logp = torch.log_softmax(head(out[:, 0]), dim=-1)
            nll -= logp[torch.arange(seg), s[1:]].sum().item()
            n += seg
    assert count == n
    assert bpc == pytest.approx(nll / n / math.log(2), abs=1e-4)
    perplexity = float(re.search(r"perplexity ([0-9.]+)", r.stdout).group(1))
    assert perplexity == pytest.approx(math.exp(nll / n), rel=1e-3)


@pytest.mark.parametrize("weights", ["f32", "bf16", "int8"])
def test_sample_argmax_is_the_greedy_decode(lstm_run, weights):
    """Greedy sampling is PyTorch's greedy decode of the checkpoint's weights (w_hh and the head
    rounded to bfloat16 for --weights bf16, the default; layer 0's w_ih stays float, as sampling
    reads its products from a table). --weights int8 also rounds each product's vector to 8-bit
    integers, which PyTorch does not, and this 8-step model's next characters are near ties: its
    greedy decode is the numpy reference generator's, from the same int8 weights."""
    torch, emb, lstm, head, vocab = torch_model(lstm_run)
    if weights == "bf16":
        from tinyrnn.generate import rounded      # the values a matrix has once stored in that format

        with torch.no_grad():
            for p in [head.weight, lstm.weight_hh_l0]:
                p.copy_(torch.from_numpy(np.asarray(rounded(p.numpy(), weights), dtype=np.float64)))
    prime, length = "the ", 30
    flags = () if weights == "bf16" else ("--weights", weights)       # bf16 is the default
    text = ok("sample", lstm_run, "--prime", prime, "--length", length, "--argmax", *flags).stdout.removesuffix("\n")
    if weights == "int8":
        from tinyrnn.checkpoint import load_model
        from tinyrnn.generate import generation_weights, run_generation
        from tinyrnn.kernels import reference

        model = load_model(os.path.join(lstm_run, "last"))[0]
        h = np.zeros((1, model.hidden), model.embed.weight.dtype)        # the state in the model's dtype, as sampling keeps it
        c, out = np.zeros_like(h), np.empty(length, np.int64)
        run_generation(reference, model, generation_weights(model, "int8"), h, c,
                       np.array([vocab.index(ch) for ch in prime]), np.zeros(length), 0.0, 0, 1.0, out)
        assert text == prime + "".join(vocab[i] for i in out)
    else:
        state, out = None, []
        with torch.no_grad():
            x = torch.tensor([vocab.index(c) for c in prime])
            for _ in range(length):
                y, state = lstm(emb(x)[:, None, :], state)
                nxt = int(torch.argmax(head(y[-1, 0])))
                out.append(vocab[nxt])
                x = torch.tensor([nxt])
        assert text == prime + "".join(out)
    # --temperature 0 is --argmax too; --top-k 1 as well, whatever the seed
    assert ok("sample", lstm_run, "--prime", prime, "--length", length, "--temperature", "0",
              *flags).stdout.rstrip("\n") == text
    assert ok("sample", lstm_run, "--prime", prime, "--length", length, "--top-k", "1", "--seed", "5",
              "--temperature", "1.5", *flags).stdout.rstrip("\n") == text


def test_eval_weights_scores_the_rounded_weights(lstm_run, tmp_path):
    held = tmp_path / "held.txt"
    held.write_text(TEXT[:700], encoding="utf-8")

    def bpc(*flags):
        return float(re.search(r": ([0-9.]+) bits/char", ok("eval", lstm_run, held, *flags).stdout).group(1))

    f32, bf16, int8 = bpc(), bpc("--weights", "bf16"), bpc("--weights", "int8")
    assert bpc("--weights", "f32") == f32
    assert abs(bf16 - f32) < 0.01 and abs(int8 - f32) < 0.03              # the quality bars
    from tinyrnn.generate import evaluate, round_to_weights

    for weights, measured in (("bf16", bf16), ("int8", int8)):
        model, vocab, _ = checkpoint.load_model(str(lstm_run))
        ids = np.array([vocab.index[c] for c in TEXT[:700]])
        loss, _ = evaluate(round_to_weights(model, weights), ids, batch_size=16, seq_len=256)
        assert measured == pytest.approx(loss / math.log(2), abs=1e-4)
    fails(["sample", lstm_run, "--weights", "int4"], "--weights")


def test_fill_mask_option_is_the_gap_character(tmp_path, corpus):
    out = tmp_path / "bi"
    ok("train", corpus, *TINY, "--bidir", "--steps", "6", "--out", out)
    default = ok("fill", out, "th_ qu_ck br_wn").stdout.rstrip("\n")
    star = ok("fill", out, "th* qu*ck br*wn", "--mask", "*").stdout.rstrip("\n")
    assert star == default and "*" not in star and "_" not in star
    assert star[:2] == "th" and star[4:6] == "qu" and star[7:9] == "ck"
    # with --mask *, '_' is no gap: an ordinary character (not in this vocabulary: an error)
    fails(["fill", out, "th_ qu*ck", "--mask", "*"], "never saw", "'_'")


def test_epochs_sets_the_number_of_steps(tmp_path, corpus):
    ok("train", corpus, *TINY, "--epochs", "1", "--out", tmp_path / "one")
    ok("train", corpus, *TINY, "--epochs", "2.5", "--out", tmp_path / "more")
    meta1, _ = checkpoint.load(tmp_path / "one" / "last")
    meta2, _ = checkpoint.load(tmp_path / "more" / "last")
    n1, n2 = meta1["step"], meta2["step"]
    assert n2 == math.ceil(2.5 * n1)
    # one epoch reads the training text once: B streams advancing seq_len characters per step
    B, T = 4, 16
    train_chars = meta1["data"]["train_chars"]
    assert train_chars - B * 3 * (T + 1) <= n1 * B * T <= train_chars


def test_time_limit_stops_and_saves(tmp_path, corpus):
    import time

    t0 = time.perf_counter()
    r = ok("train", corpus, *TINY, "--time-limit", "1.5", "--out", tmp_path / "run")
    elapsed = time.perf_counter() - t0
    m = re.match(r"time limit: step (\d+) in", r.stdout)
    assert m, r.stdout
    meta, _ = checkpoint.load(tmp_path / "run" / "last")
    assert meta["step"] == int(m.group(1)) > 0 and elapsed >= 1.5


class _StepClock:
    """The trainer's clock, advanced by each training step alone (``seconds_per_step(step)``): a
    time-limit run trains the same steps however loaded the machine is, and its pace can change."""

    def __init__(self, monkeypatch, seconds_per_step):
        import types

        import tinyrnn.trainer as trainer_module

        self.now, self.seconds_per_step = 0.0, seconds_per_step
        real_step = trainer_module.Trainer.train_step

        def train_step(trainer):
            self.now += self.seconds_per_step(trainer.step)
            return real_step(trainer)

        monkeypatch.setattr(trainer_module, "time", types.SimpleNamespace(perf_counter=lambda: self.now))
        monkeypatch.setattr(trainer_module.Trainer, "train_step", train_step)


@pytest.mark.parametrize("pace", ["steady", "halved at step 256"])
def test_time_limit_fits_the_schedule_to_the_budget(tmp_path, corpus, monkeypatch, pace):
    """With only --time-limit the cosine decay ends at the limit: the last logged lr is near its floor
    (a fixed guess of the run's length would leave it near the peak or at the floor long before),
    also when the steps slow down half way (the horizon is refitted every log window). On a clock
    that steps alone advance: 4 s at 1/256 s a step (1/128 s from step 256 when halved; both exact in
    binary, so the steps that fit are exact too)."""
    slow_from = 256 if pace != "steady" else None
    _StepClock(monkeypatch, lambda step: 2.0 ** -7 if slow_from is not None and step >= slow_from else 2.0 ** -8)
    out = tmp_path / "run"
    ok("train", corpus, *TINY, "--warmup", "5", "--lr", "0.01", "--time-limit", "4", "--out", out)
    meta, _ = checkpoint.load(out / "last")
    assert meta["step"] == (1024 if slow_from is None else 256 + 384)
    lrs = [row["lr"] for row in rows(out) if "lr" in row]
    assert len(lrs) == meta["step"] // 10
    assert max(lrs) > 0.009                        # it did run near the peak
    # at the floor (0 for char models) when the time ran out; had the horizon stayed where the first
    # steps' pace put it (1024), the halved run would end at lr 0.0031
    assert lrs[-1] < 0.0005
    horizon = meta["schedule"]["warmup_steps"] + meta["schedule"]["after"]["total_steps"]
    # the saved horizon is where the run ended, within a log window (it is refitted every 10 steps)
    assert meta["step"] - 10 <= horizon <= meta["step"] + 10


def test_time_limit_alone_trains_the_budget_settings(tmp_path, corpus):
    """`train CORPUS --time-limit S` with no model or window option trains BUDGET_DEFAULTS (a GRU 2x384
    on windows of 96 at lr 5e-3), says so in one line, and names the run after that cell."""
    from tinyrnn.train import BUDGET_DEFAULTS, BUDGET_DROPOUT_FROM, BUDGET_PASSES, TrainConfig, budget_passes

    out = tmp_path / "run"
    r = ok("train", corpus, "--time-limit", "1", "--eval-every", "4", "--quiet", "--out", out)
    meta, _ = checkpoint.load(out / "last")
    saved = meta["train_config"]
    assert {name: saved[name] for name in BUDGET_DEFAULTS} == BUDGET_DEFAULTS
    assert (meta["model"]["cell"], meta["model"]["hidden"], meta["model"]["layers"]) == ("gru", 384, 2)
    assert saved["embed"] == 64 and saved["batch_size"] == 32 and meta["step"] > 0
    budget_lines = [line for line in r.stderr.splitlines() if "budget" in line]
    assert len(budget_lines) == 1 and "GRU 2x384" in budget_lines[0] and "--cell" in budget_lines[0], r.stderr
    # a second of the budget GRU's 20K chars/s would read this 2.5 KB text 9 times: 8 passes, dropout 0.2
    assert budget_passes(TrainConfig(corpus=corpus, time_limit=1.0)) >= BUDGET_DROPOUT_FROM
    assert saved["dropout"] == 0.2 and meta["model"]["dropout"] == 0.2 and saved["epochs"] == BUDGET_PASSES
    assert re.search(r"with dropout 0.2, stopping after 8 passes over the text \(1 s would read it about \d+ "
                     r"times on 2 cores; from 7 the model overfits\)", budget_lines[0]), budget_lines[0]


@pytest.mark.parametrize("option", ["cell", "layers", "hidden", "embed", "bidir", "optimizer", "lr", "batch_size",
                                    "seq_len", "steps", "epochs"])
def test_any_model_or_window_option_keeps_a_budget_on_the_plain_defaults(option):
    from tinyrnn.train import BUDGET_CHOICES, TrainConfig, budget_defaults

    assert option in BUDGET_CHOICES
    cfg = TrainConfig(time_limit=60.0)
    assert budget_defaults(cfg, {option, "threads", "seed"}) is cfg
    # none of these is a choice of model or window; --dropout regularises whichever model trains
    cfg = TrainConfig(time_limit=60.0, dropout=0.2)
    chosen = budget_defaults(cfg, {"threads", "seed", "clip", "warmup", "val_frac", "dropout"})
    assert (chosen.cell, chosen.hidden, chosen.seq_len, chosen.lr) == ("gru", 384, 96, 5e-3)
    assert (chosen.layers, chosen.embed, chosen.batch_size, chosen.time_limit, chosen.dropout) == (2, 64, 32, 60.0, 0.2)


def test_a_budget_that_reads_its_text_many_times_stops_after_8_passes_with_dropout(tmp_path):
    """Foreseen passes = seconds x BUDGET_CHARS_PER_S / (bytes x (1 - val_frac)). From 7, the run stops
    after 8 passes (--epochs 8; measured: 7-8 passes beat 10-12) with dropout 0.2 (measured: it costs
    bits/char at 4-6.5 passes and gains at 7.5-12), unless the user set --dropout (0 too)."""
    from tinyrnn.train import (BUDGET_CHARS_PER_S, BUDGET_DROPOUT_FROM, TrainConfig, budget_defaults,
                               budget_passes, describe_budget_defaults)

    path = tmp_path / "text.txt"
    path.write_bytes(b"ab\n" * 3000)                             # 9000 bytes, 8100 of them for training
    seconds_per_pass = 8100 / BUDGET_CHARS_PER_S
    for passes, capped in ((4, False), (BUDGET_DROPOUT_FROM - 0.01, False), (BUDGET_DROPOUT_FROM, True), (12, True)):
        cfg = TrainConfig(corpus=str(path), time_limit=passes * seconds_per_pass)
        assert budget_passes(cfg) == pytest.approx(passes)
        chosen = budget_defaults(cfg, {"seed"})
        assert chosen.cell == "gru" and (chosen.dropout, chosen.epochs) == ((0.2, 8.0) if capped else (0.0, None))
        line = describe_budget_defaults(chosen)
        assert ("with dropout 0.2, stopping after 8 passes over the text" in line) == capped, line
        for mine in (0.0, 0.1):                                   # the user's --dropout, 0 included, stands
            own = budget_defaults(replace(cfg, dropout=mine), {"dropout"})
            assert (own.dropout, own.epochs) == (mine, 8.0 if capped else None)
    cfg = TrainConfig(corpus=str(path), time_limit=12 * seconds_per_pass, val_frac=0.5)   # 4500 to train on
    assert budget_passes(cfg) == pytest.approx(12 * 8100 / 4500)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for unknown in (str(fifo), str(tmp_path / "missing.txt")):    # no size beforehand: no cap, no dropout
        cfg = TrainConfig(corpus=unknown, time_limit=600.0)
        chosen = budget_defaults(cfg, set())
        assert budget_passes(cfg) == 0.0 and (chosen.dropout, chosen.epochs) == (0.0, None)


def test_a_long_budget_trains_at_half_the_learning_rate(tmp_path):
    """Foreseen updates = seconds x BUDGET_CHARS_PER_S / (batch x window), or 8 passes' when the run stops
    on them first. From BUDGET_LONG_FROM updates the budget's lr is BUDGET_LONG_LR (measured: better from
    1,800 updates, worse at 1,200-1,500), and the first line says why."""
    from tinyrnn.train import (BUDGET_CHARS_PER_S, BUDGET_DEFAULTS, BUDGET_LONG_FROM, BUDGET_LONG_LR, TrainConfig,
                               budget_defaults, budget_passes, budget_updates, describe_budget_defaults)

    big = tmp_path / "big.txt"
    big.write_bytes(b"abc\n" * 2_500_000)                        # 10 MB: 600 s read it about 1.3 times
    per_second = BUDGET_CHARS_PER_S / (32 * 96)
    for updates, lr in ((BUDGET_LONG_FROM - 1, BUDGET_DEFAULTS["lr"]), (BUDGET_LONG_FROM, BUDGET_LONG_LR)):
        cfg = TrainConfig(corpus=str(big), time_limit=updates / per_second)
        assert budget_updates(cfg, budget_passes(cfg)) == pytest.approx(updates)
        chosen = budget_defaults(cfg, {"seed"})
        assert chosen.lr == lr and chosen.epochs is None
        line = describe_budget_defaults(chosen)
        assert (f"at lr 0.0025 (about {updates} updates foreseen: from {BUDGET_LONG_FROM} a budget halves its "
                "0.005)" in line) \
            == (lr == BUDGET_LONG_LR), line
    small = tmp_path / "small.txt"
    small.write_bytes(b"ab\n" * 3000)                             # 8 passes: 21 updates, however long the budget
    chosen = budget_defaults(TrainConfig(corpus=str(small), time_limit=3600.0), set())
    assert chosen.epochs == 8 and chosen.lr == BUDGET_DEFAULTS["lr"]


def test_budget_defaults_leave_resumed_unbudgeted_and_gpu_runs_alone():
    from tinyrnn.train import TrainConfig, budget_defaults

    for cfg, resume in ((TrainConfig(time_limit=60.0), True), (TrainConfig(), False),
                        (TrainConfig(time_limit=60.0, device="cuda"), False)):
        assert budget_defaults(cfg, set(), resume) is cfg
    # from Python a config is taken as it is: train(budget=False) is the default
    import inspect

    from tinyrnn.train import train
    assert inspect.signature(train).parameters["budget"].default is False


@pytest.fixture
def warm(tmp_path, corpus):
    """The small LSTM's kernels compiled (a cold cache would spend the short time limits below)."""
    from tinyrnn.train import TrainConfig, train

    train(TrainConfig(corpus=corpus, hidden=16, layers=2, embed=8, batch_size=4, seq_len=16, steps=2, dropout=0.2),
          out=str(tmp_path / "warm"), progress=False, log=lambda m: None)


@pytest.mark.parametrize("user_dropout", [False, True])
def test_a_budget_paced_past_7_passes_stops_after_8_with_dropout(tmp_path, corpus, user_dropout, warm):
    """A machine faster than the 2 cores the foresight assumes: the run checks again on its measured
    pace and stops after 8 passes, with dropout from then on unless the user set it."""
    from tinyrnn.train import BUDGET_DROPOUT, BUDGET_PASSES, train

    out = tmp_path / "run"
    logs = []
    cfg, trainer = _budget_trainer(out, corpus, user_dropout, log=logs.append)
    summary = trainer.run()
    per_epoch = trainer.task.steps_per_epoch
    assert summary["stopped"] == "done" and summary["step"] == math.ceil(BUDGET_PASSES * per_epoch) > 20
    assert summary["seconds"] < 30                       # it stopped on its passes, not the clock
    line = next(m for m in logs if m.startswith("at the pace measured, 60 s would read the text about"))
    dropout = 0.0 if user_dropout else BUDGET_DROPOUT
    assert f"stopping after {BUDGET_PASSES:g} passes" in line
    assert (f", dropout {BUDGET_DROPOUT:g} from step 20 on" in line) != user_dropout
    meta = checkpoint.load(out / "last")[0]
    assert meta["train_config"]["epochs"] == BUDGET_PASSES and meta["train_config"]["dropout"] == dropout
    assert meta["model"]["dropout"] == dropout and trainer.model.drop.p == trainer.model.rnn.dropout == dropout
    # the run goes on as any --epochs run: its saved config and model agree
    resumed = train(replace(cfg, epochs=BUDGET_PASSES + 1), out=str(out), resume=True, explicit=("epochs",),
                    progress=False, log=logs.append)
    assert resumed["step"] == math.ceil((BUDGET_PASSES + 1) * per_epoch)


def test_only_a_new_budget_run_checks_its_pace(tmp_path, corpus, monkeypatch):
    from tinyrnn import train as train_module
    from tinyrnn.train import TrainConfig, train

    given = []

    class Recorder:
        def __init__(self, task_class, cfg, **kwargs):
            self.cfg, self.log = cfg, lambda m: None
            given.append((cfg, kwargs["pace"]))

        def run(self):
            return {"train_loss": None}

    monkeypatch.setattr(train_module, "Trainer", Recorder)
    big = tmp_path / "big.txt"
    big.write_bytes(b"x" * 10_000_000)              # 180 s read it 0.4 times on 2 cores: no cap beforehand
    for cfg, resume, budget, checks in ((TrainConfig(corpus=str(big), time_limit=180.0), False, True, True),
                                        (TrainConfig(corpus=corpus, time_limit=180.0), False, True, True),
                                        (TrainConfig(corpus=corpus, time_limit=180.0, epochs=2), False, False,
                                         False),
                                        (TrainConfig(corpus=str(big), time_limit=180.0), True, True, False),
                                        (TrainConfig(corpus=str(big), time_limit=180.0), False, False, False)):
        train(cfg, resume=resume, budget=budget)
        assert (given[-1][1] is not None) == checks, (cfg.corpus, resume, budget)
    assert given[1][0].epochs == 8                   # the small text was capped beforehand


def _paced_run(tmp_path, corpus, monkeypatch, passes, **settings):
    """A 1.5 s run on the budget's rule, told its pace reads the text ``passes`` times -> (trainer,
    summary, what the rule said, the steps it was told). 1.5 s on a step clock: 384 steps at most."""
    from tinyrnn.train import CharTask, TrainConfig, budget_pace_rule
    from tinyrnn.trainer import Trainer

    _StepClock(monkeypatch, lambda step: 2.0 ** -8)
    cfg = TrainConfig(corpus=corpus, hidden=16, layers=2, embed=8, batch_size=4, seq_len=16, time_limit=1.5,
                      log_every=10, eval_every=1000, save_every=1000, warmup=4, **settings)
    seen, said = [], []
    def rule(t, steps, **pace):
        seen.append(steps)
        budget_pace_rule(t, passes * t.task.steps_per_epoch, **pace)

    trainer = Trainer(CharTask, cfg, out=str(tmp_path / "run"), progress=False, log=said.append,
                      pace_rule=rule, pace={"user_dropout": False})
    return trainer, trainer.run(), said, seen


def test_a_budget_paced_as_foreseen_is_left_alone(tmp_path, corpus, warm, monkeypatch):
    trainer, summary, said, seen = _paced_run(tmp_path / "a", corpus, monkeypatch, 6.9)
    assert len(seen) == 1 and seen[0] > 20                # asked once, with the steps foreseen
    assert summary["stopped"] == "time limit" and trainer.cfg.epochs is None and trainer.model.dropout_p == 0.0
    assert not said
    trainer, summary, said, _ = _paced_run(tmp_path / "b", corpus, monkeypatch, 7.0, epochs=8.0, dropout=0.2)
    assert trainer.cfg.epochs == 8.0 and trainer.model.dropout_p == 0.2 and not said


def test_a_budget_capped_beforehand_but_paced_under_7_passes_loses_the_stop_and_dropout(tmp_path, corpus, warm,
                                                                                          monkeypatch):
    """A machine slower than the foresight's 2 cores: fewer passes than foreseen, and dropout would cost."""
    trainer, summary, said, _ = _paced_run(tmp_path, corpus, monkeypatch, 5.0, epochs=8.0, dropout=0.2)
    assert summary["stopped"] == "time limit" and trainer.total is None
    assert said == ["at the pace measured, 1.5 s would read the text about 5.0 times: no stop after 8 passes, "
                    "no dropout from step 20 on (from 7 passes the model overfits; set --epochs or --dropout to choose)"]
    meta = checkpoint.load(tmp_path / "run" / "last")[0]
    assert meta["train_config"]["epochs"] is None and meta["train_config"]["dropout"] == 0.0
    assert meta["model"]["dropout"] == 0.0 == trainer.model.drop.p == trainer.model.rnn.dropout


@pytest.mark.parametrize("long_lr", [False, True])
def test_a_budget_paced_across_the_long_budgets_updates_changes_its_learning_rate(tmp_path, long_lr, warm,
                                                                                  monkeypatch):
    """A machine faster (or slower) than foreseen trains more (fewer) updates: from the pace check on,
    the run trains at the budget's lr for the updates it will now train, and says so."""
    from tinyrnn.train import BUDGET_DEFAULTS, BUDGET_LONG_FROM, BUDGET_LONG_LR

    text = tmp_path / "text.txt"                        # a text a pass of which is more than 1,600 updates
    text.write_text("".join(f"line {i} of a longer text\n" for i in range(6_000)), encoding="utf-8")
    passes = 0.5 if long_lr else 1.0                    # 1 pass: 1,600 updates or more, half of one: fewer
    peak = BUDGET_LONG_LR if long_lr else BUDGET_DEFAULTS["lr"]
    trainer, summary, said, _ = _paced_run(tmp_path, str(text), monkeypatch, passes, lr=peak)   # its start decides
    per_epoch = trainer.task.steps_per_epoch
    assert per_epoch / 2 < BUDGET_LONG_FROM <= per_epoch
    lr = BUDGET_DEFAULTS["lr"] if long_lr else BUDGET_LONG_LR
    assert said == [f"at the pace measured, the run would train about {passes * per_epoch:.0f} updates: lr {lr:g} "
                    f"from step 20 on (from {BUDGET_LONG_FROM} updates a budget trains at 0.0025, below at 0.005; "
                    "set --lr to choose)"]
    assert trainer.cfg.lr == lr and trainer.sched.base_lr == pytest.approx(lr)
    meta, _ = checkpoint.load(tmp_path / "run" / "last")
    assert meta["train_config"]["lr"] == lr and meta["schedule"]["base_lr"] == pytest.approx(lr)
    rates = [row["lr"] for row in rows(tmp_path / "run") if "lr" in row]     # logged at steps 10, 20, 30...
    assert len(rates) >= 3 and max(rates[:2]) <= peak * (1 + 1e-9)           # the old peak up to the check
    if long_lr:
        assert max(rates[2:]) > BUDGET_LONG_LR                               # risen
    else:
        assert max(rates[2:]) <= BUDGET_LONG_LR * (1 + 1e-9)                 # halved


class Killed(Exception):
    """A kill -9 in the loop: nothing is saved."""


def _budget_trainer(out, corpus, user_dropout=False, **kwargs):
    """-> (cfg, Trainer): a fresh budget run on the tiny model, its pace not yet checked (60 s would
    read the small text far more than 7 times: the rule caps it at 8 passes)."""
    from tinyrnn.train import CharTask, TrainConfig, budget_pace_rule
    from tinyrnn.trainer import Trainer

    cfg = TrainConfig(corpus=corpus, hidden=16, layers=2, embed=8, batch_size=4, seq_len=16, time_limit=60.0,
                      log_every=10, eval_every=50, save_every=1000, warmup=4)
    return cfg, Trainer(CharTask, cfg, out=str(out), progress=False, pace_rule=budget_pace_rule,
                        pace={"user_dropout": user_dropout}, **kwargs)


def _killed_at_step_0(out, corpus):
    """A budget run killed right after its step-0 save, before its pace was measured."""
    cfg, trainer = _budget_trainer(out, corpus, log=lambda m: None)
    trainer.setup()
    trainer.metrics_file.close()
    trainer.lock.release()
    return cfg


def test_a_budget_run_killed_before_its_pace_was_measured_checks_it_when_resumed(tmp_path, corpus, warm):
    from tinyrnn.train import BUDGET_DROPOUT, BUDGET_PASSES, train

    out = tmp_path / "run"
    cfg = _killed_at_step_0(out, corpus)
    meta = checkpoint.load(out / "last")[0]
    assert meta["step"] == 0 and meta["pace"] == {"user_dropout": False} and meta["train_config"]["epochs"] is None
    logs = []
    summary = train(cfg, out=str(out), resume=True, explicit=("time_limit",), budget=True, progress=False,
                    log=logs.append)
    assert any(m.startswith("at the pace measured, 60 s would read the text about") for m in logs), logs
    assert summary["stopped"] == "done" and summary["seconds"] < 30     # stopped on its 8 passes
    meta = checkpoint.load(out / "last")[0]
    assert "pace" not in meta and meta["train_config"]["epochs"] == BUDGET_PASSES
    assert meta["train_config"]["dropout"] == meta["model"]["dropout"] == BUDGET_DROPOUT


def test_a_resumed_run_given_its_length_drops_the_pace_check(tmp_path, corpus, warm):
    from tinyrnn.train import train

    out = tmp_path / "run"
    cfg = _killed_at_step_0(out, corpus)
    logs = []
    summary = train(replace(cfg, steps=30), out=str(out), resume=True, explicit=("time_limit", "steps"), budget=True,
                    progress=False, log=logs.append)
    assert summary["step"] == 30 and not [m for m in logs if "pace" in m]
    meta = checkpoint.load(out / "last")[0]
    assert "pace" not in meta and meta["train_config"]["epochs"] is None and meta["train_config"]["dropout"] == 0.0


def test_the_pace_rules_change_is_saved_before_a_kill_can_lose_it(tmp_path, corpus, warm):
    from tinyrnn.train import BUDGET_DROPOUT, BUDGET_PASSES

    out = tmp_path / "run"
    _, trainer = _budget_trainer(out, corpus, log=lambda m: None)
    step = trainer.train_step

    def killed_at_25():
        if trainer.step == 25:
            raise Killed
        return step()

    trainer.train_step = killed_at_25
    with pytest.raises(Killed):
        trainer.run()
    meta = checkpoint.load(out / "last")[0]            # saved when the rule capped the run at step 20
    assert meta["step"] == 20 and "pace" not in meta
    assert meta["train_config"]["epochs"] == BUDGET_PASSES and meta["train_config"]["dropout"] == BUDGET_DROPOUT


@pytest.mark.parametrize("pace,needle", [([1], "pace is [1], expected an object of true/false settings"),
                                         ({"user_dropout": "yes"}, "expected an object of true/false"),
                                         ({"users_dropout": True}, "pace: missing a required argument")])
def test_a_damaged_pace_is_one_line_and_changes_nothing(tmp_path, corpus, pace, needle):
    out = tmp_path / "run"
    _killed_at_step_0(out, corpus)
    meta, arrays = checkpoint.load(out / "last")
    meta["pace"] = pace
    meta.pop("format"), meta.pop("version")
    (out / "last.npz").write_bytes(checkpoint.build(arrays, meta)[0])
    before = (out / "last.npz").read_bytes()
    fails(["train", "--resume", "--out", str(out), "--time-limit", "60"], needle, "damaged or hand-edited")
    assert (out / "last.npz").read_bytes() == before


def test_fit_schedule_to_budget_keeps_the_step_count_when_it_comes_first():
    from tinyrnn import optim
    from tinyrnn.nn import Parameter
    from tinyrnn.trainer import fit_schedule_to_budget

    opt = optim.Adam([Parameter(np.zeros(3))], lr=1.0)
    sched = optim.WarmupLR(opt, 10, after=optim.CosineLR(opt, 990, min_lr=0.1))
    assert fit_schedule_to_budget(sched, 100, 1000, 10, 5000) == 1000        # --steps first: unchanged
    assert fit_schedule_to_budget(sched, 100, 1000, 10, 200) == 300          # the budget first
    assert sched.after.total_steps == 290
    assert fit_schedule_to_budget(sched, 100, None, 10, 0) == 101            # out of time: ends now
    stepped = optim.WarmupLR(opt, 0, after=optim.StepLR(opt, 100, gamma=0.3))
    assert fit_schedule_to_budget(stepped, 10, None, 0, 290) == 300 and stepped.after.step_size == 100
    assert fit_schedule_to_budget(optim.WarmupLR(opt, 5), 10, None, 5, 10) is None   # constant: nothing to fit


def test_val_frac_zero_trains_on_everything_without_validation(tmp_path, corpus):
    out = tmp_path / "run"
    r = ok("train", corpus, *TINY, "--val-frac", "0", "--steps", "8", "--out", out)
    assert "no validation text" in r.stdout
    meta, _ = checkpoint.load(out / "last")
    assert meta["data"]["val_chars"] == 0 and meta["data"]["train_chars"] == len(TEXT)
    assert not any("val_bpc" in row for row in rows(out)) and any("loss_bpc" in row for row in rows(out))
    assert not (out / "best.json").exists()


def test_lr_schedule_step(tmp_path, corpus):
    """After the warm-up, the lr is multiplied by 0.3 every steps // 3 updates."""
    out = tmp_path / "run"
    ok("train", corpus, *TINY, "--lr-schedule", "step", "--warmup", "0", "--lr", "0.01", "--steps", "60",
       "--out", out)
    lrs = {row["step"]: row["lr"] for row in rows(out) if "lr" in row}
    # the lr logged at step s is the one the next update uses: 0.01 * 0.3 ** (s // 20)
    assert lrs == pytest.approx({10: 0.01, 20: 0.003, 30: 0.003, 40: 0.0009, 50: 0.0009, 60: 0.00027})


@pytest.mark.parametrize("name,cls,buffers", [("adamw", "AdamW", {"exp_avg", "exp_avg_sq"}),
                                              ("rmsprop", "RMSprop", {"square_avg"}),
                                              ("adagrad", "Adagrad", {"sum"})])
def test_optimizer_choices(tmp_path, corpus, name, cls, buffers):
    """--optimizer X trains with X: its state is in the checkpoint, and the first update has X's
    size (lr * sign(g) for AdamW (+ decay) and Adagrad, lr * sign(g) / sqrt(1 - alpha) for RMSprop)."""
    common = [corpus, *TINY, "--optimizer", name, "--lr-schedule", "constant", "--warmup", "0", "--clip", "0",
              "--steps", "1", "--val-frac", "0"]
    ok("train", *common, "--lr", "0.001", "--out", tmp_path / "a")
    ok("train", *common, "--lr", "0.002", "--out", tmp_path / "b")
    meta, arrays = checkpoint.load(tmp_path / "a" / "last")
    opt = checkpoint.unpack(meta["optimizer"], arrays)
    assert opt["type"] == cls
    assert buffers <= {k.split(".", 1)[1] for k in opt["state"]}
    wa = arrays["model/rnn.weight_hh_l0"].astype(np.float64)
    wb = checkpoint.load(tmp_path / "b" / "last")[1]["model/rnn.weight_hh_l0"].astype(np.float64)
    w0 = 2 * wa - wb                       # both runs start from the same weights: the update is linear in lr
    step = (w0 - wa) / 0.001               # sign(g) (times 10 for RMSprop), plus weight decay for AdamW
    if name == "adamw":
        step -= 0.01 * w0
    scale = 10.0 if name == "rmsprop" else 1.0
    moved = np.abs(step) > 1e-3 * scale
    assert moved.mean() > 0.9
    size = np.abs(step[moved])
    assert (size <= scale * 1.02).all()                        # never more than lr (x scale) per weight
    assert np.mean(np.abs(size - scale) < 0.02 * scale) > 0.98  # (a few with |g| ~ eps move less)


def test_inf_gradient_norm_stops_and_keeps_the_last_good_checkpoint(tmp_path, corpus, monkeypatch):
    from tinyrnn import optim

    real_clip, calls = optim.clip_grad_norm, []

    def clip_with_an_inf_gradient(params, max_norm, *a, **k):
        calls.append(1)
        if len(calls) == 5:                        # the 5th update's gradient holds an inf
            params[0].grad.reshape(-1)[3] = np.inf
        return real_clip(params, max_norm, *a, **k)

    monkeypatch.setattr(optim, "clip_grad_norm", clip_with_an_inf_gradient)
    out = tmp_path / "run"
    line = fails(["train", corpus, *TINY, "--steps", "20", "--save-every", "100", "--out", out],
                 "gradient norm became inf", "at step 5", "last good")
    assert "(step 4)" in line
    meta, arrays = checkpoint.load(out / "last")
    assert meta["step"] == 4
    assert all(np.isfinite(v).all() for k, v in arrays.items() if k.startswith("model/"))


def test_default_run_directory(tmp_path, corpus, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = [corpus, *TINY, "--steps", "1"]
    ok("train", *args, "--cell", "gru")
    ok("train", *args, "--cell", "gru")
    ok("train", *args, "--bidir")
    assert sorted(os.listdir(tmp_path / "runs")) == ["corpus-gru", "corpus-gru-2", "corpus-lstm-bidir"]
    assert (tmp_path / "runs" / "corpus-gru-2" / "last.json").exists()


def test_version():
    import tinyrnn

    r = ok("--version")
    assert r.stdout.strip() == f"tinyrnn, version {tinyrnn.__version__}"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "pyproject.toml"), encoding="utf-8") as f:
        assert f'version = "{tinyrnn.__version__}"' in f.read()


def test_progress_bar_format():
    from tinyrnn.progress import Progress

    bar = Progress(total=3000)
    assert bar.render(1200, loss=1.62, metric="val 1.980 bpc", rate=31234.0, eta=64) == \
        "step 1200/3000 [########............]  40% | loss 1.620 | val 1.980 bpc | 31.2K chars/s | ETA 1:04"
    assert Progress(total=10, unit="tokens").render(5, rate=1500.0) == \
        "step 5/10 [##########..........]  50% | 1.5K tokens/s"
    assert Progress().render(7) == "step 7"


def test_progress_bar_shows_without_quiet(tmp_path, corpus):
    args = [corpus, *[a for a in TINY if a != "--quiet"], "--steps", "5"]
    r = ok("train", *args, "--out", tmp_path / "a")
    first = [line for line in r.stderr.splitlines() if line.startswith("step ")]
    assert first and re.fullmatch(r"step 1/5 \[####\.{16}\]  20%( \| .*)?", first[0]), r.stderr
    r = ok("train", *args, "--quiet", "--out", tmp_path / "b")
    assert not any(line.startswith("step ") for line in r.stderr.splitlines())


def test_bench_smoke(tmp_path):
    r = ok("bench", "--configs", "a", "--repeats", "1", "--steps", "1", "--no-torch",
           "--skip", "sampling,help,startup,rss", "--json", tmp_path / "b.json")
    lines = [line for line in r.stdout.splitlines() if line.startswith("a ")]
    assert len(lines) == 1 and "LSTM 1x128 B32 T64" in lines[0], r.stdout
    ours = float(lines[0].split()[5])                  # cfg, the model (4 words), tinyrnn c/s, ...
    data = json.loads((tmp_path / "b.json").read_text())
    assert set(data["configs"]) == {"a"} and data["configs"]["a"]["tinyrnn"] == pytest.approx(ours, abs=0.5)
    assert ours > 0 and math.isnan(data["configs"]["a"]["torch"])          # --no-torch: no torch column
    assert data["matmul_peak_gflops"] > 0 and "sampling" not in data and "peak_rss_mb" not in data
    from tinyrnn.kernels import isa                    # the table says which machine and build it came from

    assert r.stdout.startswith("machine: ") and isa.simd_level() in r.stdout.splitlines()[0]
    assert data["machine"]["matmul_tile"] == isa.TILE and data["machine"]["simd"] == isa.simd_level()
    overhead = data["overhead"]["a"]                   # the share of a step outside the kernels (issue 13)
    assert 0 < overhead["outside_share"] < 1 and overhead["python_ms"] > 0 and overhead["kernels_ms"] > 0
    line = next(line for line in r.stdout.splitlines() if line.startswith("outside the kernels (a): "))
    assert f"{100 * overhead['outside_share']:.1f}% of a {overhead['step_ms']:.2f} ms step" in line, line


def _has_avx2():
    import llvmlite.binding as llvm

    return bool(llvm.get_host_cpu_features().get("avx2", False))


@pytest.fixture
def build_env_restored():
    """``bench --avx2`` / ``--avx512`` put their build's recipe in os.environ (for the workers they
    start) and make Numba re-read its config. Run in this process, that would outlive the test:
    later subprocesses would inherit the recipe's CPU, and this process's Numba would report it.
    Put both back."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)
    from numba.core import config

    config.reload_config()


@pytest.mark.skipif(not _has_avx2(), reason="the AVX2 build needs an x86 CPU with AVX2")
def test_bench_avx2_build_is_what_the_table_says(tmp_path, build_env_restored):
    """--avx2: the machine line and the JSON say the Haswell build (the workers inherit its environment)."""
    r = ok("bench", "--avx2", "--no-torch", "--only", "help", "--repeats", "1", "--json", tmp_path / "b.json")
    first = r.stdout.splitlines()[0]
    assert "compiled for AVX2 (Numba target haswell, its own features)" in first and "matmul tile 6x16" in first, first
    assert "sampling dots: bf16 vpshufb+FMA, int8 vpmaddubsw AVX2" in first, first
    machine = json.loads((tmp_path / "b.json").read_text())["machine"]
    assert machine["simd"] == "AVX2" and machine["numba_target"] == "haswell" and machine["matmul_tile"] == "6x16"
    assert machine["sampling_dots"] == "bf16 vpshufb+FMA, int8 vpmaddubsw AVX2"


def test_bench_avx2_needs_an_avx2_cpu(monkeypatch, capsys):
    import tinyrnn.bench as bench

    monkeypatch.setattr(bench, "_host_has", lambda features: False)
    with pytest.raises(SystemExit) as e:
        bench._parse(["--avx2"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert e.value.code == 2 and "--avx2 needs an x86 CPU with AVX2, FMA" in err and "run without --avx2" in err


def test_bench_avx512_needs_an_avx512_cpu(monkeypatch, capsys):
    import tinyrnn.bench as bench

    monkeypatch.setattr(bench, "_host_has", lambda features: "avx512f" not in features)
    bench._parse(["--avx2"])                                        # an AVX2-only host: --avx2 is fine
    with pytest.raises(SystemExit) as e:
        bench._parse(["--avx512"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert e.value.code == 2 and "--avx512 needs an x86 CPU with AVX512F" in err and "run without --avx512" in err


def test_bench_takes_one_build(capsys):
    import tinyrnn.bench as bench

    with pytest.raises(SystemExit) as e:
        bench._parse(["--avx2", "--avx512"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert e.value.code == 2 and "--avx2 and --avx512 are two builds: give one of them" in err


def _pytorch_mkl_on_intel():
    """Whether PyTorch is installed and this is an Intel CPU, where MKL honours MKL_ENABLE_INSTRUCTIONS."""
    import importlib.util

    try:
        with open("/proc/cpuinfo") as f:
            intel = "GenuineIntel" in f.read(4096)
    except OSError:
        return False
    return intel and importlib.util.find_spec("torch") is not None


@pytest.mark.skipif(not _pytorch_mkl_on_intel(), reason="needs PyTorch on an Intel CPU (MKL's dispatch is Intel-only)")
@pytest.mark.parametrize("build, path", [("avx2", "(Intel(R) AVX2) enabled processors"),
                                         ("avx512", "(Intel(R) AVX-512) enabled processors")])
def test_bench_builds_hold_pytorch_matrix_products_too(build, path):
    """A build's recipe holds PyTorch's matrix products (MKL: its GRU, its heads) to the build's
    ISA, not only ATen and oneDNN: MKL's own log names the code path it took for one product."""
    import subprocess
    import sys

    import tinyrnn.bench as bench
    from tinyrnn.bench.configs import BUILDS

    recipe, needs = BUILDS[build]
    if not bench._host_has(needs):
        pytest.skip(f"this CPU cannot run the {build} build")
    env = dict(os.environ, **recipe, MKL_VERBOSE="1")
    code = "import torch; torch.set_num_threads(1); a = torch.ones(64, 64); a @ a"
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    header = [line for line in r.stdout.splitlines() if line.startswith("MKL_VERBOSE") and "architecture" in line]
    assert header and path in header[0], header


def _has_avx512():
    import llvmlite.binding as llvm

    features = llvm.get_host_cpu_features()
    return all(features.get(f, False) for f in ("avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"))


@pytest.mark.skipif(not _has_avx512(), reason="the AVX-512 build needs an x86 CPU with AVX-512")
def test_bench_avx512_build_is_what_the_table_says(tmp_path, build_env_restored):
    """--avx512: the Skylake-SP build, AVX-512 without BF16: the 6 x 64 tile, bfloat16 by shifts and FMAs."""
    r = ok("bench", "--avx512", "--no-torch", "--only", "help", "--repeats", "1", "--json", tmp_path / "b.json")
    first = r.stdout.splitlines()[0]
    assert "compiled for AVX-512 (Numba target skylake-avx512, its own features)" in first, first
    assert "matmul tile 6x64" in first and "sampling dots: bf16 shifts+FMA, int8 vpmaddubsw AVX-512" in first, first
    machine = json.loads((tmp_path / "b.json").read_text())["machine"]
    assert machine["simd"] == "AVX-512" and machine["numba_target"] == "skylake-avx512"
