"""surnn/harness/fused.py: a model's dense parts fused in the compiled extension for CPU
inference (``use_fused``) against the same model run eagerly, on the same weights: every
input kind, position embedding, pooling, objective, the dual encoding, the state carried
across windows, hybrid stacks; eager passes whenever training or autograd is on; the plan
following weight updates; the extension's input errors; the inference clock on a fused
model and on its copy."""

from __future__ import annotations

import collections
import copy
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from surnn.harness import fused
from surnn.harness.backbone import Model
from surnn.harness.fused import use_fused
from surnn.harness.inference_cases import Clock
from surnn.harness.objectives import IGNORE_INDEX
from surnn.ops import compiled
from tests.fixtures import ROOT, ToyTask, standin

pytestmark = pytest.mark.skipif(
    not compiled.available(), reason=f"compiled extension unavailable: {compiled._STATE['error']}"
)

TOL = dict(atol=1e-5, rtol=1e-5)  # float rounding: the extension's own norm, GELU and products
LENGTHS = [9, 1, 12, 4]  # a padded batch with a length-1 row
# a rate penalty (an aux loss), without the rate control that moves the gate between passes
GATE = {"kind": "rhythm", "target_rate": 0.3, "rate_penalty": 2.0, "rate_control": "none"}


class _Spy:
    """The extension, counting its calls by name (``calls``): shows that a pass ran fused."""

    def __init__(self, ext):
        self.ext, self.calls = ext, collections.Counter()

    def __getattr__(self, name):
        fn = getattr(self.ext, name)

        def call(*args, **kwargs):
            self.calls[name] += 1
            return fn(*args, **kwargs)

        return call


@pytest.fixture
def ext(monkeypatch) -> _Spy:
    spy = _Spy(fused._ext())
    monkeypatch.setattr(fused, "_ext", lambda: spy)
    return spy


def _model(task, mixer="surnn", options=None, **kw) -> Model:
    torch.manual_seed(0)
    kw = {"d_model": 16, "n_layers": 2, "dropout": 0.1, **kw}
    return Model(task, mixer, options or {}, **kw).eval()


def _tokens(vocab: int, lengths=LENGTHS, seed: int = 1) -> dict[str, torch.Tensor]:
    """A right-padded batch of token ids 1..vocab-1 (0 after each row's length)."""
    g = torch.Generator().manual_seed(seed)
    lens = torch.tensor(lengths)
    x = torch.randint(1, vocab, (len(lengths), max(lengths)), generator=g)
    x[torch.arange(x.shape[1]) >= lens[:, None]] = 0
    return {"x": x, "lengths": lens}


