"""`lrctl train` with batched populations: how slots are split, populations mixed with single
envs in one ConcatVecEnv, the old path kept for old configs and `--no-batched`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor

from lrctl.batched_env import BatchedLRControlEnv
from lrctl.cli import main
from lrctl.features import OBS_DIM
from lrctl.ppo import TrainConfig, _slot_split, make_training_env, train
from lrctl.vec_concat import ConcatVecEnv
from tests.test_ppo import TINY_SUITE

MIXED_SUITE = (  # two families that batch, one that does not (GRU: no vmap rule)
    TINY_SUITE + '[[family]]\nname = "char_gru"\nsteps = [30, 40]\nwidths = [16]\n'
)


@pytest.fixture
def mixed_cfg(tmp_path: Path) -> TrainConfig:
    (tmp_path / "mixed.toml").write_text(MIXED_SUITE)
    return TrainConfig(
        suite=str(tmp_path / "mixed.toml"), n_envs=8, population=4, n_steps=16, batch_size=32,
        n_epochs=1, total_timesteps=128, checkpoint_every=64, eval_every=0,
    )  # fmt: skip


def test_slots_split_by_suite_weight_into_populations(mixed_cfg):
    sizes, batched, n_single, single = _slot_split(mixed_cfg)
    assert sizes == [3, 2] and n_single == 3  # weights 1:1:1 -> 8 slots = 5 batched + 3 single
    assert batched.family_names == ("breast_cancer_logreg", "noisy_quadratic")
    assert single.family_names == ("char_gru",)
    train_cfg = TrainConfig(suite="train_v1", n_envs=40, population=16)
    assert _slot_split(train_cfg)[0] == [14, 13, 13] and _slot_split(train_cfg)[2] == 0
    assert _slot_split(TrainConfig(n_envs=3, batched=False))[:3:2] == ([], 3)
    assert TrainConfig().resolved_n_envs() == 32 and TrainConfig().resolved_n_steps() == 32
    assert TrainConfig(batched=False).resolved_n_steps() == 512


def test_populations_and_single_envs_step_side_by_side(mixed_cfg):
    venv = make_training_env(mixed_cfg, subprocess=False)
    concat = venv.venv.venv
    assert isinstance(venv.venv, VecMonitor) and isinstance(concat, ConcatVecEnv)
    assert [type(p) for p in concat.parts] == [BatchedLRControlEnv] * 2 + [DummyVecEnv]
    obs = venv.reset()
    assert obs.shape == (8, OBS_DIM)
    for population in concat.parts[:2]:  # one family each, drawn from the batched part
        families = {s.family for s in population.get_attr("run_spec")}
        assert len(families) == 1 and families <= {"breast_cancer_logreg", "noisy_quadratic"}
    assert [e.run_spec.family for e in concat.parts[2].envs] == ["char_gru"] * 3
    assert len({s.seed for s in concat.get_attr("run_spec", range(5))}) == 5
    for _ in range(5):
        obs, rewards, _, infos = venv.step(np.zeros((8, 1), np.float32))
        assert obs.shape == (8, OBS_DIM) and np.isfinite(obs).all() and rewards.shape == (8,)
        assert [i["family"] == "char_gru" for i in infos] == [False] * 5 + [True] * 3
    assert concat.env_is_wrapped(VecMonitor, [0, 7]) == [False, False]
    venv.close()


def test_concat_vec_env_routes_seeds_and_attributes():
    def population() -> BatchedLRControlEnv:
        return BatchedLRControlEnv(2, families=["noisy_quadratic"])

    parts = [population(), population()]
    concat = ConcatVecEnv(parts)
    assert concat.num_envs == 4 and concat.offsets == [0, 2, 4]
    concat.seed(10)
    concat.reset()
    expected = []  # part p is seeded with 10 + its offset, as one VecEnv seeds slot i with 10 + i
    for seed in (10, 12):
        alone = population()
        alone.seed(seed)
        alone.reset()
        expected += [s.seed for s in alone.get_attr("run_spec")]
    assert [s.seed for s in concat.get_attr("run_spec")] == expected
    concat.set_attr("redraw_after", 3, indices=[3])
    assert (parts[0].redraw_after, parts[1].redraw_after) == (1, 3)
    assert concat.get_attr("lr", [1, 2]) == [
        parts[0].get_attr("lr", 1)[0],
        parts[1].get_attr("lr", 0)[0],
    ]


def test_mixed_training_runs_end_to_end(mixed_cfg, tmp_path):
    cfg = TrainConfig(**{**mixed_cfg.__dict__, "n_envs": 2, "population": 2})
    final = train(cfg, tmp_path / "run", progress_bar=False)
    assert json.loads((final / "state.json").read_text())["num_timesteps"] == 128


def test_old_run_configs_keep_the_subprocess_path_and_cli_flag(tmp_path):
    old = json.loads(TrainConfig().to_json())
    del old["batched"]
    old["version"] = 1  # the format before populations
    assert TrainConfig.from_dict(old).batched is False  # a run's config.json from before
    assert TrainConfig.from_dict({"total_timesteps": 64}).batched is True  # a user's partial one
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(
        json.dumps({"n_steps": 16, "batch_size": 16, "eval_every": 0, "checkpoint_every": 16})
    )
    run = tmp_path / "run"
    argv = ["train", "--config", str(cfg_path), "--run-dir", str(run), "--no-progress"]
    assert main([*argv, "--no-batched", "--n-envs", "1", "--timesteps", "16"]) == 0
    assert json.loads((run / "config.json").read_text())["batched"] is False
