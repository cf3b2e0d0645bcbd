"""Drift statistics on known distributions, the monitor settings and the report histograms."""

from __future__ import annotations

import numpy as np
import pytest

from monitoring.drift.report import histogram
from monitoring.drift.settings import MonitorSettings
from monitoring.drift.statistics import (
    bin_counts,
    jensen_shannon_divergence,
    kolmogorov_smirnov,
    population_stability_index,
    quantile_bin_edges,
)
from services.common.settings import InvalidSettingsError, load_settings


@pytest.fixture(scope="module")
def normal_samples() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    return rng.normal(0.0, 1.0, 5000), rng.normal(0.0, 1.0, 2000)


def test_psi_of_same_distribution_is_small(normal_samples: tuple[np.ndarray, np.ndarray]) -> None:
    reference, live = normal_samples
    assert population_stability_index(reference, live) < 0.02


def test_psi_of_identical_samples_is_zero(normal_samples: tuple[np.ndarray, np.ndarray]) -> None:
    reference, _ = normal_samples
    assert population_stability_index(reference, reference) == pytest.approx(0.0, abs=1e-12)


def test_psi_of_shifted_distribution_exceeds_threshold(
    normal_samples: tuple[np.ndarray, np.ndarray],
) -> None:
    reference, live = normal_samples
    assert population_stability_index(reference, live + 0.5) > 0.2
    assert population_stability_index(reference, live + 0.1) < 0.2


def test_psi_grows_with_shift(normal_samples: tuple[np.ndarray, np.ndarray]) -> None:
    reference, live = normal_samples
    scores = [population_stability_index(reference, live + shift) for shift in (0.25, 0.5, 1.0)]
    assert scores == sorted(scores)


def test_psi_of_constant_reference_sees_new_values() -> None:
    # A model trained on 28x28 images only: one reference value, no quantile bins.
    reference = np.full(500, 28.0)
    assert population_stability_index(reference, np.full(300, 28.0)) < 0.01
    assert population_stability_index(reference, np.full(300, 64.0)) > 1.0
    assert population_stability_index(reference, np.full(300, 16.0)) > 1.0


def test_psi_ignores_non_finite_values(normal_samples: tuple[np.ndarray, np.ndarray]) -> None:
    reference, live = normal_samples
    with_nan = np.concatenate([live, [np.nan, np.inf]])
    assert population_stability_index(reference, with_nan) == pytest.approx(
        population_stability_index(reference, live)
    )


def test_psi_without_finite_live_values_raises(
    normal_samples: tuple[np.ndarray, np.ndarray],
) -> None:
    with pytest.raises(ValueError, match="no finite values"):
        population_stability_index(normal_samples[0], [np.nan])


def test_bin_counts_put_outside_values_in_end_bins() -> None:
    edges = quantile_bin_edges(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), bins=4)
    assert edges.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    counts = bin_counts(np.array([0.0, 1.0, 1.5, 2.0, 5.0, 6.0, 7.0]), edges)
    # below 1 | [1, 2] | (2, 3] | (3, 4] | (4, 5] | above 5
    assert counts.tolist() == [1, 3, 0, 0, 1, 2]


def test_ks_of_same_distribution_is_small(normal_samples: tuple[np.ndarray, np.ndarray]) -> None:
    result = kolmogorov_smirnov(*normal_samples)
    assert result.statistic < 0.05
    assert result.p_value > 0.01


def test_ks_of_shifted_distribution_exceeds_threshold(
    normal_samples: tuple[np.ndarray, np.ndarray],
) -> None:
    reference, live = normal_samples
    result = kolmogorov_smirnov(reference, live + 1.0)
    assert result.statistic > 0.2
    assert result.p_value < 1e-6


def test_js_of_same_labels_is_zero() -> None:
    shares = {"cat": 0.5, "dog": 0.3, "bird": 0.2}
    counts = {"cat": 50, "dog": 30, "bird": 20}
    assert jensen_shannon_divergence(shares, counts) == pytest.approx(0.0, abs=1e-12)


