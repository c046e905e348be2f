"""Optimizers, gradient clipping and learning-rate schedules.

Each optimizer is checked against a plain-numpy statement of its formula, against torch.optim
(when torch is installed), for bit-exact resumption from a saved state dict, and by training a
tiny logistic regression.
"""
import json
import math

import numpy as np
import pytest

from tinyrnn import optim


class Param:
    """The duck type the optimizers accept: .data (updated in place) and .grad."""

    def __init__(self, data):
        self.data = data
        self.grad = np.zeros_like(data)


SHAPES = [(3, 5), (7,), (), (2, 3, 4)]


def make_params(rng, dtype, shapes=SHAPES):
    return [Param(rng.standard_normal(s).astype(dtype)) for s in shapes]


def set_grads(params, rng):
    for p in params:
        p.grad[...] = rng.standard_normal(p.data.shape)


# name -> (our constructor, torch constructor or None, kwargs)
CONFIGS = {
    "sgd": (optim.SGD, "SGD", dict(lr=0.1)),
    "sgd_momentum_wd": (optim.SGD, "SGD", dict(lr=0.1, momentum=0.9, weight_decay=0.01)),
    "sgd_nesterov": (optim.SGD, "SGD", dict(lr=0.05, momentum=0.8, nesterov=True)),
    "adam": (optim.Adam, "Adam", dict(lr=1e-2)),
    "adam_wd": (optim.Adam, "Adam", dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    "adamw": (optim.AdamW, "AdamW", dict(lr=1e-2, weight_decay=0.1)),
    "adagrad": (optim.Adagrad, "Adagrad", dict(lr=0.1)),
    "adagrad_wd": (optim.Adagrad, "Adagrad", dict(lr=0.1, weight_decay=0.05)),
    "rmsprop": (optim.RMSprop, "RMSprop", dict(lr=1e-2)),
    "rmsprop_all": (optim.RMSprop, "RMSprop", dict(lr=1e-2, alpha=0.9, weight_decay=0.01, momentum=0.9,
                                                     centered=True)),
}


# ---- the formulas, stated in plain numpy (one parameter, float64) -------------------------------

def numpy_formula_run(name, data, grads):
    """Apply the optimizer `name` with CONFIGS' hyperparameters to a copy of `data`, one grad per step."""
    _, _, kw = CONFIGS[name]
    p = data.copy()
    zeros = np.zeros_like(p)
    buf, m, v, total, sq, gavg = (zeros.copy() for _ in range(6))
    for t, grad in enumerate(grads, start=1):
        lr = kw["lr"]
        wd = kw.get("weight_decay", 0.0 if not name.startswith("adamw") else 1e-2)
        if name.startswith("sgd"):
            g = grad + wd * p
            mom = kw.get("momentum", 0.0)
            if mom:
                buf = mom * buf + g
                g = g + mom * buf if kw.get("nesterov") else buf
            p = p - lr * g
        elif name.startswith("adam"):
            b1, b2 = kw.get("betas", (0.9, 0.999))
            eps = kw.get("eps", 1e-8)
            if name == "adamw":
                p = p * (1 - lr * wd)
                g = grad
            else:
                g = grad + wd * p
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g**2
            m_hat = m / (1 - b1**t)
            v_hat = v / (1 - b2**t)
            p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
        elif name.startswith("adagrad"):
            g = grad + wd * p
            total = total + g**2
            p = p - lr * g / (np.sqrt(total) + 1e-10)
        elif name.startswith("rmsprop"):
            alpha, mom = kw.get("alpha", 0.99), kw.get("momentum", 0.0)
            g = grad + wd * p
            sq = alpha * sq + (1 - alpha) * g**2
            if kw.get("centered"):
                gavg = alpha * gavg + (1 - alpha) * g
                denom = np.sqrt(sq - gavg**2) + 1e-8
            else:
                denom = np.sqrt(sq) + 1e-8
            if mom:
                buf = mom * buf + g / denom
                p = p - lr * buf
            else:
                p = p - lr * g / denom
    return p


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_matches_numpy_formula(name):
    cls, _, kw = CONFIGS[name]
    rng = np.random.default_rng(0)
    params = make_params(rng, np.float64)
    start = [p.data.copy() for p in params]
    opt = cls(params, **kw)
    grads = [[rng.standard_normal(p.data.shape) for p in params] for _ in range(5)]
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad[...] = g
        opt.step()
    for i, p in enumerate(params):
        want = numpy_formula_run(name, start[i], [g[i] for g in grads])
        np.testing.assert_allclose(p.data, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["sgd_momentum_wd", "adamw", "rmsprop_all"])
def test_non_contiguous_params_match_contiguous(name):
    """Non-contiguous .data goes through the numpy reference kernels: same result."""
    cls, _, kw = CONFIGS[name]
    rng = np.random.default_rng(1)
    base = rng.standard_normal((6, 4))
    a = Param(base.copy())
    b = Param(np.asfortranarray(base.copy()))  # Fortran order: not C-contiguous
    assert not b.data.flags.c_contiguous
    opt_a, opt_b = cls([a], **kw), cls([b], **kw)
    for _ in range(4):
        g = rng.standard_normal((6, 4))
        a.grad[...] = g
        b.grad = np.asfortranarray(g)
        opt_a.step()
        opt_b.step()
    np.testing.assert_allclose(b.data, a.data, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_matches_torch(name, dtype):
    torch = pytest.importorskip("torch")
    cls, torch_name, kw = CONFIGS[name]
    rng = np.random.default_rng(2)
    params = make_params(rng, dtype)
    tparams = [torch.tensor(p.data.copy(), requires_grad=True) for p in params]
    opt = cls(params, **kw)
    topt = getattr(torch.optim, torch_name)(tparams, **kw)
    for _ in range(6):
        set_grads(params, rng)
        for p, tp in zip(params, tparams):
            tp.grad = torch.tensor(p.grad.copy())
        opt.step()
        topt.step()
    tolerance = dict(rtol=1e-10, atol=1e-12) if dtype == np.float64 else dict(rtol=2e-5, atol=2e-6)
    for p, tp in zip(params, tparams):
        assert p.data.dtype == dtype
        np.testing.assert_allclose(p.data, tp.detach().numpy(), **tolerance)


def save_and_load(state, tmp_path):
    """Round trip a state dict through the storage format: arrays to npz, the rest to JSON."""
    arrays = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
    rest = {k: v for k, v in state.items() if not isinstance(v, np.ndarray)}
    np.savez(tmp_path / "state.npz", **arrays)
    (tmp_path / "state.json").write_text(json.dumps(rest))
    loaded = json.loads((tmp_path / "state.json").read_text())
    with np.load(tmp_path / "state.npz", allow_pickle=False) as z:
        loaded.update({k: z[k] for k in z.files})
    return loaded


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_state_dict_resumes_bit_exactly(name, tmp_path):
    cls, _, kw = CONFIGS[name]
    rng = np.random.default_rng(3)
    init = make_params(rng, np.float32)
    grads = [[rng.standard_normal(p.data.shape).astype(np.float32) for p in init] for _ in range(6)]

    def run(params, opt, steps):
        for step_grads in steps:
            for p, g in zip(params, step_grads):
                p.grad[...] = g
            opt.step()

    # straight through: 6 steps
    a = [Param(p.data.copy()) for p in init]
    opt_a = cls(a, **kw)
    run(a, opt_a, grads)

    # 3 steps, save, restore into a fresh optimizer over fresh parameters, 3 more
    b = [Param(p.data.copy()) for p in init]
    opt_b = cls(b, **kw)
    run(b, opt_b, grads[:3])
    sd = opt_b.state_dict()
    stored = save_and_load(sd["state"], tmp_path)
    sd = json.loads(json.dumps({k: v for k, v in sd.items() if k != "state"})) | {"state": stored}
    c = [Param(p.data.copy()) for p in b]
    opt_c = cls(c, **{**kw, "lr": 123.0})  # lr comes back from the state dict
    opt_c.load_state_dict(sd)
    assert opt_c.lr == kw["lr"]
    run(c, opt_c, grads[3:])
    for pa, pc in zip(a, c):
        np.testing.assert_array_equal(pa.data, pc.data)
    assert opt_c.steps == opt_a.steps == [6] * len(init)


def test_state_dict_layout_and_mismatch():
    params = make_params(np.random.default_rng(4), np.float32)
    sd = optim.Adam(params, lr=3e-3).state_dict()
    assert sd["type"] == "Adam" and sd["steps"] == [0, 0, 0, 0]
    assert sd["hyper"] == {"lr": 3e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0}
    assert sorted(sd["state"]) == sorted(f"{i}.{n}" for i in range(4) for n in ("exp_avg", "exp_avg_sq"))
    json.dumps({k: v for k, v in sd.items() if k != "state"})
    with pytest.raises(ValueError):
        optim.SGD(params, lr=0.1).load_state_dict(sd)
    with pytest.raises(ValueError):
        optim.Adam(params[:2]).load_state_dict(sd)


def test_zero_grad_and_missing_grads():
    rng = np.random.default_rng(5)
    params = make_params(rng, np.float64)
    set_grads(params, rng)
    grad_arrays = [p.grad for p in params]
    opt = optim.SGD(params, lr=0.1)
    opt.zero_grad()
    for p, g in zip(params, grad_arrays):
        assert p.grad is g and np.all(g == 0)  # zeroed in place
    opt.zero_grad(set_to_none=True)
    assert all(p.grad is None for p in params)

    params[1].grad = np.ones_like(params[1].data)
    before = [p.data.copy() for p in params]
    opt.step()  # parameters without a grad are skipped
    np.testing.assert_array_equal(params[1].data, before[1] - 0.1)
    for i in (0, 2, 3):
        np.testing.assert_array_equal(params[i].data, before[i])
    assert opt.steps == [0, 1, 0, 0]


def test_rejects_bad_params():
    with pytest.raises(TypeError):
        optim.SGD([Param(np.zeros(3, dtype=np.int64))], lr=0.1)
    with pytest.raises(ValueError):
        optim.SGD([], lr=0.1)


# ---- clipping ----------------------------------------------------------------------------------

def test_clip_grad_norm():
    rng = np.random.default_rng(6)
    params = make_params(rng, np.float32, [(300, 30), (7,), ()])  # 9000 elements: several blocks
    set_grads(params, rng)
    params.append(Param(np.zeros(3, np.float32)))
    params[-1].grad = None
    grads = [p.grad.astype(np.float64) for p in params[:-1]]
    norm = math.sqrt(sum(float(np.sum(g * g)) for g in grads))

    total = optim.clip_grad_norm(params, 1e6)  # no clipping
    assert isinstance(total, float)
    assert total == pytest.approx(norm, rel=1e-12)
    for p, g in zip(params, grads):
        np.testing.assert_array_equal(p.grad, g.astype(np.float32))

    total = optim.clip_grad_norm(params, 2.0)
    assert total == pytest.approx(norm, rel=1e-12)
    clipped = math.sqrt(sum(float(np.sum(p.grad.astype(np.float64) ** 2)) for p in params[:-1]))
    assert clipped == pytest.approx(2.0, rel=1e-5)
    for p, g in zip(params, grads):
        np.testing.assert_allclose(p.grad, g * 2.0 / (norm + 1e-6), rtol=1e-6)

    # a non-contiguous gradient takes the reference path
    q = Param(np.zeros((4, 5)))
    q.grad = np.arange(40.0).reshape(5, 8)[:, ::2].T
    total = optim.clip_grad_norm([q], 1.0)
    assert total == pytest.approx(float(np.linalg.norm(np.arange(40.0).reshape(5, 8)[:, ::2])))
    assert float(np.linalg.norm(q.grad)) == pytest.approx(1.0, rel=1e-6)


def test_clip_grad_norm_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    params = make_params(rng, np.float64)
    set_grads(params, rng)
    tparams = [torch.zeros(p.data.shape, dtype=torch.float64, requires_grad=True) for p in params]
    for p, tp in zip(params, tparams):
        tp.grad = torch.tensor(p.grad.copy())
    total = optim.clip_grad_norm(params, 0.5)
    ttotal = torch.nn.utils.clip_grad_norm_(tparams, 0.5)
    assert total == pytest.approx(float(ttotal), rel=1e-12)
    for p, tp in zip(params, tparams):
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=1e-12)


def test_clip_grad_value():
    p = Param(np.zeros((2, 3)))
    p.grad = np.array([[-5.0, 0.2, 3.0], [0.5, -0.5, 1.5]])
    q = Param(np.zeros(2))
    q.grad = None
    optim.clip_grad_value([p, q], 1.0)
    np.testing.assert_array_equal(p.grad, [[-1.0, 0.2, 1.0], [0.5, -0.5, 1.0]])


# ---- schedules ---------------------------------------------------------------------------------

def lrs(opt, sched, n):
    """The lr used by each of the next n updates."""
    out = []
    for _ in range(n):
        out.append(opt.lr)
        sched.step()
    return out


def one_param_opt(lr=1.0):
    return optim.SGD([Param(np.zeros(1))], lr=lr)


def test_step_lr():
    opt = one_param_opt(1.0)
    got = lrs(opt, optim.StepLR(opt, step_size=3, gamma=0.5), 8)
    assert got == pytest.approx([1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25])


def test_cosine_lr():
    opt = one_param_opt(1.0)
    got = lrs(opt, optim.CosineLR(opt, total_steps=4, min_lr=0.2), 7)
    want = [0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * min(t, 4) / 4)) for t in range(7)]
    assert got == pytest.approx(want)
    assert got[0] == pytest.approx(1.0) and got[4:] == pytest.approx([0.2] * 3)


