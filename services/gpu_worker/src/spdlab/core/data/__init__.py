"""Batch generators for SPD training data."""
