"""Build throughput of a dataset builder beside raw reading of the same records.

  python bench/bench_builders.py ludb --source=../shared/data/ludb
  python bench/bench_builders.py synthetic_ecg --config=tiny
  python bench/bench_builders.py ludb --source=../shared/data/ludb --limit=40 --num_workers=1
  python bench/bench_builders.py ptb_xl --config=100hz --source=../shared/data/ptbxl
  python bench/bench_builders.py ecg_corpus --config=100hz --source=../shared/data/ecg_corpus

Prints records/s of a full build (all fields, written as array_record, `--num_workers`
processes) and, in one process, of the raw source reads on the same records: for WFDB
sources `wfdb.rdrecord` (plus `wfdb.rdann` of the annotation files where the dataset has
them); for synthetic_ecg the generator alone; for ptb_xl and ecg_corpus also
`wfdb_reader.read_record` (the builders' reader: size checks, header corrections, canonical
leads). ecg_corpus counts examples (10 s windows), several per long record. To add a
dataset, add a function to `RAW_READERS` that returns the zero-argument read calls of its
records, and, if its source can be cut to `--limit` records, one to `SUBSETTERS`.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import tensorflow_datasets as tfds
import wfdb

import data_builders
from beatssl_jax.ecg.leads import LEADS
from beatssl_jax.ecg.synthetic import generate_record, record_seed

ROOT = Path(__file__).resolve().parents[1]


def _ludb_paths(source: Path) -> list[Path]:
    return [source / line for line in (source / "RECORDS").read_text().split()]


def ludb_raw(source: Path, builder) -> dict[str, list[Callable[[], object]]]:
    paths = _ludb_paths(source)

    def annotations(path: Path) -> None:
        for lead in LEADS:
            wfdb.rdann(str(path), lead.lower())

    return {
        "wfdb.rdrecord": [lambda p=p: wfdb.rdrecord(str(p)) for p in paths],
        "wfdb.rdrecord + 12 x wfdb.rdann": [
            lambda p=p: (wfdb.rdrecord(str(p)), annotations(p)) for p in paths
        ],
    }


def ludb_subset(source: Path, limit: int, dest: Path) -> Path:
    """A release folder of symlinks to the first `limit` records listed in RECORDS."""
    (dest / "data").mkdir(parents=True)
    lines = (source / "RECORDS").read_text().split()[:limit]
    for line in lines:
        for f in (source / line).parent.glob(f"{Path(line).name}.*"):
            (dest / "data" / f.name).symlink_to(f.resolve())
    (dest / "RECORDS").write_text("".join(f"{line}\n" for line in lines))
    (dest / "ludb.csv").symlink_to((source / "ludb.csv").resolve())
    return dest


def synthetic_raw(source: Path | None, builder) -> dict[str, list[Callable[[], object]]]:
    del source
    from data_builders.synthetic_ecg.synthetic_ecg_dataset_builder import split_seed

    cfg = builder.builder_config
    calls = []
    for split, size in cfg.split_sizes().items():
        seeds = [record_seed(split_seed(cfg.seed, split), i) for i in range(size)]
        calls += [lambda s=s: generate_record(s, cfg.generator) for s in seeds]
    return {"generate_record": calls}


def _ptb_xl_paths(source: Path, builder) -> list[Path]:
    import pandas as pd

    from data_builders.ptb_xl.ptb_xl_dataset_builder import FILENAME_COLUMNS

    column = FILENAME_COLUMNS[builder.builder_config.records]
    return [source / f for f in pd.read_csv(source / "ptbxl_database.csv")[column]]


def _wfdb_reads(paths: list[Path]) -> dict[str, list[Callable[[], object]]]:
    from data_builders.wfdb_reader import read_record

    def rdrecord(path: Path) -> object:
        try:
            return wfdb.rdrecord(str(path))
        except Exception as err:  # e.g. the CinC 2020 headers wfdb cannot parse
            return err

    return {
        "wfdb.rdrecord": [lambda p=p: rdrecord(p) for p in paths],
        "wfdb_reader.read_record": [lambda p=p: read_record(p.with_suffix(".hea")) for p in paths],
    }


def ptb_xl_raw(source: Path, builder) -> dict[str, list[Callable[[], object]]]:
    return _wfdb_reads(_ptb_xl_paths(source, builder))


def ptb_xl_subset(source: Path, limit: int, dest: Path) -> Path:
    """The PTB-XL layout with the first `limit` rows of ptbxl_database.csv."""
    dest.mkdir(parents=True)
    lines = (source / "ptbxl_database.csv").read_text().splitlines(keepends=True)
    (dest / "ptbxl_database.csv").write_text("".join(lines[: limit + 1]))
    for name in ("scp_statements.csv", "records100", "records500"):
        (dest / name).symlink_to((source / name).resolve())
    return dest


def ecg_corpus_raw(source: Path, builder) -> dict[str, list[Callable[[], object]]]:
    from data_builders.wfdb_reader import find_records

    return _wfdb_reads([h.with_suffix("") for h in find_records(source)])


def ecg_corpus_subset(source: Path, limit: int, dest: Path) -> Path:
    """A tree of symlinks to the first `limit` records (in the builder's order)."""
    from data_builders.wfdb_reader import find_records

    for header in find_records(source)[:limit]:
        folder = dest / header.parent.relative_to(source)
        folder.mkdir(parents=True, exist_ok=True)
        for f in header.parent.glob(f"{header.stem}.*"):
            (folder / f.name).symlink_to(f.resolve())
    return dest


RAW_READERS = {
    "ludb": ludb_raw,
    "synthetic_ecg": synthetic_raw,
    "ptb_xl": ptb_xl_raw,
    "ecg_corpus": ecg_corpus_raw,
}
SUBSETTERS = {"ludb": ludb_subset, "ptb_xl": ptb_xl_subset, "ecg_corpus": ecg_corpus_subset}


def timed(calls: list[Callable[[], object]]) -> float:
    """Records/s of running the calls one after the other (after one warm-up call)."""
    if calls:
        calls[0]()
    start = time.perf_counter()
    for call in calls:
        call()
    return len(calls) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("name", choices=sorted(RAW_READERS))
    parser.add_argument("--source", type=Path, default=None, help="manual dir of the source")
    parser.add_argument("--config", default=None)
    parser.add_argument("--num_workers", type=int, default=None)
    parser.add_argument("--limit", type=int, default=None, help="first N source records")
    args = parser.parse_args(argv)
    if args.name not in data_builders.AVAILABLE_BUILDERS:
        print(f"{args.name}: builder not available", file=sys.stderr)
        return 1
    name = args.name if args.config is None else f"{args.name}/{args.config}"
    with tempfile.TemporaryDirectory() as tmp:
        source = args.source
        if source is not None and args.limit and args.name in SUBSETTERS:
            source = SUBSETTERS[args.name](source.resolve(), args.limit, Path(tmp) / "source")
        builder = tfds.builder(name, data_dir=Path(tmp) / "tfds", num_workers=args.num_workers)
        config = tfds.download.DownloadConfig(manual_dir=source) if source else None
        start = time.perf_counter()
        builder.download_and_prepare(download_config=config)
        wall = time.perf_counter() - start
        report = builder.report
        total = report.num_written + len(report.skipped)
        print(f"{builder.info.full_name}: {total} records, {len(report.skipped)} skipped")
        print(
            f"  build ({args.num_workers or 'all'} workers, array_record): "
            f"{total / wall:.1f} records/s ({wall:.1f} s wall, {report.seconds:.1f} s generating)"
        )
        for label, calls in RAW_READERS[args.name](source, builder).items():
            print(f"  raw {label} (1 process): {timed(calls):.1f} records/s")
        shutil.rmtree(Path(tmp) / "tfds", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
