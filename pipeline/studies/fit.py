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
