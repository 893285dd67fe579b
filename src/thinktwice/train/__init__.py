"""Training-time self-improvement: harvest datasets from stored runs, STaR/RFT on the organism,
preference optimisation, and TRL/PEFT trainers for Hugging Face models (METHODS.md §10).

Nothing here imports torch, transformers or trl at import time.
"""
