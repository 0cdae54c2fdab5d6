"""ptb_xl: PTB-XL 1.0.3, superdiagnostic labels and folds (METHOD.md section 7)."""

from data_builders.ptb_xl.ptb_xl_dataset_builder import Builder

__all__ = ["Builder"]
