"""The task families: small real problems on offline data, plus one procedural problem.

| family               | data                          | model                     | suite |
| -------------------- | ----------------------------- | ------------------------- | ----- |
| digits_mlp           | sklearn digits (8x8)          | ReLU MLP                  | train |
| breast_cancer_logreg | sklearn breast cancer         | logistic regression       | train |
| diabetes_mlp         | sklearn diabetes (regression) | ReLU MLP, MSE             | train |
| char_mlp             | stdlib source, module set A   | embedding + MLP next-char | train |
| noisy_quadratic      | generated                     | ill-conditioned quadratic | train |
| digits_cnn           | sklearn digits (8x8)          | two-layer CNN             | eval  |
| wine_mlp             | sklearn wine                  | tanh MLP                  | eval  |
| char_gru             | stdlib source, module set B   | GRU next-char             | eval  |

Added with the v2 suites (envs/README.md has the full table with regimes and horizons):

| family               | data                              | model                          | suite |
| -------------------- | --------------------------------- | ------------------------------ | ----- |
| teacher_mlp          | generated teacher, 200k rows      | ReLU MLP, 10 classes           | train |
| friedman_mlp         | make_friedman1, 200k rows         | tanh MLP regression (MSE)      | train |
| texture_bn_cnn       | generated 12x12 textures, 60k     | CNN + BatchNorm, weight decay  | train |
| synth_dropout_mlp    | make_classification, 2.5k rows    | MLP + dropout, weight decay    | train |
| char_transformer     | stdlib source, module set A       | causal transformer (pre-LN)    | train |
| char_rnn             | stdlib source, module set A       | tanh RNN next-char             | train |
| digits_resmlp        | sklearn digits                    | residual MLP + LayerNorm       | train |
| hastie_dropout_mlp   | make_hastie_10_2, 6k rows         | MLP + dropout, weight decay    | val   |
| char_lstm            | stdlib source, module set C       | LSTM next-char                 | val   |
| friedman2_bn_mlp     | make_friedman2, 200k rows         | MLP + BatchNorm regression     | val   |
| postln_transformer   | stdlib source, module set C       | causal transformer (post-LN)   | val   |
| lm_transformer       | stdlib source, module set D (1MB) | causal transformer (pre-LN)    | eval  |
| spiral_resmlp        | three noisy spirals, 50k rows     | residual MLP + LayerNorm       | eval  |
| teacher_regression   | generated teacher, 200k rows      | ReLU MLP regression (MSE)      | eval  |
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lrctl.tasks.base import LossFn, RunSpec, Split, Task, TaskFamily
from lrctl.tasks.data import (
    SPLIT_SEED,
    TEXTURE_CLASSES,
    TEXTURE_SIZE,
    VOCAB_SIZE,
    char_windows,
    synthetic,
    tabular,
    teacher,
    textures,
)


def mlp(n_in: int, width: int, depth: int, n_out: int, act: type[nn.Module] = nn.ReLU) -> nn.Module:
    """`depth` hidden layers of `width` units, then a linear head."""
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(n_in if i == 0 else width, width), act()]
    layers.append(nn.Linear(width if depth else n_in, n_out))
    return nn.Sequential(*layers)


class _Tabular(TaskFamily):
    """A width x depth network on fixed data splits, cross-entropy or MSE: the tabular, large-data
    and residual families differ only in their data (`splits`), network (`network`) and
    `n_classes`, so each states those and nothing else."""

    dataset: str
    n_classes: int  # 0 for regression
    act: type[nn.Module] = nn.ReLU

    def splits(self) -> tuple[Split, Split, Split]:
        """Train, val and test splits (default: the sklearn data set `dataset`)."""
        return tabular(self.dataset)

    def network(self, n_in: int, width: int, depth: int, n_out: int) -> nn.Module:
        """The model of one run (default: an MLP with activation `act`)."""
        return mlp(n_in, width, depth, n_out, self.act)

    def build(self, spec: RunSpec) -> Task:
        splits = self.splits()
        n_in = splits[0].x.shape[1]
        width, depth = spec.arch.get("width", 0), spec.arch.get("depth", 0)
        n_out = self.n_classes or 1
        classification = self.n_classes > 0
        return _task(
            self, spec, lambda: self.network(n_in, width, depth, n_out), splits,
            F.cross_entropy if classification else F.mse_loss, classification,
        )  # fmt: skip


class DigitsMLP(_Tabular):
    name = "digits_mlp"
    batchable = True
    description = "sklearn digits, ReLU MLP, cross-entropy"
    dataset, n_classes = "digits", 10
    reference_lrs = {
        "sgd": 1.0, "momentum": 0.03, "nesterov": 0.03, "adagrad": 0.03,
        "rmsprop": 1e-3, "adam": 3e-3, "adamw": 3e-3,
    }  # fmt: skip


class BreastCancerLogReg(_Tabular):
    name = "breast_cancer_logreg"
    batchable = True
    description = "sklearn breast cancer, logistic regression (a linear layer), cross-entropy"
    dataset, n_classes = "breast_cancer", 2
    reference_lrs = {
        "sgd": 0.3, "momentum": 0.03, "nesterov": 0.03, "adagrad": 0.1,
        "rmsprop": 0.01, "adam": 0.01, "adamw": 0.3,
    }  # fmt: skip

    def arch_space(self) -> dict[str, tuple[int, ...]]:
        return {}  # linear model: depth 0, nothing to vary but the optimisation settings


class DiabetesMLP(_Tabular):
    name = "diabetes_mlp"
    batchable = True
    description = "sklearn diabetes, ReLU MLP regression on a standardised target, MSE"
    dataset, n_classes = "diabetes", 0
    reference_lrs = {
        "sgd": 0.01, "momentum": 1e-3, "nesterov": 1e-3, "adagrad": 3e-3,
        "rmsprop": 3e-4, "adam": 3e-4, "adamw": 3e-4,
    }  # fmt: skip


class WineMLP(_Tabular):
    name = "wine_mlp"
    batchable = True
    description = "sklearn wine, tanh MLP, cross-entropy (held out: other data, other activation)"
    dataset, n_classes = "wine", 3
    act = nn.Tanh
    default_depths = (1, 2)
    reference_lrs = {
        "sgd": 1.0, "momentum": 0.1, "nesterov": 0.1, "adagrad": 0.03,
        "rmsprop": 3e-3, "adam": 0.01, "adamw": 0.01,
    }  # fmt: skip


class _DigitsConv(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, 2 * channels, 3, padding=1)
        self.head = nn.Linear(2 * channels * 16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv1(x.view(-1, 1, 8, 8)))
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        return self.head(h.flatten(1))


class DigitsCNN(TaskFamily):
    name = "digits_cnn"
    batchable = True
    description = (
        "sklearn digits as 8x8 images, two conv layers + linear head (held out: other architecture)"
    )
    default_widths = (4, 8, 16)
    reference_lrs = {
        "sgd": 0.3, "momentum": 0.01, "nesterov": 0.03, "adagrad": 0.03,
        "rmsprop": 3e-3, "adam": 3e-3, "adamw": 3e-3,
    }  # fmt: skip

    def arch_space(self) -> dict[str, tuple[int, ...]]:
        return {"width": self.config.widths or self.default_widths}

    def build(self, spec: RunSpec) -> Task:
        train, val, test = tabular("digits")
        channels = spec.arch["width"]
        return Task(
            spec.describe(), self.name, lambda: _DigitsConv(channels), train, val, test,
            F.cross_entropy, spec.batch_size, True,
        )  # fmt: skip


class _CharMLP(nn.Module):
    def __init__(self, context: int, width: int, depth: int, embed: int = 16) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB_SIZE, embed)
        self.body = mlp(context * embed, width, depth, VOCAB_SIZE, nn.Tanh)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.embed(x).flatten(1))


def _last_char_ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of predicting the character after the window (the last target)."""
    return F.cross_entropy(logits, y[:, -1])


