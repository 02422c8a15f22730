"""The nightly retraining: when it runs. What it does lives in shared.deep_memory.nightly."""
