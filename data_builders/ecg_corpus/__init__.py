"""ecg_corpus: a folder tree of 12-lead WFDB records, windowed, for pretraining."""

from data_builders.ecg_corpus.ecg_corpus_dataset_builder import Builder

__all__ = ["Builder"]
