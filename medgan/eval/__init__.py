"""Metrics, baselines, statistics and reports."""