def test_cosine_lr_matches_torch():
    torch = pytest.importorskip("torch")
    opt = one_param_opt(0.3)
    topt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.3)
    tsched = torch.optim.lr_scheduler.CosineAnnealingLR(topt, T_max=10, eta_min=0.01)
    want = []
    for _ in range(11):
        want.append(topt.param_groups[0]["lr"])
        topt.step()
        tsched.step()
    assert lrs(opt, optim.CosineLR(opt, 10, min_lr=0.01), 11) == pytest.approx(want, rel=1e-12)


def test_warmup_lr():
    opt = one_param_opt(1.0)
    assert lrs(opt, optim.WarmupLR(opt, 4), 6) == pytest.approx([0.25, 0.5, 0.75, 1, 1, 1])

    opt = one_param_opt(2.0)
    sched = optim.WarmupLR(opt, 2, after=optim.StepLR(opt, step_size=2, gamma=0.1))
    assert lrs(opt, sched, 7) == pytest.approx([1.0, 2.0, 2.0, 2.0, 0.2, 0.2, 0.02])
    assert sched.after.t == 5

    opt = one_param_opt(1.0)
    assert lrs(opt, optim.WarmupLR(opt, 0, after=optim.CosineLR(opt, 2)), 3) == pytest.approx([1, 0.5, 0])


