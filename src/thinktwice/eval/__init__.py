"""Evaluation: the run store, the harness, metrics, curves and reports."""