def test_js_of_disjoint_labels_is_one() -> None:
    assert jensen_shannon_divergence({"cat": 1.0}, {"dog": 7}) == pytest.approx(1.0)


def test_js_of_shifted_labels_exceeds_threshold() -> None:
    reference = {"cat": 0.5, "dog": 0.3, "bird": 0.2}
    assert jensen_shannon_divergence(reference, {"cat": 10, "dog": 10, "bird": 80}) > 0.1
    assert jensen_shannon_divergence(reference, {"cat": 48, "dog": 32, "bird": 20}) < 0.01


def test_js_of_empty_side_raises() -> None:
    with pytest.raises(ValueError, match="at least one label"):
        jensen_shannon_divergence({"cat": 1.0}, {})


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("VS_MONITOR_PSI_THRESHOLD", "0", "VS_MONITOR_PSI_THRESHOLD"),
        ("VS_MONITOR_KS_THRESHOLD", "1.5", "VS_MONITOR_KS_THRESHOLD"),
        ("VS_MONITOR_SERVICES", '["gateway"]', "VS_MONITOR_SERVICES"),
        ("VS_MONITOR_SERVICES", '["classifier", "classifier"]', "more than once"),
        ("VS_MONITOR_SERVICES", "classifier", "must be a JSON list"),
        ("VS_MONITOR_DRIFT_FEATURES", "brightness,", "VS_MONITOR_DRIFT_FEATURES"),
        ("VS_MONITOR_DRIFT_FEATURES", '["colour"]', "unknown feature colour"),
        ("VS_MONITOR_REDIS_URL", "", "must be set"),
        ("VS_MONITOR_REDIS_URL", "http://127.0.0.1:6379", "expected a Redis URL"),
        ("VS_MONITOR_PUSHGATEWAY_URL", "127.0.0.1:9091", "expected an http"),
        ("VS_MONITOR_BOTTLENECK_WINDOW", "5 minutes", "Prometheus duration"),
        ("VS_MONITOR_MIN_SAMPLES", "0", "VS_MONITOR_MIN_SAMPLES"),
    ],
)
def test_invalid_settings_raise(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(InvalidSettingsError, match=message):
        load_settings(MonitorSettings)


def test_settings_defaults_and_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VS_MONITOR_PUSHGATEWAY_URL", "http://127.0.0.1:9091/")
    monkeypatch.setenv("VS_MONITOR_DRIFT_FEATURES", '["brightness", "predicted_class"]')
    settings = load_settings(MonitorSettings)
    assert settings.drift_features == ["brightness", "predicted_class"]
    assert settings.pushgateway_url == "http://127.0.0.1:9091"
    assert settings.prometheus_url == ""
    assert settings.services == ["classifier", "detector"]
    assert settings.threshold("psi") == 0.2
    assert settings.threshold("js") == 0.1


def test_report_histogram_counts_outliers_in_end_bins() -> None:
    reference = [float(value) for value in range(1000)]
    live = [*reference[:999], 1e9]
    result = histogram(reference, live, bins=10)
    assert result["edges"][-1] < 1000
    assert sum(result["live"]) == pytest.approx(1.0)
    assert sum(result["reference"]) == pytest.approx(1.0)
    assert result["live"][-1] == pytest.approx(result["reference"][-1], abs=0.002)


def test_psi_few_outliers_stay_under_threshold() -> None:
    rng = np.random.default_rng(0)
    reference = rng.random(270)
    live = np.concatenate([rng.random(270), np.full(6, 5.0)])
    assert population_stability_index(reference, live) < 0.2


def test_psi_empty_decile_crosses_threshold() -> None:
    rng = np.random.default_rng(0)
    reference = rng.random(270)
    edges = quantile_bin_edges(reference, 10)
    candidates = rng.random(2000)
    live = candidates[(candidates < edges[3]) | (candidates > edges[4])][:200]
    assert population_stability_index(reference, live) > 0.2
