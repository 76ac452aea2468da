"""The compiled kernel's step plans (``compiled.step_plan``, the extension's ``StepPlan``):
what a served time-only gate carries so that inference neither reads g nor lists neurons
per step (``compiled.infer_plan``), checked against ``compiled.infer``."""

from __future__ import annotations

import pytest
import torch

from surnn.ops import compiled
from tests.fixtures import make_case

needs_kernel = pytest.mark.skipif(
    not compiled.available(), reason=f"compiled kernel unavailable: {compiled._STATE['error']}"
)


@needs_kernel
@pytest.mark.parametrize("kind", ["random", "sparse", "open", "closed", "soft", "slab"])
@pytest.mark.parametrize("mask", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_step_plan_runs_as_the_gate_it_was_made_from(kind, mask, dtype):
    """``infer_plan`` with a gate's ``StepPlan`` gives ``infer``'s outputs bit for bit: the
    plan lists the neurons that are open or active (the active but closed ones keep their
    state), keeps g only where a listed value is not 1, and lists nothing where every step
    computes every neuron."""
    x, h0, w, g, active, _ = make_case(3, 11, 5, 37, kind, dtype=dtype)
    x, h0, w, g = x.detach(), h0.detach(), [t.detach() for t in w], g.detach()
    active = active if mask else None
    plan = compiled.step_plan(g, active)
    listed = (g != 0) | active if mask else g != 0
    assert (plan.T, plan.H, plan.nnz) == (11, 37, int(listed.sum()))
    assert plan.unit == bool((g[listed] == 1).all())
    assert plan.every == (plan.unit and bool(listed.all()))
    assert plan.every == (kind == "open")
    want = compiled.infer(x, h0, *w, g, active, 2)
    got = compiled.infer_plan(x, h0, *w, plan, 2)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1][None])  # h_n [1,B,H]
    got = compiled.infer_plan(x, None, w[0], w[1], None, None, plan, 1)  # zeros, no biases
    want = compiled.infer(x, None, w[0], w[1], None, None, g, active, 1)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1][None])


@needs_kernel
def test_a_step_plan_is_its_own_and_checks_what_it_is_given():
    """A plan keeps what it was made from (an in-place change of the gate afterwards does not
    reach it) and refuses a gate it cannot run, or an input of another length or dtype."""
    x, h0, w, g, active, _ = make_case(2, 9, 4, 16, "soft", dtype=torch.float32)
    x, h0, w, g = x.detach(), h0.detach(), [t.detach() for t in w], g.detach().clone()
    plan = compiled.step_plan(g, None)
    want = compiled.infer(x, h0, *w, g.clone(), None, 1)
    g.mul_(0.5)
    got = compiled.infer_plan(x, h0, *w, plan, 1)
    assert torch.equal(got[0], want[0])
    with pytest.raises(RuntimeError, match=r"time-only gate g \[T,H\]"):
        compiled.step_plan(g[None], None)
    with pytest.raises(RuntimeError, match="active of g's shape"):
        compiled.step_plan(g, active[:3])
    with pytest.raises(RuntimeError, match="the plan is for T=9"):
        compiled.infer_plan(x[:, :5], h0, *w, plan, 1)
    with pytest.raises(RuntimeError, match="the plan's gate is Float, the input Double"):
        compiled.infer_plan(x.double(), h0.double(), *(t.double() for t in w), plan, 1)
    with pytest.raises(RuntimeError, match=r"expected w_ih \[3H,D\]"):
        compiled.infer_plan(x, h0, w[0][:3], w[1], None, None, plan, 1)
