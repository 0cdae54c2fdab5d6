"""ludb: LUDB 1.0.1, 12-lead ECGs with per-lead P/QRS/T annotations."""

from data_builders.ludb.ludb_dataset_builder import Builder

__all__ = ["Builder"]
