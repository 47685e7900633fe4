"""Measurements: layer and fused-kernel microbenchmarks, links, whole-model ground truth."""
