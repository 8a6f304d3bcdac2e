"""torch.distributed: every rank makes the same decision (DDP and FSDP2, gloo on the CPU).

Two processes are spawned once (`ranks_results`, module scope) and run every distributed
scenario; the tests assert on what each rank saved. `run_ddp_job` is also the measurement of
what happens without the combination (`process_group` set to a group of one rank per rank).
"""

from __future__ import annotations

import io
import math
import os
import re
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lrctl.actions import ActionSpec
from lrctl.controller import LRController
from lrctl.distributed import active_group, combine_block
from tests.helpers import constant_policy, random_policy
from tests.readme import readme_snippet

WORLD = 2
DDP_STEPS = 400


def record_blocks(ctrl: LRController) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (losses, gradient norms) of every block that reaches the controller's features."""
    seen: list[tuple[np.ndarray, np.ndarray]] = []
    tracker = ctrl._tracker
    update, update_one, depth = tracker.update, tracker.update_one, [0]

    def wrap(fn):
        def recorded(losses, grad_norms, *rest):
            if depth[0] == 0:
                seen.append((np.array(losses, dtype=float), np.array(grad_norms, dtype=float)))
            depth[0] += 1
            try:
                return fn(losses, grad_norms, *rest)
            finally:
                depth[0] -= 1

        return recorded

    tracker.update, tracker.update_one = wrap(update), wrap(update_one)
    return seen


