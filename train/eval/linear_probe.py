"""Linear probe as in the CLIP paper: logistic regression on frozen features, its L2
regularisation chosen on a validation split held out of the training set, then refit on
the whole training set and scored on the test set."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss

from wit.formats.errors import WitError


COARSE_GRID = tuple(10.0 ** e for e in range(-6, 7, 2))   # C = 1e-6, 1e-4, ..., 1e6
FINEST_STEP = 1 / 8                                         # decades: 8 steps per decade


@dataclass(frozen=True)
class ProbeResult:
    top1: float         # on the test set, after refitting on the whole training set
    C: float            # inverse L2 regularisation strength chosen on the validation split
    val_top1: float     # validation accuracy at that C


def stratified_split(labels: np.ndarray, fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices): `fraction` of each class (rounded, at least one
    when the class has two or more samples) held out, chosen by a seeded permutation."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        held = max(1, round(len(members) * fraction)) if len(members) > 1 else 0
        val.append(members[:held])
        train.append(members[held:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def fit(x: np.ndarray, y: np.ndarray, C: float) -> LogisticRegression:
    with warnings.catch_warnings():   # weak regularisation of separable data stops at max_iter
        warnings.simplefilter("ignore", ConvergenceWarning)
        return LogisticRegression(C=C, solver="lbfgs", max_iter=1000).fit(x, y)


def choose_C(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray) -> tuple[float, float]:
    """(C, validation accuracy): the coarse grid, then the interval around the best halved
    until 8 steps per decade (the paper's parametric binary search), C staying within the
    grid's range. Equal accuracies are told apart by the validation log-loss."""
    scores: dict[float, tuple[float, float]] = {}   # C -> (accuracy, -log-loss)

    def score(C: float) -> None:
        if C not in scores:
            model = fit(train_x, train_y, C)
            loss = log_loss(val_y, model.predict_proba(val_x), labels=model.classes_)
            scores[C] = (model.score(val_x, val_y), -loss)

    def best() -> float:
        return max(sorted(scores), key=scores.__getitem__)   # an exact tie goes to the smaller C

    for C in COARSE_GRID:
        score(C)
    step = math.log10(COARSE_GRID[1] / COARSE_GRID[0])
    while step > FINEST_STEP:
        step /= 2
        centre = best()
        for C in (centre * 10 ** -step, centre * 10 ** step):
            if COARSE_GRID[0] <= C <= COARSE_GRID[-1]:
                score(C)
    C = best()
    return C, scores[C][0]


def probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
          val_fraction: float = 0.2, seed: int = 0) -> ProbeResult:
    """Choose C on a stratified validation split of the training set, refit on all of it, test."""
    if len(np.unique(train_y)) < 2:
        raise WitError("the linear probe needs at least two classes with training images")
    fit_idx, val_idx = stratified_split(train_y, val_fraction, seed)
    if len(val_idx) == 0 or len(np.unique(train_y[fit_idx])) < 2:
        raise WitError("the linear probe's training set is too small to hold out a validation split "
                         "(needs classes with two or more images)")
    C, val_top1 = choose_C(train_x[fit_idx], train_y[fit_idx], train_x[val_idx], train_y[val_idx])
    return ProbeResult(float(fit(train_x, train_y, C).score(test_x, test_y)), C, float(val_top1))
