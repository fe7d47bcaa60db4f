"""Accuracy evidence for lip-agnostic: data, noise, training runs and the report generator."""