class CharMLP(TaskFamily):
    name = "char_mlp"
    batchable = True
    description = "next character of Python stdlib source (module set A), embedding + tanh MLP"
    context = 16
    default_widths = (64, 128, 256)
    default_depths = (1, 2)
    reference_lrs = {
        "sgd": 1.0, "momentum": 0.1, "nesterov": 0.1, "adagrad": 0.03,
        "rmsprop": 3e-3, "adam": 3e-3, "adamw": 3e-3,
    }  # fmt: skip

    def build(self, spec: RunSpec) -> Task:
        train, val, test = char_windows("train", self.context)
        w, d = spec.arch["width"], spec.arch["depth"]
        return Task(
            spec.describe(), self.name, lambda: _CharMLP(self.context, w, d), train, val, test,
            _last_char_ce, spec.batch_size, True,
        )  # fmt: skip


class _CharGRU(nn.Module):
    def __init__(self, hidden: int, embed: int = 32) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB_SIZE, embed)
        self.gru = nn.GRU(embed, hidden, batch_first=True)
        self.head = nn.Linear(hidden, VOCAB_SIZE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(self.embed(x))
        return self.head(out)


def _sequence_ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.flatten(0, 1), y.flatten())


class CharGRU(TaskFamily):
    name = "char_gru"
    description = "next character of Python stdlib source (module set B), GRU (held out: other data and architecture)"
    context = 32
    default_widths = (32, 64, 128)
    reference_lrs = {
        "sgd": 3.0, "momentum": 1.0, "nesterov": 1.0, "adagrad": 0.1,
        "rmsprop": 0.01, "adam": 0.01, "adamw": 0.01,
    }  # fmt: skip

    def arch_space(self) -> dict[str, tuple[int, ...]]:
        return {"width": self.config.widths or self.default_widths}

    def build(self, spec: RunSpec) -> Task:
        train, val, test = char_windows("eval", self.context, n_val=256, n_test=512)
        hidden = spec.arch["width"]
        return Task(
            spec.describe(), self.name, lambda: _CharGRU(hidden), train, val, test,
            _sequence_ce, spec.batch_size, True,
        )  # fmt: skip