@pytest.mark.parametrize("make", [
    lambda o: optim.StepLR(o, 2, 0.5),
    lambda o: optim.CosineLR(o, 6, min_lr=0.1),
    lambda o: optim.WarmupLR(o, 3),
    lambda o: optim.WarmupLR(o, 3, after=optim.CosineLR(o, 5)),
])
def test_schedule_state_dict_round_trip(make):
    opt = one_param_opt(1.0)
    sched = make(opt)
    lrs(opt, sched, 4)
    sd = json.loads(json.dumps(sched.state_dict()))
    rest = lrs(opt, sched, 5)

    opt2 = one_param_opt(1.0)
    sched2 = make(opt2)
    sched2.load_state_dict(sd)
    assert lrs(opt2, sched2, 5) == rest


@pytest.mark.parametrize("make", [
    lambda o: optim.StepLR(o, 2, 0.5),
    lambda o: optim.CosineLR(o, 6, min_lr=0.1),
    lambda o: optim.WarmupLR(o, 3),
    lambda o: optim.WarmupLR(o, 3, after=optim.CosineLR(o, 5, min_lr=0.1)),
])
def test_scale_multiplies_every_later_lr(make):
    """``scale(f)`` (the trainer's roll-back: f = 0.5): from then on each lr is f times the unscaled
    schedule's, the floor included; the state dict carries the scaled rates."""
    opt, opt2 = one_param_opt(1.0), one_param_opt(1.0)
    sched, plain = make(opt), make(opt2)
    lrs(opt, sched, 4)
    lrs(opt2, plain, 4)
    sched.scale(0.5)
    assert opt.lr == pytest.approx(0.5 * opt2.lr)
    sd = json.loads(json.dumps(sched.state_dict()))
    want = [0.5 * lr for lr in lrs(opt2, plain, 8)]
    assert lrs(opt, sched, 8) == pytest.approx(want)
    opt3 = one_param_opt(1.0)
    sched3 = make(opt3)
    sched3.load_state_dict(sd)
    assert lrs(opt3, sched3, 8) == pytest.approx(want)


