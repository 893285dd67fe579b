"""The model organism: synthetic arithmetic problems and a tiny transformer trained on them from scratch.

A testbed on which self-feedback methods show measurable effects in minutes on a CPU. Only
:mod:`thinktwice.organism.arith` is importable without torch; every other module needs it.
"""
