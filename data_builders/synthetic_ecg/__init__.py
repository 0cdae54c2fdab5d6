"""synthetic_ecg: the embedded synthetic 12-lead dataset (no download)."""

from data_builders.synthetic_ecg.synthetic_ecg_dataset_builder import Builder

__all__ = ["Builder"]