# ---- training ----------------------------------------------------------------------------------

def logistic_data(rng, n=64):
    """Linearly separable points with a margin: y = [x @ w_true + b_true > 0]."""
    x = rng.standard_normal((n, 3))
    w_true, b_true = np.array([2.0, -1.0, 0.5]), 0.3
    score = x @ w_true + b_true
    x = x[np.abs(score) > 0.5]
    return x, (x @ w_true + b_true > 0).astype(np.float64)


def logistic_loss_and_grads(x, y, w, b):
    """Mean binary cross-entropy of sigmoid(x @ w + b); returns loss, dw, db."""
    z = x @ w.data + b.data
    loss = np.mean(np.logaddexp(0.0, z) - y * z)  # -y log s(z) - (1-y) log(1-s(z)), stably
    dz = (1.0 / (1.0 + np.exp(-z)) - y) / len(y)
    return loss, x.T @ dz, dz.sum()


@pytest.mark.parametrize("cls,kw,steps", [
    (optim.SGD, dict(lr=1.0, momentum=0.9), 300),
    (optim.Adam, dict(lr=0.1), 300),
    (optim.AdamW, dict(lr=0.1, weight_decay=1e-4), 300),
    (optim.Adagrad, dict(lr=1.0), 300),
    (optim.RMSprop, dict(lr=0.05), 300),
])
def test_logistic_regression_trains(cls, kw, steps):
    rng = np.random.default_rng(8)
    x, y = logistic_data(rng)
    w, b = Param(np.zeros(3)), Param(np.zeros(()))
    opt = cls([w, b], **kw)
    first = None
    for _ in range(steps):
        opt.zero_grad()
        loss, dw, db = logistic_loss_and_grads(x, y, w, b)
        w.grad += dw
        b.grad += db
        first = loss if first is None else first
        opt.step()
    final = logistic_loss_and_grads(x, y, w, b)[0]
    assert first == pytest.approx(math.log(2.0))
    assert final < 0.02, f"{cls.__name__}: loss {final:.4f} after {steps} steps"