def rank_batch(rank: int, step: int, n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Each rank draws its own batch: a seed per (rank, step)."""
    g = torch.Generator().manual_seed(1000 * step + rank)
    x = torch.randn(n, 5, generator=g)
    w = torch.tensor([[1.0], [-2.0], [0.5], [0.0], [3.0]])
    return x, x @ w + 0.3 * torch.randn(n, 1, generator=g)


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))


def record_step_stats(ctrl: LRController) -> list[tuple[np.ndarray, np.ndarray]]:
    """Features v3: at every decision, the statistics that reach the features (combined over
    the ranks) and this rank's own (the per-tensor sums, before combining)."""
    from lrctl.last_steps import combine_stats

    seen: list[tuple[np.ndarray, np.ndarray]] = []
    update = ctrl._tracker.update

    def recorded(losses, grad_norms, ratio, progress, step_stats=None):
        own = combine_stats(ctrl._last.stats).double().cpu().numpy()
        seen.append((np.array(step_stats, dtype=float), own))
        return update(losses, grad_norms, ratio, progress, step_stats)

    ctrl._tracker.update = recorded
    return seen


def run_ddp_job(
    rank: int,
    steps: int,
    group: dist.ProcessGroup | None,
    per_group: bool = False,
    feature_version: int = 2,
) -> dict:
    """DDP on this rank's batches with one LRController per rank (the shipped controller, or
    a random policy per group or for features v3); `group`: the controller's process_group."""
    from torch.nn.parallel import DistributedDataParallel

    from lrctl.param_groups import layer_param_groups

    model = make_model()
    ddp = DistributedDataParallel(model)
    params = layer_param_groups(model) if per_group else model.parameters()
    opt = torch.optim.SGD(params, lr=0.05, momentum=0.9)
    own = per_group or feature_version != 2
    weights = random_policy(3, feature_version=feature_version) if own else None
    sched = LRController(opt, steps, controller=weights, per_group=per_group, process_group=group)
    stats = record_step_stats(sched) if feature_version >= 3 else []
    lrs, losses = [], []
    for t in range(steps):
        x, y = rank_batch(rank, t)
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(ddp(x), y)
        loss.backward()
        opt.step()
        sched.step(loss)
        lrs.append(sched.get_last_lr())
        losses.append(loss.item())
    return {
        "lrs": lrs,
        "losses": losses,
        "params": [p.detach().clone() for p in model.parameters()],
        "stats": stats,
    }


def run_nan_on_one_rank(rank: int) -> list[float]:
    """Only rank 0 sees a NaN loss (step 5): both ranks must cut and hold."""
    spec = ActionSpec(interval=4, max_multiplier=2.0, lr_band=(0.01, 100.0))
    param = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([param], lr=0.1)
    sched = LRController(opt, 28, controller=constant_policy(1.0, spec))
    lrs = []
    for t in range(28):
        param.grad = torch.full_like(param, 0.1 * (rank + 1))
        opt.step()
        sched.step(float("nan") if (rank == 0 and t == 5) else 1.0 + rank)
        lrs.append(opt.param_groups[0]["lr"])
    return lrs


def run_fsdp2(rank: int) -> dict:
    """FSDP2 (`fully_shard`, DTensor parameters): what reaches the features against the full
    model's global gradient norm and the ranks' mean loss, computed with collectives."""
    from torch.distributed.fsdp import fully_shard

    model = make_model()
    fully_shard(model[0])
    fully_shard(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    spec = ActionSpec(interval=4, max_multiplier=2.0, lr_band=(0.1, 10.0), grad_norm_steps=4)
    sched = LRController(opt, 12, controller=random_policy(5, spec))
    blocks = record_blocks(sched)
    ref_losses, ref_norms, lrs = [], [], []
    for t in range(12):
        x, y = rank_batch(rank, t)
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        full = [p.grad.full_tensor() for p in model.parameters()]
        ref_norms.append(float(torch.linalg.vector_norm(torch.cat([g.flatten() for g in full]))))
        mean_loss = loss.detach().clone()
        dist.all_reduce(mean_loss)
        ref_losses.append(float(mean_loss) / WORLD)
        opt.step()
        sched.step(loss)
        lrs.append(opt.param_groups[0]["lr"])
        if t == 5 and rank == 0:  # mid-block, on one rank only (as a Trainer saves): no collective
            saved = io.BytesIO()
            torch.save(sched.state_dict(), saved)
            saved.seek(0)
            state = torch.load(saved, weights_only=True)
    return {"blocks": blocks, "ref_losses": ref_losses, "ref_norms": ref_norms, "lrs": lrs,
            "state_norms": state["block_grad_norms"].tolist() if rank == 0 else None}  # fmt: skip


def run_fsdp2_v3(rank: int) -> dict:
    """FSDP2 with features v3: the statistics that reach the features against the full
    model's, computed from full tensors (gathered with collectives)."""
    from torch.distributed.fsdp import fully_shard

    model = make_model()
    fully_shard(model[0])
    fully_shard(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    spec = ActionSpec(interval=4, max_multiplier=2.0, lr_band=(0.1, 10.0), grad_norm_steps=2)
    sched = LRController(opt, 12, controller=random_policy(5, spec, feature_version=3))
    seen = record_step_stats(sched)
    full = lambda ts: torch.cat([t.full_tensor().reshape(-1) for t in ts]).double()  # noqa: E731
    ref, prev = [], None
    for t in range(12):
        x, y = rank_batch(rank, t)
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        grad = full([p.grad for p in model.parameters()])
        before = full(model.parameters())
        opt.step()
        after = full(model.parameters())
        sched.step(loss)
        if (t + 1) % 4 == 0:
            ref.append([float(prev @ grad), float((before - after).square().sum()),
                        float(before.square().sum())])  # fmt: skip
        prev = grad
    return {"combined": [c for c, _ in seen], "ref": ref}


def _worker(rank: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        # A file rendezvous: no port that another process could take between choosing it
        # and the bind (a TCP rendezvous hung the fixture now and then on a busy machine).
        init_method=f"file://{Path(out_dir) / 'rendezvous'}",
        rank=rank,
        world_size=WORLD,
        timeout=timedelta(seconds=60),
    )
    try:
        alone = [dist.new_group([r]) for r in range(WORLD)]  # one group per rank: no combining
        out = {
            "ddp": run_ddp_job(rank, DDP_STEPS, None),
            "ddp_alone": run_ddp_job(rank, DDP_STEPS, alone[rank]),
            "ddp_per_group": run_ddp_job(rank, 60, None, per_group=True),
            "ddp_v3": run_ddp_job(rank, 60, None, feature_version=3),
            "nan": run_nan_on_one_rank(rank),
        }
        try:
            out["fsdp2"] = run_fsdp2(rank)
            out["fsdp2_v3"] = run_fsdp2_v3(rank)
        except ImportError as exc:  # a torch without FSDP2
            out["fsdp2"] = out["fsdp2_v3"] = repr(exc)
    finally:
        dist.destroy_process_group()
    torch.save(out, Path(out_dir) / f"rank{rank}.pt")


def spawn(out_dir: Path, timeout_s: float = 240.0) -> list[dict]:
    """Run `_worker` on WORLD processes and return what each rank saved."""
    ctx = mp.spawn(_worker, args=(str(out_dir),), nprocs=WORLD, join=False)
    deadline = time.monotonic() + timeout_s
    while not ctx.join(timeout=1.0):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"distributed workers did not finish within {timeout_s} s")
    return [torch.load(out_dir / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


_SPAWN_ERROR: list[str] = []  # a failed spawn fails the module's other tests at once


@pytest.fixture(scope="module")
def ranks_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    if _SPAWN_ERROR:
        pytest.fail(_SPAWN_ERROR[0])
    try:
        return spawn(tmp_path_factory.mktemp("distributed"))
    except BaseException as exc:
        _SPAWN_ERROR.append(f"the distributed workers failed: {exc}")
        raise


def divergence(results: list[dict], key: str) -> tuple[int, float]:
    """(steps at which the ranks' LRs differ, largest parameter difference at the end)."""
    a, b = results[0][key], results[1][key]
    steps = sum(x != y for x, y in zip(a["lrs"], b["lrs"], strict=True))
    diff = max(float((p - q).abs().max()) for p, q in zip(a["params"], b["params"], strict=True))
    return steps, diff


def test_ddp_ranks_write_identical_lrs_and_keep_identical_parameters(ranks_results):
    ddp = [r["ddp"] for r in ranks_results]
    assert ddp[0]["losses"] != ddp[1]["losses"]  # each rank really sees its own batches
    assert len(ddp[0]["lrs"]) == DDP_STEPS and len({lr[0] for lr in ddp[0]["lrs"]}) > 5
    assert ddp[0]["lrs"] == ddp[1]["lrs"]  # exactly, at every step
    for p, q in zip(ddp[0]["params"], ddp[1]["params"], strict=True):
        assert torch.equal(p, q)  # bitwise
    # Without the combination (a process group of one rank each) the same job drifts apart:
    steps, diff = divergence(ranks_results, "ddp_alone")
    print(f"ddp: combined {divergence(ranks_results, 'ddp')}, alone ({steps}, {diff:.3g})")
    assert steps > 0 and diff > 0


def test_ddp_per_group_decisions_agree_across_ranks(ranks_results):
    a, b = (r["ddp_per_group"] for r in ranks_results)
    assert a["lrs"] == b["lrs"]
    assert len({tuple(lr) for lr in a["lrs"]}) > 3 and any(x != y for x, y in a["lrs"])
    assert all(torch.equal(p, q) for p, q in zip(a["params"], b["params"], strict=True))


def test_ddp_features_v3_decisions_agree_across_ranks(ranks_results):
    """Features v3 under DDP: the gradient dot products and the update's and parameters'
    squared norms go through the same all_reduce, weighted as the gradient norms' squares: DDP
    replicates gradients and parameters, so the combined numbers are each rank's own (counted
    once, not twice), the same on both ranks, and the ranks write the same LRs."""
    steps, diff = divergence(ranks_results, "ddp_v3")
    assert steps == 0 and diff == 0.0
    a, b = (r["ddp_v3"]["stats"] for r in ranks_results)
    assert len(a) == len(b) == 12  # 60 steps, K = 5
    for (combined_a, own_a), (combined_b, own_b) in zip(a, b, strict=True):
        np.testing.assert_array_equal(combined_a, combined_b)
        np.testing.assert_allclose(combined_a, own_a, rtol=1e-6)
        np.testing.assert_allclose(own_a, own_b, rtol=1e-6)
    assert np.isfinite(np.array([c for c, _ in a])).all()


def test_distributed_nan_on_one_rank_cuts_on_every_rank(ranks_results):
    after_each_decision = [r["nan"][3::4] for r in ranks_results]
    expected = [0.2, 0.1, 0.1, 0.1, 0.1, 0.2, 0.4]  # cut to 1/m_max, held for 3 decisions
    assert after_each_decision[0] == pytest.approx(expected)
    assert ranks_results[0]["nan"] == ranks_results[1]["nan"]


def test_distributed_fsdp2_sharded_norms_add_up_in_squares(ranks_results):
    a, b = (r["fsdp2"] for r in ranks_results)
    if isinstance(a, str):
        pytest.skip(f"FSDP2 unavailable in this torch: {a}")
    assert a["lrs"] == b["lrs"]
    assert len(a["blocks"]) == 3
    for rank_out in (a, b):
        losses = np.concatenate([blk[0].ravel() for blk in rank_out["blocks"]])
        norms = np.concatenate([blk[1].ravel() for blk in rank_out["blocks"]])
        np.testing.assert_allclose(losses, a["ref_losses"], rtol=1e-6)
        np.testing.assert_allclose(norms, a["ref_norms"], rtol=1e-5)
    for (la, ga), (lb, gb) in zip(a["blocks"], b["blocks"], strict=True):
        np.testing.assert_array_equal(la, lb)
        np.testing.assert_array_equal(ga, gb)
    # a mid-block state_dict on one rank: its own shards' norms (no collective, no hang)
    assert len(a["state_norms"]) == 2
    assert all(0 < n < full for n, full in zip(a["state_norms"], a["ref_norms"][4:6], strict=True))


def test_distributed_fsdp2_v3_statistics_are_the_full_models(ranks_results):
    """FSDP2 shards add up: the combined dot products and squared norms are those of the full
    gradients and parameters, on both ranks."""
    a, b = (r["fsdp2_v3"] for r in ranks_results)
    if isinstance(a, str):
        pytest.skip(f"FSDP2 not available: {a}")
    assert len(a["combined"]) == 3
    np.testing.assert_array_equal(np.array(a["combined"]), np.array(b["combined"]))
    np.testing.assert_allclose(np.array(a["combined"])[:, 0], np.array(a["ref"]), rtol=1e-5)


def test_distributed_no_collective_without_a_group(tmp_path, monkeypatch):
    """Not initialised, or a world of one: no collective, the plain single-process path."""

    def forbidden(*args, **kwargs):
        raise AssertionError("no collective expected")

    monkeypatch.setattr(dist, "all_reduce", forbidden)

    def run() -> list[float]:
        param = torch.nn.Parameter(torch.ones(3))
        opt = torch.optim.SGD([param], lr=0.1)
        sched = LRController(opt, 12, controller=random_policy(1))
        for t in range(12):
            param.grad = torch.full_like(param, 1.0 / (t + 1))
            opt.step()
            sched.step(1.0 / (t + 1))
        return sched.get_last_lr()

    assert active_group() is None
    alone = run()
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        assert active_group() is None
        assert run() == alone
    finally:
        dist.destroy_process_group()


def test_distributed_shares_of_replicated_and_sharded_norms():
    """The arithmetic alone: plain tensors (DDP) count 1/world, a DTensor shard's square
    counts once per distinct shard; a world of 2 simulated by summing two ranks' packets."""
    pytest.importorskip("torch.distributed.tensor")
    from lrctl.distributed import _share

    assert _share(torch.tensor(3.0), 4) == 0.25

    class FakeNorm:  # the two attributes `_share` reads from a DTensor
        def __init__(self, placements, mesh_shape):
            self.placements = placements
            self.device_mesh = type("Mesh", (), {"mesh": torch.zeros(mesh_shape)})()

    from torch.distributed.tensor import Partial, Replicate

    assert _share(FakeNorm((Partial(),), (4,)), 4) == 1.0  # FSDP: every shard counts
    assert _share(FakeNorm((Replicate(), Partial()), (2, 2)), 4) == 0.5  # HSDP: 2 replicas
    assert _share(FakeNorm((Replicate(),), (4,)), 4) == 0.25


def test_distributed_combine_block_in_one_process(tmp_path):
    """`combine_block` on a world of one: the mean loss is the loss, and the norms are the
    global norms of the per-parameter norms (per group too)."""
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        group = dist.group.WORLD
        losses = [torch.tensor(2.0), torch.tensor(float("nan"))]
        parts = [[torch.tensor(3.0), torch.tensor(4.0)], None]
        mean, norms, stats = combine_block(group, losses, parts)
        np.testing.assert_array_equal(mean[0, 0], 2.0)
        assert math.isnan(mean[0, 1]) and stats is None  # no features-v3 statistics given
        np.testing.assert_allclose(norms, [[5.0, 0.0]])
        mean, norms, _ = combine_block(group, losses, parts, group_sizes=[1, 1])
        assert mean.shape == (2, 2)
        np.testing.assert_allclose(norms, [[3.0, 0.0], [4.0, 0.0]])
    finally:
        dist.destroy_process_group()


def test_readme_ddp_snippet_gives_every_rank_the_same_lr(tmp_path):
    """The README's DDP script, run the way the README says: torchrun, two processes.

    A process of its own (not a third group inside the fixture's workers): re-initialising
    torch.distributed in a worker that had already destroyed a group hung now and then at
    the snippet's end, which a user's torchrun never does."""
    script = tmp_path / "train_ddp.py"
    script.write_text(readme_snippet("Several processes (DDP, FSDP)"), encoding="utf-8")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [*torchrun, f"--nproc-per-node={WORLD}", str(script)],
        capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    lrs: dict[str, dict[str, float]] = {"0": {}, "1": {}}
    for rank, step, lr in re.findall(r"rank (\d) step (\d+): lr ([-+.\deE]+)", done.stdout):
        lrs[rank][step] = float(lr)
    assert list(lrs["0"]) == ["50", "100", "150", "200"], done.stdout
    assert lrs["0"] == lrs["1"]  # the same LR on every rank, all through the run
    assert len(set(lrs["0"].values())) == 4 and lrs["0"]["50"] != 0.01
