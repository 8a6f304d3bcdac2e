"""The v2 families a population trains through torch.vmap (residual MLPs with LayerNorm, the
causal transformers): each member behaves as LRControlEnv on the same run spec, through an
auto-reset, exactly as tests/test_batched_env.py holds the MLP and CNN families to it. The v2
MLP families (the batched-matmul path) are cases of that file's own test.

The transformers pass too, but are not `batchable`: under vmap they train no faster than one
run per core (benchmarks/family_throughput.py), so meta-training runs them as single envs;
the test lifts the flag to keep the equivalence checked. The other families are not
batchable for a stated reason: BatchNorm's running statistics do not follow a member under
vmap, dropout draws random numbers vmap refuses in its default mode, and nn.RNN / nn.LSTM /
nn.GRU have no batching rule."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from lrctl.batched_env import BatchedLRControlEnv, shared_key
from lrctl.tasks import FAMILIES, RunSpec
from tests.test_batched_env import assert_same_episode, batched_rollout, episode_of, single_run

# The transformers are held to the single env under momentum and Adam: under RMSprop or
# Nesterov at these LRs the last-bit differences of vmap's attention kernels grow past the
# tolerance within the first block (measured: 5e-4 on the gradient-norm spread feature), which
# says nothing about the batched path computing the same function.
VMAP_FAMILIES = [
    ("digits_resmlp", "adam"),
    ("spiral_resmlp", "momentum"),
    ("char_transformer", "adamw"),
    ("postln_transformer", "momentum"),
    ("lm_transformer", "adam"),
]
NO_FASTER = ("char_transformer", "postln_transformer", "lm_transformer")
"""Batched exactly, but no faster than single runs: not `batchable`."""
NOT_BATCHABLE = (
    "texture_bn_cnn", "friedman2_bn_mlp", "synth_dropout_mlp", "hastie_dropout_mlp",
    "char_rnn", "char_lstm", "char_gru",
)  # fmt: skip


def member_specs(family: str, optimizer: str) -> list[RunSpec]:
    """tests/test_batched_env.py's three members (other seeds, LRs and horizons: one ends
    early, one has a short last block), at the family's smallest sizes and batch 8."""
    space = FAMILIES[family]().arch_space()
    base = FAMILIES[family]().spec(
        optimizer, steps=60, batch_size=8, **{k: min(v) for k, v in space.items()}
    )
    return [
        replace(base, seed=1, steps=55),
        replace(base, seed=2, steps=23, base_lr=base.base_lr * 3.0),
        replace(base, seed=3, steps=40, base_lr=base.base_lr * 0.3),
    ]


@pytest.mark.parametrize(("family", "optimizer"), VMAP_FAMILIES)
def test_vmap_members_match_the_single_env_through_an_auto_reset(
    family: str, optimizer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert FAMILIES[family].batchable == (family not in NO_FASTER)
    monkeypatch.setattr(FAMILIES[family], "batchable", True)
    specs = member_specs(family, optimizer)
    actions = np.random.default_rng(0).uniform(-1, 1, (7, 3, 1)).astype(np.float32)
    env = BatchedLRControlEnv(3, redraw_after=0, seed=5)
    env.set_options([{"spec": s} for s in specs])
    rollout = batched_rollout(env, actions)
    for m, spec in enumerate(specs):
        assert_same_episode(single_run(spec, actions[:, m]), episode_of(rollout, m, 0))
    # Member 1 (23 steps) ended at its 2nd decision and restarted on a fresh draw.
    assert rollout["dones"][1].tolist() == [False, True, False]
    new = env.get_attr("run_spec", 1)[0]
    assert shared_key(new) == shared_key(specs[0]) and new.seed != specs[1].seed
    assert_same_episode(single_run(new, actions[2:, 1]), episode_of(rollout, 1, 2))


def test_the_rest_is_not_batchable() -> None:
    assert not any(FAMILIES[name].batchable for name in (*NOT_BATCHABLE, *NO_FASTER))
    batchable = {name for name, cls in FAMILIES.items() if cls.batchable}
    assert {f for f, _ in VMAP_FAMILIES} - set(NO_FASTER) <= batchable
