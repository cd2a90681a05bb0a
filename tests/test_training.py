"""LAC training: objectives, the unbiased channel sampler, validation, early stopping,
kept checkpoints, logs and resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from adjinv.core.inverter import AdjointInverter
from adjinv.core.lac import LACBank
from adjinv.errors import AdjinvError
from adjinv.lacs.checkpoint import load_checkpoint, read_checkpoint
from adjinv.lacs.training import (
    TrainConfig,
    freeze_for_objective,
    kept_checkpoints,
    lac_step,
    sample_weights,
    train_lacs,
)
from conftest import random_lacs, reference_psi, smooth_image


def _imgs(n=3):
    return [smooth_image(40, seed=s)[0] for s in range(n)]


def _grads(lacs):
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten()
                      for p in lacs.parameters()])


def test_sample_weights_is_unbiased():
    w = torch.softmax(torch.randn(2, 30, dtype=torch.float64), 1)
    w[0, :10] = 0
    w = w / w.sum(1, keepdim=True)
    gen = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_weights(w, 0.2, gen) for _ in range(4000)])
    assert torch.allclose(draws.sum(-1), torch.ones(4000, 2, dtype=w.dtype))
    assert (draws[:, 0, :10] == 0).all()  # never a dead channel
    assert (draws.mean(0) - w).abs().max() < 0.01
    assert sample_weights(w, 1.0, gen) is w


def test_sampled_gradient_is_unbiased(tiny_enc):
    x = tiny_enc.normalize(smooth_image(32, batch=2, dtype=torch.float64))
    lacs = random_lacs(tiny_enc, 2)
    inv = AdjointInverter(tiny_enc, lacs)
    with tiny_enc.frozen():
        lac_step(inv, x)
        exact = _grads(lacs)
        gen = torch.Generator().manual_seed(1)
        est = []
        for _ in range(60):
            lacs.zero_grad(set_to_none=True)
            lac_step(inv, x, channel_fraction=0.2, gen=gen)
            est.append(_grads(lacs))
    est = torch.stack(est)
    single = float(((est - exact) ** 2).sum(1).mean())
    mean_err = float(((est.mean(0) - exact) ** 2).sum())
    # the average of 60 draws is ~60x closer (in squared error) than one draw
    assert mean_err < single / 15, (mean_err, single)


def test_pixbias_objective_freezes_inner_beta_and_seed_zero_is_flat(tiny_enc):
    cfg = TrainConfig(steps=3, size=32, lr=0.1, objective="pixbias")
    lacs, _, _ = train_lacs(tiny_enc, _imgs(), cfg)
    for name, lac in lacs.lacs.items():
        if name != "pix":
            assert torch.equal(lac.beta, torch.zeros_like(lac.beta))
            assert not torch.equal(lac.gamma, torch.ones_like(lac.gamma))
    assert not torch.equal(lacs.pix.beta, torch.zeros(3, dtype=lacs.pix.beta.dtype))
    x = tiny_enc.normalize(smooth_image(32, dtype=torch.float64))
    z = AdjointInverter(tiny_enc, lacs).seed_zero_control(x)
    # Ψ(0) is the constant image β_pix: the photo's Jacobians contribute nothing
    torch.testing.assert_close(z, lacs.pix.beta.detach().to(z).view(1, 3, 1, 1).expand_as(z))
    paper = LACBank.for_encoder(tiny_enc)
    freeze_for_objective(paper, "paper")
    assert all(p.requires_grad for p in paper.parameters())


def test_contrastive_step_pushes_swapped_reconstruction_away(tiny_enc):
    x = tiny_enc.normalize(smooth_image(32, batch=2, dtype=torch.float64))
    lacs = LACBank.for_encoder(tiny_enc)
    freeze_for_objective(lacs, "contrastive")
    inv = AdjointInverter(tiny_enc, lacs)
    with tiny_enc.frozen():
        st = lac_step(inv, x, objective="contrastive", contrast_margin=10.0)
        g_con = _grads(lacs)
        lacs.zero_grad(set_to_none=True)
        base = lac_step(inv, x, objective="pixbias")
        g_base = _grads(lacs)
    assert st.swap_l1 is not None and st.l1 == pytest.approx(base.l1)
    # with the hinge active: objective = l1 + (l1 - swap + m)
    assert st.objective == pytest.approx(2 * st.l1 - st.swap_l1 + 10.0)
    assert not torch.allclose(g_con, g_base)
    with pytest.raises(AdjinvError, match="batch_size"):
        TrainConfig(objective="contrastive", batch_size=1).check()


def test_step_recovers_from_out_of_memory_with_the_same_gradient(tiny_enc, monkeypatch):
    """The training backward goes through the inverter's one chunked loop: a chunk that runs
    out of memory mid-chunk (after the first term's gradient) is halved and retried, and
    nothing is counted twice."""
    x = tiny_enc.normalize(smooth_image(32, batch=2, dtype=torch.float64))
    lacs = random_lacs(tiny_enc, 2)
    with tiny_enc.frozen():
        lac_step(AdjointInverter(tiny_enc, lacs, chunk_size=1), x, objective="contrastive")
        ref = _grads(lacs)
        lacs.zero_grad(set_to_none=True)
        inv = AdjointInverter(tiny_enc, lacs, chunk_size=16)
        real, sizes = inv.cascade.pull_back, []

        def tight(lin, stage, cot):
            if torch.is_grad_enabled():  # the backward pass: terms alternate, own then swapped
                sizes.append(cot.shape[0])
                if cot.shape[0] > 3 and len(sizes) % 2 == 0:
                    raise torch.cuda.OutOfMemoryError("simulated")
            return real(lin, stage, cot)

        monkeypatch.setattr(inv.cascade, "pull_back", tight)
        lac_step(inv, x, objective="contrastive")
    assert sizes[0] == sizes[1] > 3 and max(sizes[-4:]) <= 3  # the OOM came after term 1
    torch.testing.assert_close(_grads(lacs), ref, rtol=1e-5, atol=1e-7)  # float32 encoder


@pytest.mark.parametrize("kw, msg", [({"steps": 0}, "steps"), ({"lr": float("nan")}, "lr"),
                                     ({"batch_size": 0}, "batch_size"),
                                     ({"checkpoint_every": 0}, "checkpoint_every"),
                                     ({"objective": "x"}, "objective"),
                                     ({"schedule": "x"}, "schedule"),
                                     ({"patience": 2}, "validation")])
def test_config_errors(kw, msg):
    with pytest.raises(AdjinvError, match=msg):
        TrainConfig(**kw).check()


def test_cosine_schedule():
    cfg = TrainConfig(steps=11, lr=1.0, schedule="cosine", min_lr_ratio=0.1)
    assert cfg.lr_at(0) == pytest.approx(1.0) and cfg.lr_at(10) == pytest.approx(0.1)
    assert cfg.lr_at(5) == pytest.approx(0.55)
    assert all(cfg.lr_at(i) >= cfg.lr_at(i + 1) for i in range(10))


def test_validation_early_stopping_best_and_kept_copies(tiny_enc, tmp_path):
    imgs, val = _imgs(), _imgs(5)[3:]
    # lr so large that training soon stops improving the validation loss
    cfg = TrainConfig(steps=30, size=32, lr=0.5, validate_every=2, patience=2, keep_every=2,
                      checkpoint_every=2)
    ck = tmp_path / "run.lac.safetensors"
    lacs, _, losses = train_lacs(tiny_enc, imgs, cfg, checkpoint=ck, validation=val)
    meta, _ = read_checkpoint(ck)
    hist = meta["history"]
    assert len(losses) == len(hist) < 30 and hist[-1]["stopped"]
    vals = [r for r in hist if "val_l1" in r]
    best = min(vals, key=lambda r: r["val_objective"])
    assert meta["early_stopping"]["best_step"] == best["step"]
    # the shipped LACs are those of the best validation step, reproducible from its copy
    kept = {int(p.name[5:10]): p for p in kept_checkpoints(ck)}
    assert 0 in kept and best["step"] in kept
    at_best, _ = load_checkpoint(kept[best["step"]], tiny_enc)
    shipped, _ = load_checkpoint(ck, tiny_enc)
    for k, v in at_best.state_dict().items():
        assert torch.equal(shipped.state_dict()[k], v)
        assert torch.equal(lacs.state_dict()[k], v)
    ident, _ = load_checkpoint(kept[0], tiny_enc)
    assert torch.equal(ident.pix.gamma, torch.ones(3, dtype=ident.pix.gamma.dtype))
    # logs beside the checkpoint
    log = json.loads((tmp_path / "run.log.json").read_text())
    assert [r["step"] for r in log] == [r["step"] for r in hist]
    assert (tmp_path / "run.log.csv").read_text().startswith("step,loss")
    assert (tmp_path / "run.loss.png").stat().st_size > 1000


def test_resume_with_validation_is_exact(tiny_enc, tmp_path):
    imgs, val = _imgs(), _imgs(5)[3:]
    cfg = TrainConfig(steps=6, size=32, lr=0.05, validate_every=2, checkpoint_every=1,
                      schedule="cosine", batch_size=2, objective="contrastive")
    ref, _, ref_loss = train_lacs(tiny_enc, imgs, cfg, validation=val)

    def stop(step, total, loss):
        if step == 4:
            raise KeyboardInterrupt

    p = tmp_path / "r.safetensors"
    with pytest.raises(KeyboardInterrupt):
        train_lacs(tiny_enc, imgs, cfg, checkpoint=p, progress=stop, validation=val)
    got, _, loss = train_lacs(tiny_enc, imgs, cfg, checkpoint=p, resume=True, validation=val)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-12)
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(got.state_dict()[k], v, rtol=1e-9, atol=1e-12)
    with pytest.raises(AdjinvError, match="images"):
        train_lacs(tiny_enc, imgs, TrainConfig(**{**cfg.__dict__, "images": ["other"]}),
                   checkpoint=p, resume=True, validation=val)


def test_multipath_is_the_sum_of_independent_per_stage_losses(tiny_enc):
    """Eq. 31 (docs/method.md §4): objective and gradient equal Σ_l ℓ1(x̂_l, x) written out
    with plain autograd as in ``conftest.reference_psi``, one stage and one channel at a time;
    the shallow terms move LACs the deepest-stage loss moves differently (not a rescaling)."""
    from adjinv.core.simplex import simplex_measure

    x = tiny_enc.normalize(smooth_image(32, batch=2, dtype=torch.float64))
    lacs = random_lacs(tiny_enc, 3)
    with tiny_enc.frozen():
        st = lac_step(AdjointInverter(tiny_enc, lacs), x, objective="multipath")
        g_multi = _grads(lacs)
        lacs.zero_grad(set_to_none=True)
        deep = lac_step(AdjointInverter(tiny_enc, lacs), x, objective="paper")
        g_deep = _grads(lacs)
        lacs.zero_grad(set_to_none=True)
        acts = tiny_enc.forward_stages(x, upto=tiny_enc.num_stages - 1)
        total, per = 0.0, []
        with torch.enable_grad():
            for s, a in enumerate(acts):
                w = simplex_measure(a.detach())
                c = a.shape[1]
                seeds = torch.zeros(c, *a.shape, dtype=a.dtype)
                for k in range(c):
                    seeds[k, :, k] = a[:, k].detach()
                phi = reference_psi(tiny_enc, lacs, x, s, seeds, keep_graph=True)
                x_hat = torch.einsum("bc,cbkhw->bkhw", w, phi)
                loss = (x_hat - x).abs().mean()
                per.append(float(loss.detach()))
                total = total + loss
            total.backward()
        g_ref = _grads(lacs)
    assert st.stage_l1 == pytest.approx(per, rel=1e-10)
    assert st.objective == pytest.approx(sum(per), rel=1e-10)
    assert st.l1 == pytest.approx(deep.l1, rel=1e-12) == pytest.approx(per[-1], rel=1e-10)
    torch.testing.assert_close(g_multi, g_ref, rtol=1e-5, atol=1e-7)  # float32 LACs
    # the shallow stages change the direction of the update, not just its size
    cos = float(g_multi @ g_deep / (g_multi.norm() * g_deep.norm()))
    assert cos < 0.99, cos
    # stages 2 and 3 reach the inner LACs: their gradient is not the deepest stage's
    inner = torch.cat([torch.full((p.numel(),), not n.startswith("lacs.pix"))
                       for n, p in lacs.named_parameters()])
    assert inner.any() and not torch.allclose(g_multi[inner], g_deep[inner])

def test_multipath_trains_and_logs_every_stage(tiny_enc, tmp_path):
    imgs, val = _imgs(), _imgs(5)[3:]
    cfg = TrainConfig(steps=2, size=32, lr=0.05, validate_every=2, objective="multipath")
    ck = tmp_path / "mp.lac.safetensors"
    lacs, _, losses = train_lacs(tiny_enc, imgs, cfg, checkpoint=ck, validation=val)
    hist = json.loads((tmp_path / "mp.log.json").read_text())
    n = tiny_enc.num_stages
    last = hist[-1]
    assert [k for k in last if k.startswith("val_l1_stage")] == [f"val_l1_stage{i}" for i in range(n)]
    # validation picks on Eq. 31 itself; "loss"/"val_l1" stay the deepest stage's ℓ1
    assert last["val_objective"] == pytest.approx(sum(last[f"val_l1_stage{i}"] for i in range(n)))
    assert last["val_l1"] == pytest.approx(last[f"val_l1_stage{n - 1}"])
    assert last["loss"] == pytest.approx(last[f"l1_stage{n - 1}"])
    assert all(lac.beta.requires_grad for lac in lacs.lacs.values())


def test_stratified_sample_weights_keep_the_top_exactly_and_are_unbiased():
    w = torch.softmax(3 * torch.randn(2, 40, dtype=torch.float64), 1)
    w[1, :15] = 0
    w = w / w.sum(1, keepdim=True)
    gen = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_weights(w, 0.25, gen, top=0.5) for _ in range(4000)])
    live = (w > 0).sum(1)
    for b in range(2):
        n = int(torch.ceil(0.25 * live[b]))
        first = w[b].topk(n // 2).indices
        assert (draws[:, b, first] == w[b, first]).all()  # the top channels: no variance
    torch.testing.assert_close(draws.sum(-1), torch.ones(4000, 2, dtype=w.dtype))
    assert (draws[:, 1, :15] == 0).all()
    assert (draws.mean(0) - w).abs().max() < 0.01
    with pytest.raises(AdjinvError, match="top"):
        sample_weights(w, 0.25, gen, top=1.0)


def test_sampled_xhat_step_is_the_gradient_of_the_sampled_reconstruction(tiny_enc):
    """``xhat="sampled"`` (docs/method.md §4): the loss and gradient are those of
    ℓ1(Σ ŵ_c φ_c, x) for the drawn ŵ, written out with plain autograd; a full channel
    fraction is the exact step."""
    from adjinv.core.simplex import simplex_measure

    x = tiny_enc.normalize(smooth_image(32, batch=1, dtype=torch.float64))
    lacs = random_lacs(tiny_enc, 4)
    last = tiny_enc.num_stages - 1
    with tiny_enc.frozen():
        st = lac_step(AdjointInverter(tiny_enc, lacs), x, channel_fraction=0.3,
                      gen=torch.Generator().manual_seed(5), xhat="sampled", top=0.5)
        g = _grads(lacs)
        lacs.zero_grad(set_to_none=True)
        a = tiny_enc.forward_stages(x, upto=last)[last].detach()
        w = sample_weights(simplex_measure(a), 0.3, torch.Generator().manual_seed(5), top=0.5)
        assert 0 < int((w > 0).sum()) < int((simplex_measure(a) > 0).sum())
        c = a.shape[1]
        seeds = torch.zeros(c, *a.shape, dtype=a.dtype)
        for k in range(c):
            seeds[k, :, k] = a[:, k]
        with torch.enable_grad():
            phi = reference_psi(tiny_enc, lacs, x, last, seeds, keep_graph=True)
            loss = (torch.einsum("bc,cbkhw->bkhw", w, phi) - x).abs().mean()
            loss.backward()
        g_ref = _grads(lacs)
        lacs.zero_grad(set_to_none=True)
        full = lac_step(AdjointInverter(tiny_enc, lacs), x, xhat="sampled")
        g_full = _grads(lacs)
        lacs.zero_grad(set_to_none=True)
        exact = lac_step(AdjointInverter(tiny_enc, lacs), x)
        torch.testing.assert_close(g_full, _grads(lacs))
    assert st.l1 == pytest.approx(float(loss.detach()), rel=1e-6)
    torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-7)  # float32 LACs
    assert full.l1 == exact.l1


def test_sampled_xhat_config_is_checked_and_resumes(tiny_enc, tmp_path):
    with pytest.raises(AdjinvError, match="xhat"):
        TrainConfig(xhat="approx").check()
    with pytest.raises(AdjinvError, match="xhat='sampled'"):
        TrainConfig(xhat="sampled", objective="pixbias").check()
    cfg = TrainConfig(steps=4, size=32, checkpoint_every=2, channel_fraction=0.5, xhat="sampled",
                      top=0.5, lr=0.05)
    ck = tmp_path / "s.lac.safetensors"
    a, _, la = train_lacs(tiny_enc, _imgs(2), cfg, checkpoint=ck)
    cfg.steps = 2
    train_lacs(tiny_enc, _imgs(2), cfg, checkpoint=tmp_path / "r.lac.safetensors")
    cfg.steps = 4
    b, _, lb = train_lacs(tiny_enc, _imgs(2), cfg, checkpoint=tmp_path / "r.lac.safetensors",
                          resume=True)
    assert la == lb
    for (n, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, msg=n)


def test_resume_may_change_how_often_validation_runs(tiny_enc, tmp_path):
    """validate_every and patience pick the checkpoint, not the trajectory: a resumed run may
    change them, and the steps stay those of an uninterrupted run."""
    val = _imgs(1)
    cfg = TrainConfig(steps=4, size=32, checkpoint_every=2, validate_every=1, lr=0.05)
    a, _, la = train_lacs(tiny_enc, _imgs(2), cfg, checkpoint=tmp_path / "a.lac.safetensors",
                          validation=val)
    cfg.steps = 2
    train_lacs(tiny_enc, _imgs(2), cfg, checkpoint=tmp_path / "b.lac.safetensors", validation=val)
    cfg.steps, cfg.validate_every, cfg.patience = 4, 2, 3
    _, _, lb = train_lacs(tiny_enc, _imgs(2), cfg, checkpoint=tmp_path / "b.lac.safetensors",
                          resume=True, validation=val)
    assert la == lb
    cfg.lr = 0.01
    with pytest.raises(AdjinvError, match="differs in lr"):
        train_lacs(tiny_enc, _imgs(2), cfg, checkpoint=tmp_path / "b.lac.safetensors",
                   resume=True, validation=val)


@pytest.mark.parametrize("kw", [{"channel_fraction": 0.4},
                                {"channel_fraction": 0.3, "xhat": "sampled", "top": 0.5},
                                {"objective": "multipath", "channel_fraction": 0.5},
                                {"objective": "multipath", "channel_fraction": 0.5,
                                 "xhat": "sampled"},
                                {}])
def test_one_pass_step_equals_the_two_pass_step(tiny_enc, monkeypatch, kw):
    """Recording the gradient's pull-backs during the pass that gives x̂ (docs/method.md §4)
    gives the loss and gradient of the two-pass step (no room for the graphs), with each
    gradient channel pulled back once instead of twice."""
    from adjinv.lacs import training

    x = tiny_enc.normalize(smooth_image(32, batch=2, dtype=torch.float64))
    lacs = random_lacs(tiny_enc, 6)
    inv = AdjointInverter(tiny_enc, lacs, chunk_size=3)
    real = inv.cascade.pull_back
    pulled = {"n": 0}

    def count(lin, stage, cot):
        pulled["n"] += cot.shape[0]
        return real(lin, stage, cot)

    monkeypatch.setattr(inv.cascade, "pull_back", count)
    got = {}
    for room in (True, False):
        monkeypatch.setattr(training, "graph_budget", (lambda d: 1 << 40) if room else (lambda d: 0))
        lacs.zero_grad(set_to_none=True)
        pulled["n"] = 0
        with tiny_enc.frozen():
            st = lac_step(inv, x, gen=torch.Generator().manual_seed(3), **kw)
        got[room] = (st, _grads(lacs), pulled["n"])
    (one, g_one, n_one), (two, g_two, n_two) = got[True], got[False]
    assert float(g_two.abs().max()) > 0
    torch.testing.assert_close(g_one, g_two, rtol=1e-5, atol=1e-7)  # float32 LACs
    assert one.l1 == pytest.approx(two.l1, rel=1e-6)
    assert one.objective == pytest.approx(two.objective, rel=1e-6)
    assert n_one < n_two


def test_one_pass_falls_back_when_recording_runs_out_of_memory(tiny_enc, monkeypatch):
    """A one-channel chunk that runs out of memory while recorded cannot be halved: the step
    drops what it recorded and takes the two passes, with the same gradient."""
    x = tiny_enc.normalize(smooth_image(32, batch=1, dtype=torch.float64))
    lacs = random_lacs(tiny_enc, 7)
    inv = AdjointInverter(tiny_enc, lacs, chunk_size=1)
    with tiny_enc.frozen():
        lac_step(inv, x, channel_fraction=0.5, gen=torch.Generator().manual_seed(0))
        ref = _grads(lacs)
        lacs.zero_grad(set_to_none=True)
        real = inv.cascade.pull_back
        calls = {"n": 0}

        def tight(lin, stage, cot):
            if torch.is_grad_enabled():
                calls["n"] += 1
                if calls["n"] == 2:
                    raise torch.cuda.OutOfMemoryError("simulated")
            return real(lin, stage, cot)

        monkeypatch.setattr(inv.cascade, "pull_back", tight)
        lac_step(inv, x, channel_fraction=0.5, gen=torch.Generator().manual_seed(0))
    assert calls["n"] > 2  # the two-pass path ran after the simulated failure
    torch.testing.assert_close(_grads(lacs), ref, rtol=1e-5, atol=1e-7)
