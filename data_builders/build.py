"""Build a dataset: `python -m data_builders.build NAME [options]`.

  python -m data_builders.build synthetic_ecg --config=tiny --data_dir=/tmp/tfds
  python -m data_builders.build ludb --manual_dir=../shared/data/ludb --data_dir=/tmp/tfds

Records are processed in parallel across cores (`--num_workers`, default all) in a fixed
order, so a build gives the same files every time. At the end a summary lists the records
written per split, the records skipped and why (with `--skip_bad_records`; otherwise the
first bad record stops the build with an error naming it), the time and records/s.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import tensorflow_datasets as tfds

import data_builders


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m data_builders.build", description=__doc__.split("\n")[0]
    )
    parser.add_argument("name", choices=data_builders.AVAILABLE_BUILDERS, help="dataset")
    parser.add_argument("--config", default=None, help="builder config (default: its default)")
    parser.add_argument("--data_dir", default=None, help="TFDS data dir (default: TFDS's)")
    parser.add_argument("--manual_dir", default=None, help="source files, release layout")
    parser.add_argument("--download_dir", default=None, help="where downloads are kept")
    parser.add_argument(
        "--num_workers", type=int, default=None, help="worker processes (default: all cores)"
    )
    parser.add_argument(
        "--skip_bad_records",
        action="store_true",
        help="skip records that cannot be read, count them and list them in the summary",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="rebuild even if the dataset exists"
    )
    return parser.parse_args(argv)


def build(args: argparse.Namespace) -> tfds.core.DatasetBuilder:
    """Build the dataset `args` describes and return its builder (with a `report`)."""
    name = args.name if args.config is None else f"{args.name}/{args.config}"
    builder = tfds.builder(
        name,
        data_dir=args.data_dir,
        num_workers=args.num_workers,
        skip_bad_records=args.skip_bad_records,
    )
    mode = (
        tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS
        if args.overwrite
        else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS
    )
    builder.download_and_prepare(
        download_dir=args.download_dir,
        download_config=tfds.download.DownloadConfig(
            manual_dir=args.manual_dir, download_mode=mode
        ),
    )
    return builder


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    builder = build(args)
    report = getattr(builder, "report", None)
    print(f"{builder.info.full_name} in {builder.data_dir}")
    if report is None or report.num_written + len(report.skipped) == 0:
        print("already built; nothing to do (use --overwrite to rebuild)")
    else:
        print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
