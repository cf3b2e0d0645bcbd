"""The drift job: compares the prediction log of each model version with its reference profile.

Run `python -m monitoring.drift --once` for one check, or `--loop` to repeat it.
docs/monitoring.md describes the statistics, the gauges and the reports.
"""
