"""Intensity normalisation, degradation models and patch datasets."""
