"""beatssl_jax: Beat-SSL pretraining of 12-lead ECG encoders in JAX/Flax.

Rizqyawan et al., "Beat-SSL: Capturing Local ECG Morphology Through Heartbeat-Level
Contrastive Learning with Soft Targets", ISBI 2026, arXiv 2601.16147.
"""

__version__ = "0.1.0"
