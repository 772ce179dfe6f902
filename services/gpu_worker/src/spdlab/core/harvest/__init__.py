"""Harvest: component statistics and activation examples over a dataset, and dataset attributions.

Pure torch functions with progress/cancel callbacks; states are saved per shard and merged exactly.
"""