def _values(dim: int, lengths=LENGTHS, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lens = torch.tensor(lengths)
    x = torch.rand(len(lengths), max(lengths), dim, generator=g)
    x[torch.arange(x.shape[1]) >= lens[:, None]] = 0
    return {"x": x, "lengths": lens}


def _targets(batch, n_classes: int, seed: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = batch["x"]
    y = torch.randint(0, n_classes, x.shape[:2], generator=g)
    y[torch.arange(x.shape[1]) >= batch["lengths"][:, None]] = IGNORE_INDEX
    return y


def _both(model: Model, *args, **kwargs):
    """(eager, fused) outputs of one inference pass of ``model`` on ``args``: the same
    weights, the setting toggled (and left off)."""
    with torch.no_grad():
        eager = model(*args, **kwargs)
        use_fused(model)
        try:
            out = model(*args, **kwargs)
        finally:
            use_fused(model, False)
    return eager, out


# ------------------------------------------------------------------ fused = eager


@pytest.mark.parametrize("pool", ["mean", "max", "last"])
def test_classify_tokens_each_pooling(ext, pool):
    m = _model(ToyTask(n_train=8, n_eval=4), pool=pool)
    b = _tokens(10)
    (e, e_aux), (f, f_aux) = _both(m, b)
    # one call embeds and norms, one per block after its mixer, one pools and applies the head
    assert ext.calls == {"dense_embed": 1, "dense_tail": 2, "dense_pool": 1}
    assert f.shape == (4, 3)
    torch.testing.assert_close(f, e, **TOL)
    assert torch.equal(f.argmax(-1), e.argmax(-1))
    assert f_aux.keys() == e_aux.keys() and "layer1/update_rate" in f_aux
    torch.testing.assert_close(f_aux, e_aux, **TOL)


@pytest.mark.parametrize(
    "kind, pos_emb",
    [("values", "none"), ("values", "sinusoidal"), ("values", "learned"), ("tokens", "learned")],
)
def test_value_input_and_position_embeddings(ext, kind, pos_emb):
    task = standin("classify", input_kind=kind, input_dim=3 if kind == "values" else None)
    m = _model(task, pos_emb=pos_emb, pool="mean")
    b = _values(3) if kind == "values" else _tokens(9)
    (e, _), (f, _) = _both(m, b)
    # embedded eagerly (a linear layer, or positions added), normed in the extension
    assert ext.calls == {"dense_norm": 1, "dense_tail": 2, "dense_pool": 1}
    torch.testing.assert_close(f, e, **TOL)
    assert torch.equal(f.argmax(-1), e.argmax(-1))


def test_blocks_without_feed_forward(ext):
    m = _model(ToyTask(n_train=8, n_eval=4), ffn_mult=0)
    assert all(blk.ffn is None for blk in m.encoder.blocks)
    (e, _), (f, _) = _both(m, _tokens(10))
    assert ext.calls["dense_tail"] == 2
    torch.testing.assert_close(f, e, **TOL)


def test_per_position_objectives_and_regression(ext):
    b = _tokens(9)
    tok = _model(standin("tokens"))
    (e, _), (f, _) = _both(tok, b)
    assert f.shape == (4, 12, 7)
    torch.testing.assert_close(f, e, **TOL)

    lm = _model(standin("lm"))
    y = _targets(b, 7)
    (e, _), (f, _) = _both(lm, dict(b, y=y))
    assert f["nll"].shape == (int(b["lengths"].sum()),)
    torch.testing.assert_close(f["nll"], e["nll"], **TOL)
    assert torch.equal(f["pred"], e["pred"])

    reg = _model(standin("regress", input_kind="values", input_dim=2))
    (e, _), (f, _) = _both(reg, _values(2))
    assert f.shape == (4,)
    torch.testing.assert_close(f, e, **TOL)
    # the encoders ran fused (one tail per block and pass); their heads run eagerly
    assert ext.calls["dense_tail"] == 6 and "dense_pool" not in ext.calls


def test_dual_encoding(ext):
    m = _model(standin("classify", dual=True, n_classes=2), pool="max")
    b = _tokens(9)
    b2 = _tokens(9, lengths=[3, 12, 1, 7], seed=3)
    batch = dict(b, x2=b2["x"], lengths2=b2["lengths"])
    (e, e_aux), (f, f_aux) = _both(m, batch)
    assert ext.calls == {"dense_embed": 2, "dense_tail": 4}  # both documents, fused
    torch.testing.assert_close(f, e, **TOL)
    torch.testing.assert_close(f_aux, e_aux, **TOL)


@pytest.mark.parametrize(
    "mixer, options", [("surnn", {}), ("hybrid", {"layers": ["surnn", "gru"]})]
)
def test_state_carried_across_windows(ext, mixer, options):
    m = _model(standin("lm"), mixer, options)
    assert m.encoder.stateful
    first, second = _tokens(9, [12, 12, 5, 12]), _tokens(9, [7, 1, 4, 12], seed=4)
    first["y"], second["y"] = _targets(first, 7), _targets(second, 7, seed=5)
    (e1, _, es), (f1, _, fs) = _both(m, first, None, carry=True)
    torch.testing.assert_close(fs, es, **TOL)
    # each path carries its own state into the next window
    with torch.no_grad():
        e2, _, es2 = m(second, es, carry=True)
        use_fused(m)
        f2, _, fs2 = m(second, fs, carry=True)
    assert ext.calls["dense_tail"] == 4
    for f, e in ((f1, e1), (f2, e2)):
        torch.testing.assert_close(f["nll"], e["nll"], **TOL)
    assert len(fs2) == 2 and fs2[0].keys() == es2[0].keys()
    torch.testing.assert_close(fs2, es2, **TOL)


@pytest.mark.parametrize(
    "layers", [["surnn", "s4d"], ["transformer", "lstm"], ["gru", "surnn", "s4d"]]
)
def test_hybrid_stacks(ext, layers):
    m = _model(ToyTask(n_train=8, n_eval=4), "hybrid", {"layers": layers}, n_layers=len(layers))
    assert m.layer_kinds == layers
    (e, _), (f, _) = _both(m, _tokens(10))
    assert ext.calls["dense_tail"] == len(layers)
    torch.testing.assert_close(f, e, **TOL)


# ------------------------------------------------------------------ when it runs eagerly


def _step(model: Model, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """A training forward and backward from a fixed seed (dropout): (output, gradients)."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(7)
    out, aux = model(batch)
    loss = out.square().sum() + aux.get("aux_loss", 0.0)
    loss.backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_training_or_autograd_runs_eagerly(ext):
    m = _model(ToyTask(n_train=8, n_eval=4), "surnn", {"gate": GATE})
    b = _tokens(10)
    m.train()
    out, grads = _step(m, b)
    use_fused(m)
    out2, grads2 = _step(m, b)
    assert torch.equal(out2, out) and grads2.keys() == grads.keys()
    for name in grads:
        assert torch.equal(grads2[name], grads[name]), name
    # training mode without autograd: the eager modules, dropout included
    with torch.no_grad():
        torch.manual_seed(8)
        fused_on = m(b)[0]
        use_fused(m, False)
        torch.manual_seed(8)
        assert torch.equal(fused_on, m(b)[0])
        use_fused(m)
    # eval mode with autograd on: the eager modules, exactly
    m.eval()
    with_grad = m(b)[0]
    use_fused(m, False)
    assert with_grad.requires_grad and torch.equal(with_grad, m(b)[0])
    assert not ext.calls


def test_float64_weights_run_eagerly(ext):
    m = _model(ToyTask(n_train=8, n_eval=4)).double()
    (e, _), (f, _) = _both(m, _tokens(10))
    assert f.dtype == torch.float64 and torch.equal(f, e)
    assert not ext.calls


def test_dtype_change_after_a_fused_pass_without_feed_forward():
    """A plan without feed-forwards copies no weight; it watches the first norm's, so a
    dtype change after a fused pass runs eagerly (not the float64 table in dense_embed)."""
    m = use_fused(_model(ToyTask(n_train=8, n_eval=4), ffn_mult=0))
    b = _tokens(10)
    with torch.no_grad():
        m(b)  # plans the encoder
        m.double()
        f = m(b)[0]
    use_fused(m, False)
    with torch.no_grad():
        assert torch.equal(f, m(b)[0])


def test_inference_mode_runs_fused(ext):
    m = _model(ToyTask(n_train=8, n_eval=4))
    b = _tokens(10)
    with torch.no_grad():
        e = m(b)[0]
    use_fused(m)
    with torch.inference_mode():
        f = m(b)[0]
    assert ext.calls["dense_tail"] == 2
    torch.testing.assert_close(f, e, **TOL)


# ------------------------------------------------------------------ the plan follows the weights


def _agrees(m: Model, b) -> torch.Tensor:
    """The fused output, checked against the eager one; ``m`` is left fused."""
    (e, _), (f, _) = _both(m, b)
    torch.testing.assert_close(f, e, **TOL)
    use_fused(m)
    return f


def _differs(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (a - b).abs().max() > 1e-3


def test_plan_follows_in_place_updates():
    m = _model(ToyTask(n_train=8, n_eval=4))
    b = _tokens(10)
    before = _agrees(m, b)
    ffn = m.encoder.blocks[0].ffn
    g = torch.Generator().manual_seed(5)
    # not a constant: norm2's output sums to zero over D, so W + c gives the same products
    with torch.no_grad():
        ffn.proj_in.weight.add_(0.3 * torch.randn(ffn.proj_in.weight.shape, generator=g))
    after = _agrees(m, b)
    assert _differs(after, before)

    m.train()  # an optimizer step
    opt = torch.optim.SGD(m.parameters(), lr=0.5)
    out, _ = m(b)
    out.square().sum().backward()
    opt.step()
    m.eval()
    stepped = _agrees(m, b)
    assert _differs(stepped, after)

    other = _model(ToyTask(n_train=8, n_eval=4), n_layers=2)
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(1.5)
    m.load_state_dict(other.state_dict())  # a checkpoint loaded into the weights
    loaded = _agrees(m, b)
    assert _differs(loaded, stepped)


def test_plan_follows_replaced_parameters_and_modules():
    m = _model(ToyTask(n_train=8, n_eval=4))
    b = _tokens(10)
    outs = [_agrees(m, b)]
    blk = m.encoder.blocks[1]
    torch.manual_seed(3)
    blk.ffn.proj_out.weight = nn.Parameter(torch.randn_like(blk.ffn.proj_out.weight))
    outs.append(_agrees(m, b))
    blk.norm2.weight = nn.Parameter(torch.rand_like(blk.norm2.weight) + 0.5)
    outs.append(_agrees(m, b))
    m.encoder.norm.bias = nn.Parameter(torch.randn_like(m.encoder.norm.bias))
    outs.append(_agrees(m, b))
    m.encoder.blocks[0].ffn = type(blk.ffn)(16, 3.0)  # a wider feed-forward
    outs.append(_agrees(m, b))
    for a, c in zip(outs, outs[1:]):
        assert _differs(a, c)


# ------------------------------------------------------------------ use_fused, the extension


def test_use_fused_needs_a_harness_model():
    with pytest.raises(TypeError, match="expected a harness model.*got Linear"):
        use_fused(nn.Linear(2, 2))
    m = _model(ToyTask(n_train=8, n_eval=4))
    assert use_fused(m) is m and m.encoder.dense == "fused"
    assert use_fused(m, False) is m and m.encoder.dense == "eager"


def test_without_the_extension_it_warns_and_runs_eagerly(monkeypatch):
    m = _model(ToyTask(n_train=8, n_eval=4))
    b = _tokens(10)
    with torch.no_grad():
        e = m(b)[0]
    monkeypatch.setattr(fused, "_ext", lambda: None)
    with pytest.warns(RuntimeWarning, match="extension is unavailable"):
        use_fused(m)
    with torch.no_grad():
        assert torch.equal(m(b)[0], e)


def test_an_out_of_range_token_is_an_error(ext):
    m = use_fused(_model(ToyTask(n_train=8, n_eval=4)))
    b = _tokens(10)
    b["x"][2, 5] = 10  # the embedding has 10 rows
    with torch.no_grad(), pytest.raises(RuntimeError, match="token id 10 out of range"):
        m(b)


def test_bad_shapes_to_the_extension_are_errors():
    m = _model(ToyTask(n_train=8, n_eval=4))
    ext = fused._ext()
    _, args = fused.plan(m.encoder).blocks[0]
    x = torch.randn(2, 5, 16)
    with pytest.raises(RuntimeError, match=r"mixer output \[2, 4, 16\] does not match"):
        ext.dense_tail(x, torch.randn(2, 4, 16), *args)
    with pytest.raises(RuntimeError, match="must be a contiguous float32"):
        ext.dense_tail(x, torch.randn(2, 5, 16, dtype=torch.float64), *args)
    with pytest.raises(RuntimeError, match="length 6 outside 0..5"):
        ext.dense_pool(x, torch.tensor([5, 6]), 0, None, None)
    with pytest.raises(RuntimeError, match="1 lengths for 2 rows"):
        ext.dense_pool(x, torch.tensor([5]), 0, None, None)
    with pytest.raises(RuntimeError, match=r"head weight \[3, 8\] on pooled rows of 16"):
        ext.dense_pool(x, torch.tensor([5, 2]), 0, torch.randn(3, 8), None)
    with pytest.raises(RuntimeError, match="norm of size 8 on rows of 16"):
        ext.dense_norm(x, torch.ones(8), torch.zeros(8), 1e-5)


def test_a_tail_longer_than_one_chunk_of_scratch_equals_the_eager_block():
    """Rows beyond one chunk (the scratch a thread keeps: 2^20 floats, here 9,362 rows of
    a block of width 16) go through the same steps chunk after chunk."""
    m = _model(ToyTask(n_train=8, n_eval=4))
    blk, nxt = m.encoder.blocks[0], m.encoder.blocks[1].norm1
    _, args = fused.plan(m.encoder).blocks[0]
    x, y = torch.randn(2, 12_000, 16), torch.randn(2, 12_000, 16)
    with torch.no_grad():
        h, u = fused._ext().dense_tail(x, y, *args)
        e = x + y
        e = e + blk.ffn(blk.norm2(e))
        torch.testing.assert_close(h, e, **TOL)
        torch.testing.assert_close(u, nxt(e), **TOL)


def test_the_products_through_torch_mm_give_the_same_model():
    """SURNN_DENSE_ATEN_MM=1: the feed-forward's products go through at::mm (the path of a
    torch that exports no sgemm); a fresh process, since the choice is made once."""
    code = (
        "import torch\n"
        "from surnn.harness import fused\n"
        "from tests.harness.test_fused import TOL, ToyTask, _model, _tokens\n"
        "m, b = _model(ToyTask(n_train=8, n_eval=4)), _tokens(10)\n"
        "with torch.no_grad():\n"
        "    e = m(b)[0]\n"
        "    f = fused.use_fused(m)(b)[0]\n"
        "torch.testing.assert_close(f, e, **TOL)\n"
        "print(fused._ext().dense_blas())\n"
    )
    env = {**os.environ, "SURNN_DENSE_ATEN_MM": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "at::mm"


# ------------------------------------------------------------------ the inference clock


def test_clock_times_the_recurrent_layers_of_a_model_and_of_its_copy():
    m = use_fused(_model(ToyTask(n_train=8, n_eval=4), "hybrid", {"layers": ["surnn", "s4d"]}))
    b = _tokens(10)
    with torch.no_grad():
        plain = m(b)[0]
    clock = Clock(torch.device("cpu"))
    clock.attach(m)
    with torch.no_grad():
        assert torch.equal(m(b)[0], plain)
    assert clock.mixer > 0
    twin = copy.deepcopy(m)
    twin_clock = Clock(torch.device("cpu"))
    twin_clock.attach(twin)
    clock.mixer = 0.0
    with torch.no_grad():
        assert torch.equal(twin(b)[0], plain)
    assert twin_clock.mixer > 0 and clock.mixer == 0.0
    # a copy not attached again times its own layers into a copy of the clock
    bare = copy.deepcopy(m)
    rnn = bare.encoder.blocks[0].mixer.rnn
    assert rnn.forward.module is rnn and rnn.forward.clock is not clock
    with torch.no_grad():
        bare(b)
    assert clock.mixer == 0.0 and rnn.forward.clock.mixer > 0


def test_an_edit_through_data_is_followed_after_use_fused_again():
    """``weight.data`` edits bump no version: ``use_fused`` again forgets the plan."""
    m = _model(ToyTask(n_train=8, n_eval=4))
    b = _tokens(10)
    use_fused(m)
    with torch.no_grad():
        before = m(b)[0]
    w = m.encoder.blocks[0].ffn.proj_in.weight
    w.data.add_(torch.randn_like(w))
    use_fused(m)
    with torch.no_grad():
        f = m(b)[0]
    use_fused(m, False)
    with torch.no_grad():
        e = m(b)[0]
    assert not torch.allclose(e, before)
    torch.testing.assert_close(f, e, **TOL)
