"""Reproducibility: the environment fingerprint, exports (conda, pip, Docker, Apptainer) and
deterministic settings."""
