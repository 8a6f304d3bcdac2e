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
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lrctl.tasks.base import RunSpec, Split, Task, TaskFamily
from lrctl.tasks.data import SPLIT_SEED, VOCAB_SIZE, char_windows, tabular


def mlp(n_in: int, width: int, depth: int, n_out: int, act: type[nn.Module] = nn.ReLU) -> nn.Module:
    """`depth` hidden layers of `width` units, then a linear head."""
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(n_in if i == 0 else width, width), act()]
    layers.append(nn.Linear(width if depth else n_in, n_out))
    return nn.Sequential(*layers)


class _Tabular(TaskFamily):
    dataset: str
    n_classes: int  # 0 for regression
    act: type[nn.Module] = nn.ReLU

    def build(self, spec: RunSpec) -> Task:
        train, val, test = tabular(self.dataset)
        n_in = train.x.shape[1]
        width, depth = spec.arch.get("width", 0), spec.arch.get("depth", 0)
        n_out = self.n_classes or 1
        classification = self.n_classes > 0
        return Task(
            name=spec.describe(),
            family=self.name,
            model_fn=lambda: mlp(n_in, width, depth, n_out, self.act),
            train=train,
            val=val,
            test=test,
            loss_fn=F.cross_entropy if classification else F.mse_loss,
            batch_size=spec.batch_size,
            classification=classification,
        )


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


FAMILIES: dict[str, type[TaskFamily]] = {
    cls.name: cls
    for cls in (
        DigitsMLP, BreastCancerLogReg, DiabetesMLP, CharMLP, NoisyQuadratic,
        DigitsCNN, WineMLP, CharGRU,
    )
}  # fmt: skip