class _Quadratic(nn.Module):
    """Per-example loss 0.5 * sum_i h_i (w_i - x_i)^2 with x ~ N(0, noise^2 / h_i)."""

    def __init__(self, curvature: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("h", curvature)
        self.w = nn.Parameter(torch.randn(len(curvature)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((self.w - x).pow(2) * self.h).sum(-1)


def _mean_loss(per_example: torch.Tensor, _y: torch.Tensor) -> torch.Tensor:
    return per_example.mean()


class NoisyQuadratic(TaskFamily):
    """The noisy quadratic model (Zhang et al. 2019): curvatures log-uniform over two decades,
    minibatch noise whose variance scales as 1/h, so the loss has a noise floor and the best LR
    schedule decays."""

    name = "noisy_quadratic"
    batchable = True
    description = "procedural ill-conditioned quadratic with minibatch gradient noise"
    default_widths = (10, 100, 1000)  # dimension
    default_depths = (1,)
    reference_lrs = {
        "sgd": 1.0, "momentum": 0.1, "nesterov": 0.1, "adagrad": 0.3,
        "rmsprop": 0.03, "adam": 0.03, "adamw": 0.03,
    }  # fmt: skip

    def arch_space(self) -> dict[str, tuple[int, ...]]:
        return {"width": self.config.widths or self.default_widths}

    def build(self, spec: RunSpec) -> Task:
        dim = spec.arch["width"]
        rng = np.random.default_rng(SPLIT_SEED + dim)
        h = torch.from_numpy(np.exp(rng.uniform(math.log(0.01), 0.0, dim)).astype(np.float32))
        noise = 0.3

        def draw(n: int) -> Split:
            x = torch.from_numpy(rng.standard_normal((n, dim)).astype(np.float32))
            x = x * (noise / h.sqrt())
            return Split(x, torch.zeros(n))

        train, val, test = draw(4096), draw(512), draw(512)
        return Task(
            spec.describe(), self.name, lambda: _Quadratic(h.clone()), train, val, test,
            _mean_loss, spec.batch_size, False,
        )  # fmt: skip


# --- The v2 families: normalisation, residual blocks, dropout, weight decay, attention,
# recurrence, and the large-data regime (lrctl.tasks.data). ---------------------------------


class _L2Gradient(torch.autograd.Function):
    """Identity on a model's output; its backward adds `decay * w` to the gradient of every
    parameter w: L2 weight decay as torch's SGD / Adam `weight_decay` applies it (coupled, in
    the gradient), computed once per backward pass of the training loss."""

    generate_vmap_rule = True  # plain tensor ops: torch.func can vmap it

    @staticmethod
    def forward(decay: float, out: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        return out.clone()

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.decay = inputs[0]
        ctx.save_for_backward(*inputs[2:])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return (None, grad, *(ctx.decay * p for p in ctx.saved_tensors))


class WeightDecay(nn.Module):
    """`module` with L2 weight decay `decay` on all its parameters while training.

    Weight decay belongs to the task here (a family's recipe, like its dropout), so it holds
    with every optimizer the env samples. The validation and test losses are the plain data
    losses (no penalty); `.module` is the wrapped model."""

    def __init__(self, module: nn.Module, decay: float) -> None:
        super().__init__()
        self.module = module
        self.decay = float(decay)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.module(x)
        if self.training and self.decay and torch.is_grad_enabled():
            params = [p for p in self.module.parameters() if p.requires_grad]
            out = _L2Gradient.apply(self.decay, out, *params)
        return out


class SeededDropout(nn.Module):
    """Dropout whose masks come from its own generator, seeded from the global RNG when the
    module is built. Runs build their model under the run's seed, so the masks are a function
    of that seed alone, whatever else the process drew before (nn.Dropout draws from the
    global RNG, which no run seeds: the same seed would give other masks)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = float(p)
        self.seed = int(torch.randint(0, 2**62, ()).item())
        self._generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self._generator is None or self._generator.device != x.device:
            self._generator = torch.Generator(device=x.device).manual_seed(self.seed)
        keep = torch.rand(x.shape, generator=self._generator, device=x.device) >= self.p
        return x * keep / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def _task(
    family: TaskFamily,
    spec: RunSpec,
    model_fn: Callable[[], nn.Module],
    splits: tuple[Split, ...],
    loss_fn: LossFn,
    classification: bool,
) -> Task:
    """The task of `spec`: the family's model factory on fixed data splits (train, val, test)."""
    train, val, test = splits
    return Task(
        spec.describe(), family.name, model_fn, train, val, test, loss_fn, spec.batch_size,
        classification,
    )  # fmt: skip


class TeacherMLP(_Tabular):
    """Teacher-student classification, large data (`data.teacher('teacher_cls')`)."""

    name = "teacher_mlp"
    batchable = True
    description = "generated teacher-student classification (200k rows, sampled labels), ReLU MLP"
    default_widths = (64, 128, 256)
    default_depths = (1, 2, 3)
    reference_lrs = {
        "sgd": 0.1, "momentum": 0.01, "nesterov": 0.01, "adagrad": 0.01,
        "rmsprop": 0.0003, "adam": 0.001, "adamw": 0.001,
    }  # fmt: skip

    n_classes = 10

    def splits(self) -> tuple[Split, Split, Split]:
        return teacher("teacher_cls")


class TeacherRegression(_Tabular):
    """Teacher-student regression on a stream-sized split (`data.teacher('teacher_reg')`)."""

    name = "teacher_regression"
    batchable = True
    description = "generated teacher-student regression (200k rows, noisy target), ReLU MLP, MSE"
    default_widths = (32, 64, 128)
    default_depths = (1, 2)
    reference_lrs = {
        "sgd": 0.1, "momentum": 0.03, "nesterov": 0.03, "adagrad": 0.03,
        "rmsprop": 0.003, "adam": 0.003, "adamw": 0.003,
    }  # fmt: skip

    n_classes = 0

    def splits(self) -> tuple[Split, Split, Split]:
        return teacher("teacher_reg")


class FriedmanMLP(_Tabular):
    """Friedman #1 regression, large data (`data.synthetic('friedman1')`)."""

    name = "friedman_mlp"
    batchable = True
    description = "make_friedman1 regression (200k rows), tanh MLP, MSE"
    default_widths = (32, 64, 128)
    default_depths = (1, 2)
    reference_lrs = {
        "sgd": 0.1, "momentum": 0.03, "nesterov": 0.03, "adagrad": 0.03,
        "rmsprop": 0.003, "adam": 0.003, "adamw": 0.003,
    }  # fmt: skip

    n_classes, act = 0, nn.Tanh

    def splits(self) -> tuple[Split, Split, Split]:
        return synthetic("friedman1")


class _DropoutMLP(TaskFamily):
    """A ReLU MLP with dropout after each hidden layer and L2 weight decay, on a small set."""

    dataset: ClassVar[str]
    n_classes: ClassVar[int]
    weight_decay: ClassVar[float]
    dropouts: ClassVar[tuple[int, ...]]
    """Dropout probabilities to sample, in percent (the `dropout` size field)."""

    def arch_space(self) -> dict[str, tuple[int, ...]]:
        return {**super().arch_space(), "dropout": self.dropouts}

    def build(self, spec: RunSpec) -> Task:
        splits = synthetic(self.dataset)
        w, d, p = spec.arch["width"], spec.arch["depth"], spec.arch["dropout"] / 100
        n_in, n_out, decay = splits[0].x.shape[1], self.n_classes, self.weight_decay

        def model() -> nn.Module:
            layers: list[nn.Module] = []
            for i in range(d):
                layers += [nn.Linear(n_in if i == 0 else w, w), nn.ReLU(), SeededDropout(p)]
            layers.append(nn.Linear(w, n_out))
            return WeightDecay(nn.Sequential(*layers), decay)

        return _task(self, spec, model, splits, F.cross_entropy, True)


class SynthDropoutMLP(_DropoutMLP):
    name = "synth_dropout_mlp"
    description = (
        "make_classification (2.5k rows, 5 classes, 5% flipped labels), ReLU MLP with dropout "
        "and L2 weight decay 1e-3"
    )
    dataset, n_classes, weight_decay = "classification", 5, 1e-3
    dropouts = (10, 20, 40)
    default_widths = (64, 128, 256)
    default_depths = (1, 2)
    reference_lrs = {
        "sgd": 0.3, "momentum": 0.03, "nesterov": 0.03, "adagrad": 0.03,
        "rmsprop": 0.003, "adam": 0.003, "adamw": 0.003,
    }  # fmt: skip


class HastieDropoutMLP(_DropoutMLP):
    name = "hastie_dropout_mlp"
    description = (
        "make_hastie_10_2 (6k rows, 2 classes), ReLU MLP with dropout and L2 weight decay 1e-4"
    )
    dataset, n_classes, weight_decay = "hastie", 2, 1e-4
    dropouts = (10, 30)
    default_widths = (64, 128)
    default_depths = (2, 3)
    reference_lrs = {
        "sgd": 0.3, "momentum": 0.03, "nesterov": 0.03, "adagrad": 0.03,
        "rmsprop": 0.003, "adam": 0.001, "adamw": 0.001,
    }  # fmt: skip


class _ResidualMLP(nn.Module):
    """Linear in; `depth` pre-LayerNorm residual blocks h + W2 relu(W1 LN(h)); LayerNorm; head."""

    def __init__(self, n_in: int, width: int, depth: int, n_out: int) -> None:
        super().__init__()
        self.inp = nn.Linear(n_in, width)
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.LayerNorm(width), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width)
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for block in self.blocks:
            h = h + block(h)
        return self.head(self.norm(h))


class DigitsResMLP(_Tabular):
    name = "digits_resmlp"
    batchable = True
    description = "sklearn digits, residual MLP with LayerNorm, cross-entropy"
    default_widths = (32, 64, 128)
    default_depths = (1, 2, 3)
    reference_lrs = {
        "sgd": 1, "momentum": 0.1, "nesterov": 0.1, "adagrad": 0.03,
        "rmsprop": 0.003, "adam": 0.01, "adamw": 0.003,
    }  # fmt: skip

    dataset, n_classes = "digits", 10

    def network(self, n_in: int, width: int, depth: int, n_out: int) -> nn.Module:
        return _ResidualMLP(n_in, width, depth, n_out)


class SpiralResMLP(_Tabular):
    name = "spiral_resmlp"
    batchable = True
    description = "three noisy spiral arms (50k points, 2 inputs), residual MLP with LayerNorm"
    default_widths = (32, 64)
    default_depths = (2, 3, 4)
    reference_lrs = {
        "sgd": 0.1, "momentum": 0.003, "nesterov": 0.03, "adagrad": 0.01,
        "rmsprop": 0.0001, "adam": 0.0001, "adamw": 0.0001,
    }  # fmt: skip

    n_classes = 3

    def splits(self) -> tuple[Split, Split, Split]:
        return synthetic("spirals")

    def network(self, n_in: int, width: int, depth: int, n_out: int) -> nn.Module:
        return _ResidualMLP(n_in, width, depth, n_out)


class _BatchNormMLP(nn.Sequential):
    """`depth` blocks Linear -> BatchNorm1d -> ReLU, then a linear head."""

    def __init__(self, n_in: int, width: int, depth: int, n_out: int) -> None:
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [
                nn.Linear(n_in if i == 0 else width, width),
                nn.BatchNorm1d(width),
                nn.ReLU(),
            ]
        layers.append(nn.Linear(width if depth else n_in, n_out))
        super().__init__(*layers)


class Friedman2BNMLP(_Tabular):
    name = "friedman2_bn_mlp"
    description = "make_friedman2 regression (200k rows, low noise), MLP with BatchNorm, MSE"
    default_widths = (32, 64, 128)
    default_depths = (1, 2, 3)
    reference_lrs = {
        "sgd": 0.01, "momentum": 0.001, "nesterov": 0.003, "adagrad": 0.03,
        "rmsprop": 0.0003, "adam": 0.003, "adamw": 0.003,
    }  # fmt: skip

    n_classes = 0

    def splits(self) -> tuple[Split, Split, Split]:
        return synthetic("friedman2")

    def network(self, n_in: int, width: int, depth: int, n_out: int) -> nn.Module:
        return _BatchNormMLP(n_in, width, depth, n_out)


class _TextureCNN(nn.Module):
    """Two 3x3 conv layers with BatchNorm (max-pool between), global average pool, linear."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        c = channels
        self.features = nn.Sequential(
            nn.Conv2d(1, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c, 2 * c, 3, padding=1, bias=False), nn.BatchNorm2d(2 * c), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(2 * c, TEXTURE_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x.view(-1, 1, TEXTURE_SIZE, TEXTURE_SIZE))
        return self.head(h.mean((2, 3)))


class TextureBNCNN(TaskFamily):
    name = "texture_bn_cnn"
    description = (
        "generated 12x12 oriented textures in noise (60k images, 8 classes), CNN with "
        "BatchNorm and L2 weight decay 5e-4"
    )
    weight_decay = 5e-4
    default_widths = (4, 8, 16)
    reference_lrs = {
        "sgd": 3, "momentum": 0.3, "nesterov": 0.1, "adagrad": 0.1,
        "rmsprop": 0.03, "adam": 0.1, "adamw": 0.03,
    }  # fmt: skip

    def arch_space(self) -> dict[str, tuple[int, ...]]:
        return {"width": self.config.widths or self.default_widths}

    def build(self, spec: RunSpec) -> Task:
        c, decay = spec.arch["width"], self.weight_decay
        return _task(
            self, spec, lambda: WeightDecay(_TextureCNN(c), decay), textures(), F.cross_entropy,
            True,
        )  # fmt: skip


class _CausalSelfAttention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.proj = nn.Linear(width, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        # Attention written out (not F.scaled_dot_product_attention, which torch.vmap runs
        # member by member): a population batches these matmuls like any other.
        scores = (q @ k.transpose(-2, -1)) * (d // self.heads) ** -0.5
        future = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
        y = scores.masked_fill(future, float("-inf")).softmax(-1) @ v
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class _TransformerBlock(nn.Module):
    """Attention and a 4x GELU MLP, each a residual branch; LayerNorm before each branch
    (pre-LN, GPT-2 / nanoGPT) or after each sum (post-LN, the original Transformer)."""

    def __init__(self, width: int, heads: int, pre_norm: bool) -> None:
        super().__init__()
        self.pre_norm = pre_norm
        self.norm1 = nn.LayerNorm(width, bias=False)
        self.attn = _CausalSelfAttention(width, heads)
        self.norm2 = nn.LayerNorm(width, bias=False)
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width, bias=False),
            nn.GELU(),
            nn.Linear(4 * width, width, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre_norm:
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))
        x = self.norm1(x + self.attn(x))
        return self.norm2(x + self.mlp(x))


class _CharTransformer(nn.Module):
    """A small causal transformer language model over characters: token and learned position
    embeddings, `depth` blocks of `heads` heads, a final LayerNorm (pre-LN) and a linear head."""

    def __init__(self, context: int, width: int, depth: int, heads: int, pre_norm: bool) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB_SIZE, width)
        self.pos = nn.Parameter(0.02 * torch.randn(context, width))
        self.blocks = nn.Sequential(
            *(_TransformerBlock(width, heads, pre_norm) for _ in range(depth))
        )
        self.norm = nn.LayerNorm(width, bias=False) if pre_norm else nn.Identity()
        self.head = nn.Linear(width, VOCAB_SIZE, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x) + self.pos[: x.shape[-1]]
        return self.head(self.norm(self.blocks(h)))


class _RecurrentLM(nn.Module):
    """Embedding, one recurrent layer (nn.RNN, nn.LSTM or nn.GRU), linear head per position."""

    def __init__(self, kind: type[nn.RNNBase], hidden: int, embed: int = 32) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB_SIZE, embed)
        self.rnn = kind(embed, hidden, batch_first=True)
        self.head = nn.Linear(hidden, VOCAB_SIZE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.embed(x))
        return self.head(out)


class _CharLM(TaskFamily):
    """Next-character prediction on one stdlib text set (`data.char_windows`), every position
    of a window scored (sequence cross-entropy)."""

    text: ClassVar[str]
    context: ClassVar[int] = 32
    n_val: ClassVar[int] = 256

    def model(self, spec: RunSpec) -> nn.Module:
        raise NotImplementedError

    def build(self, spec: RunSpec) -> Task:
        splits = char_windows(self.text, self.context, n_val=self.n_val, n_test=1024)
        return _task(self, spec, lambda: self.model(spec), splits, _sequence_ce, True)


class _TransformerLM(_CharLM):
    # Not batchable by choice: a population trains these models exactly like single runs
    # (tests/test_batched_families.py), but attention under torch.vmap runs no faster than
    # one run per core (benchmarks/family_throughput.py: N = 16 at 0.9-1.1x one env), so
    # single envs in parallel processes train them faster.
    batchable = False
    heads: ClassVar[int] = 2
    pre_norm: ClassVar[bool] = True
    default_widths = (32, 48)
    default_depths = (1, 2)

    def model(self, spec: RunSpec) -> nn.Module:
        w, d = spec.arch["width"], spec.arch["depth"]
        return _CharTransformer(self.context, w, d, self.heads, self.pre_norm)


class CharTransformer(_TransformerLM):
    name = "char_transformer"
    description = "next character of stdlib source (module set A), causal transformer (pre-LN)"
    text = "train"
    reference_lrs = {
        "sgd": 1, "momentum": 0.3, "nesterov": 0.3, "adagrad": 0.1,
        "rmsprop": 0.01, "adam": 0.01, "adamw": 0.01,
    }  # fmt: skip


class PostLNTransformer(_TransformerLM):
    name = "postln_transformer"
    description = "next character of stdlib source (module set C), causal transformer (post-LN)"
    text = "val"
    pre_norm = False
    reference_lrs = {
        "sgd": 1, "momentum": 0.1, "nesterov": 0.1, "adagrad": 0.1,
        "rmsprop": 0.01, "adam": 0.01, "adamw": 0.01,
    }  # fmt: skip


class LMTransformer(_TransformerLM):
    name = "lm_transformer"
    description = (
        "next character of stdlib source (module set D, about 1 MB: a long run sees it about "
        "once), causal transformer (pre-LN)"
    )
    text = "eval_lm"
    reference_lrs = {
        "sgd": 1, "momentum": 0.1, "nesterov": 0.3, "adagrad": 0.1,
        "rmsprop": 0.01, "adam": 0.01, "adamw": 0.01,
    }  # fmt: skip


class _RecurrentCharLM(_CharLM):
    kind: ClassVar[type[nn.RNNBase]]
    default_widths = (32, 64, 128)

    def arch_space(self) -> dict[str, tuple[int, ...]]:
        return {"width": self.config.widths or self.default_widths}

    def model(self, spec: RunSpec) -> nn.Module:
        return _RecurrentLM(self.kind, spec.arch["width"])


class CharRNN(_RecurrentCharLM):
    name = "char_rnn"
    description = "next character of stdlib source (module set A), tanh RNN"
    text = "train"
    kind = nn.RNN
    reference_lrs = {
        "sgd": 1, "momentum": 0.3, "nesterov": 0.3, "adagrad": 0.1,
        "rmsprop": 0.01, "adam": 0.01, "adamw": 0.01,
    }  # fmt: skip


class CharLSTM(_RecurrentCharLM):
    name = "char_lstm"
    description = "next character of stdlib source (module set C), LSTM"
    text = "val"
    kind = nn.LSTM
    reference_lrs = {
        "sgd": 10, "momentum": 1, "nesterov": 1, "adagrad": 0.1,
        "rmsprop": 0.01, "adam": 0.01, "adamw": 0.03,
    }  # fmt: skip


FAMILIES: dict[str, type[TaskFamily]] = {
    cls.name: cls
    for cls in (
        DigitsMLP, BreastCancerLogReg, DiabetesMLP, CharMLP, NoisyQuadratic,
        DigitsCNN, WineMLP, CharGRU,
        TeacherMLP, FriedmanMLP, TextureBNCNN, SynthDropoutMLP, CharTransformer, CharRNN,
        DigitsResMLP,
        HastieDropoutMLP, CharLSTM, Friedman2BNMLP, PostLNTransformer,
        LMTransformer, SpiralResMLP, TeacherRegression,
    )
}  # fmt: skip

WARMUP_FAMILIES: frozenset[str] = frozenset(
    name for name, cls in FAMILIES.items() if issubclass(cls, _TransformerLM)
)
"""Families whose users usually run warm-up + cosine (the transformers): the benchmark adds
that baseline wherever one of them is run."""
