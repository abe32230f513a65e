"""Fits across a study's runs, with the interval of their parameter from the spread over seeds: the fit is
made once per seed (a seed's runs across x) and the seeds' parameters summarised (pipeline/studies/intervals)."""

from __future__ import annotations

import numpy as np

from .intervals import over_seeds

PAPER_PLATEAU_FIT = (0.43, 0.81)  # plateau length = 0.43 N^0.81 (Zucchet et al., 2025)

BySeed = dict  # seed -> {x: y}: one value per x of each seed's runs


def fit_power_law(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """y = a x^b fitted by least squares in log-log space: (a, b, R^2 in log space)."""
    lx, ly = np.log(x), np.log(y)
    b, log_a = np.polyfit(lx, ly, 1)
    residual = ly - (log_a + b * lx)
    r2 = 1 - (residual ** 2).sum() / ((ly - ly.mean()) ** 2).sum()
    return float(np.exp(log_a)), float(b), float(r2)


def means_over_seeds(by_seed: BySeed) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """The sorted x, the mean of each x over the seeds that reached it, and how many did."""
    xs = sorted({x for values in by_seed.values() for x in values})
    columns = [[values[x] for values in by_seed.values() if x in values] for x in xs]
    return np.array(xs, dtype=float), np.array([np.mean(c) for c in columns]), [len(c) for c in columns]


def fit_with_interval(by_seed: BySeed) -> dict:
    """The power law through the means over seeds at each x, and the exponent fitted seed by seed (seeds
    reaching two x or more) with its 95% t-interval over those seeds (none below three)."""
    xs, means, runs = means_over_seeds(by_seed)
    a, b, r2 = fit_power_law(xs, means)
    exponents = {str(seed): fit_power_law(*map(np.array, zip(*sorted(values.items()))))[1]
                 for seed, values in by_seed.items() if len(values) >= 2}
    interval = over_seeds(list(exponents.values())) if exponents else None
    return {"a": a, "b": b, "r2": r2, "b_low": interval.low if interval else None,
            "b_high": interval.high if interval else None, "seed_exponents": exponents,
            "interval": interval.method if interval else "no seed reaches two x", "x": xs.tolist(),
            "mean": means.tolist(), "runs": runs}


def fit_bits_per_parameter(by_seed: BySeed) -> dict:
    """Bits stored = k x parameters, fitted by least squares through the origin on the mean bits of each
    model size, with k fitted seed by seed and its 95% t-interval over seeds (none below three)."""
    params, means, runs = means_over_seeds(by_seed)
    slopes = []
    for values in by_seed.values():
        p, bits = (np.array(v, dtype=float) for v in zip(*sorted(values.items())))
        slopes.append(float(bits @ p / (p @ p)))
    interval = over_seeds(slopes)
    return {"bits_per_parameter": float(means @ params / (params @ params)), "low": interval.low,
            "high": interval.high, "seed_slopes": slopes, "interval": interval.method,
            "parameters": params.tolist(), "mean_bits": means.tolist(), "runs": runs}
