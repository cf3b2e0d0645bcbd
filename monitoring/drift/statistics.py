"""Drift statistics: PSI, the two-sample KS test and Jensen-Shannon divergence.

PSI bins come from the reference quantiles. Two extra bins catch live values
below the reference minimum and above its maximum, which the reference never
showed. An empty bin gets the share `EPSILON` on either side so that the
logarithm stays finite. With the default 1e-4, a decile that the live data
leaves empty adds about 0.1 * ln(0.1 / 1e-4), or 0.69, to the PSI, so one
vanished decile is enough to cross the usual 0.2 threshold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats
from scipy.special import rel_entr

EPSILON = 1e-4


@dataclass(frozen=True)
class KsResult:
    statistic: float
    p_value: float


def quantile_bin_edges(reference: np.ndarray, bins: int) -> np.ndarray:
    """Return the distinct reference quantiles at 0, 1/bins, ..., 1.

    Repeated values collapse, so a discrete feature such as the image width
    gets one edge per value it takes rather than empty bins.
    """
    return np.unique(np.quantile(reference, np.linspace(0.0, 1.0, bins + 1)))


def bin_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Return the share of `values` in each bin of `edges`.

    Bins, in order: below edges[0]; [edges[0], edges[1]]; (edges[1], edges[2]];
    ...; above edges[-1]. A single edge gives the bins below, equal to and above it.
    """
    interior = max(len(edges) - 1, 1)
    index = np.searchsorted(edges, values, side="left")
    index[values == edges[0]] = 1
    index[values > edges[-1]] = interior + 1
    counts = np.bincount(index, minlength=interior + 2)
    return counts / max(len(values), 1)


def population_stability_index(
    reference: Sequence[float] | np.ndarray,
    live: Sequence[float] | np.ndarray,
    bins: int = 10,
    epsilon: float = EPSILON,
) -> float:
    """Return the PSI of `live` against `reference`: sum of (live - ref) * ln(live / ref) shares."""
    reference_values = _finite(reference)
    live_values = _finite(live)
    edges = quantile_bin_edges(reference_values, bins)
    expected = np.maximum(bin_shares(reference_values, edges), epsilon)
    actual = np.maximum(bin_shares(live_values, edges), epsilon)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def kolmogorov_smirnov(
    reference: Sequence[float] | np.ndarray, live: Sequence[float] | np.ndarray
) -> KsResult:
    """Run scipy's two-sample KS test and return its statistic and p-value."""
    result = stats.ks_2samp(_finite(reference), _finite(live))
    return KsResult(statistic=float(result.statistic), p_value=float(result.pvalue))


def jensen_shannon_divergence(reference: Mapping[str, float], live: Mapping[str, float]) -> float:
    """Return the JS divergence in bits, in [0, 1], of two label distributions.

    Both mappings are normalized first, so counts and shares both work. A label
    missing from one side has share 0 there. Raises ValueError when either side is empty.
    """
    labels = sorted(set(reference) | set(live))
    p = np.array([reference.get(label, 0.0) for label in labels], dtype=np.float64)
    q = np.array([live.get(label, 0.0) for label in labels], dtype=np.float64)
    if p.sum() <= 0 or q.sum() <= 0:
        raise ValueError("both label distributions need at least one label with a positive share")
    p /= p.sum()
    q /= q.sum()
    mixture = (p + q) / 2.0
    divergence = (rel_entr(p, mixture).sum() + rel_entr(q, mixture).sum()) / (2.0 * np.log(2.0))
    # Rounding can leave a tiny negative value for identical distributions.
    return float(np.clip(divergence, 0.0, 1.0))


def _finite(values: Sequence[float] | np.ndarray) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    array = array[np.isfinite(array)]
    if array.size == 0:
        raise ValueError("no finite values to compare")
    return array
