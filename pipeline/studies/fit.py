"""Fits across a study's runs."""

from __future__ import annotations

import numpy as np

PAPER_PLATEAU_FIT = (0.43, 0.81)  # plateau length = 0.43 N^0.81 (Zucchet et al., 2025)


def fit_power_law(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """y = a x^b fitted by least squares in log-log space: (a, b, R^2 in log space)."""
    lx, ly = np.log(x), np.log(y)
    b, log_a = np.polyfit(lx, ly, 1)
    residual = ly - (log_a + b * lx)
    r2 = 1 - (residual ** 2).sum() / ((ly - ly.mean()) ** 2).sum()
    return float(np.exp(log_a)), float(b), float(r2)


def resampled_means(groups: dict[float, list[float]], draws: int, seed: int) -> tuple[np.ndarray, ...]:
    """The sorted x of `groups` (x: the values of its runs, one per seed), the mean of each x's runs, and
    `draws` means of resamples of each x's runs with replacement ([draws, x])."""
    xs = sorted(groups)
    rng = np.random.default_rng(seed)
    resampled = np.stack([rng.choice(groups[x], size=(draws, len(groups[x]))).mean(axis=1) for x in xs], axis=1)
    return np.array(xs, dtype=float), np.array([np.mean(groups[x]) for x in xs]), resampled


def fit_with_interval(groups: dict[float, list[float]], draws: int = 2000, seed: int = 0) -> dict:
    """The power law through the means of `groups` (x: the values of its runs, one per seed), with a 95%
    interval of the exponent from resampling each x's runs with replacement."""
    xs, means, resampled = resampled_means(groups, draws, seed)
    a, b, r2 = fit_power_law(xs, means)
    lx, ly = np.log(xs), np.log(resampled)
    exponents = ((lx - lx.mean()) * (ly - ly.mean(axis=1, keepdims=True))).sum(axis=1) / ((lx - lx.mean()) ** 2).sum()
    return {"a": a, "b": b, "r2": r2, "b_low": float(np.percentile(exponents, 2.5)),
            "b_high": float(np.percentile(exponents, 97.5)), "x": xs.tolist(), "mean": means.tolist(),
            "runs": [len(groups[x]) for x in sorted(groups)]}


def fit_bits_per_parameter(groups: dict[float, list[float]], draws: int = 2000, seed: int = 0) -> dict:
    """Bits stored = k x parameters, fitted by least squares through the origin on the mean bits of each
    model size (groups: parameters -> bits of its runs, one per seed), with a 95% interval of k from
    resampling each size's runs with replacement."""
    params, means, resampled = resampled_means(groups, draws, seed)
    slopes = resampled @ params / (params @ params)
    return {"bits_per_parameter": float(means @ params / (params @ params)),
            "low": float(np.percentile(slopes, 2.5)), "high": float(np.percentile(slopes, 97.5)),
            "parameters": params.tolist(), "mean_bits": means.tolist(),
            "runs": [len(groups[p]) for p in sorted(groups)]}
