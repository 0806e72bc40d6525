"""pplaw_jax: choose continual pre-training data with a perplexity-aware data scaling law."""

__version__ = "0.1.0"
