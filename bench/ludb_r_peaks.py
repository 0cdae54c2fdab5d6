"""R-peak detection against the LUDB QRS annotations (METHOD.md section 4 quality bar).

    python bench/ludb_r_peaks.py [--ludb_dir ../shared/data/ludb] [--tolerance_ms 50]
        [--lead II] [--gain_policy header|common] [--worst 10] [--compare_neurokit]

Scoring protocol:
  * Reference: the QRS peaks (`N` marks) of one lead's annotation file, lead II by default
    (`beatssl_jax.ecg.ludb.qrs_peaks`). Detections come from `detect_r_peaks` on all twelve
    leads (wfdb `p_signal`, mV, reordered to the canonical lead order by
    `leads.to_canonical`, via `ludb.read_signal`).
  * Annotated span: LUDB leaves the record edges unannotated, so only detections within
    [first annotated sample - tolerance, last annotated sample + tolerance] of that lead
    count (`ludb.annotated_span`: first wave onset to last wave offset). Detections outside
    are neither true nor false positives.
  * Matching: one-to-one within the tolerance, closest pairs first
    (`beatssl_jax.ecg.peaks.matched_pairs`). Sensitivity = TP / (TP + FN),
    PPV = TP / (TP + FP), F1 their harmonic mean, pooled over all records. The mean
    absolute error is over matched pairs.
Three readings of the reference are reported:
  lead        the chosen lead's marks, for every record (the strict figure);
  fallback    the chosen lead's marks, except for records where some of that lead's QRS
              marks lack their onset or offset bracket (an incomplete delineation; in the
              160 records at hand only record 104, ventricular pacing, whose lead-II marks
              sit on the pacing spike); those records use the union over leads below;
  union       for every record, a QRS counts as found when a detection lies within the
              tolerance of its mark in any of the twelve leads. The chosen lead's waves
              define the complexes; another lead's `N` mark belongs to the complex whose
              extent (onset to offset, widened by the tolerance) contains it.
Speed is the number of records per second of `detect_r_peaks` alone (file reading excluded).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from beatssl_jax.ecg import ludb
from beatssl_jax.ecg.leads import LEADS, normalize_lead_name
from beatssl_jax.ecg.peaks import detect_r_peaks, matched_pairs

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_LUDB = PROJECT_ROOT.parent / "shared" / "data" / "ludb"
PROTOCOLS = ("lead", "fallback", "union")


def _union_reference(
    waves_by_lead: dict[str, list[ludb.Wave]], lead: str, detected: np.ndarray, tol: float
) -> np.ndarray:
    """One position per QRS of `lead`: its mark in the lead nearest to a detection.

    Every complex of `lead` gathers the `N` marks of all leads inside its extent widened by
    `tol`; the representative is the mark closest to any detection. Because complexes and
    detections are each at least a refractory period apart, matching these representatives
    one-to-one equals matching on the smallest distance to any of a complex's marks.
    """
    complexes = [w for w in waves_by_lead[lead] if w.kind == "N"]
    marks = np.sort(
        np.array(
            [w.peak for ws in waves_by_lead.values() for w in ws if w.kind == "N"],
            dtype=np.int64,
        )
    )
    reps = np.empty(len(complexes), dtype=np.int64)
    for j, wave in enumerate(complexes):
        inside = marks[(marks >= wave.start - tol) & (marks <= wave.end + tol)]
        options = np.union1d(inside, [wave.peak])
        if detected.size == 0:
            reps[j] = wave.peak
            continue
        dist = np.abs(options[:, None] - detected[None, :]).min(axis=1)
        reps[j] = options[int(np.argmin(dist))]
    return np.sort(reps)


def _incomplete(waves: list[ludb.Wave]) -> bool:
    """True when some QRS wave of the lead misses its onset or offset bracket."""
    return any(w.kind == "N" and (w.onset is None or w.offset is None) for w in waves)


def _neurokit_lead(ecg_lead: np.ndarray, fs: float) -> np.ndarray:
    """neurokit2's own single-lead detector (ecg_clean + ecg_peaks, method 'neurokit')."""
    import neurokit2 as nk

    cleaned = nk.ecg_clean(ecg_lead, sampling_rate=int(fs), method="neurokit")
    _, info = nk.ecg_peaks(cleaned, sampling_rate=int(fs), method="neurokit")
    return np.asarray(info["ECG_R_Peaks"], dtype=np.int64)


def _score(per_record: list[dict], key: str) -> dict:
    tp = sum(r[key][0] for r in per_record)
    fp = sum(r[key][1] for r in per_record)
    fn = sum(r[key][2] for r in per_record)
    sens = tp / max(tp + fn, 1)
    ppv = tp / max(tp + fp, 1)
    f1 = 2 * sens * ppv / max(sens + ppv, 1e-12)
    return {"tp": tp, "fp": fp, "fn": fn, "sens": sens, "ppv": ppv, "f1": f1}


def _evaluate(
    detected: np.ndarray, waves_by_lead: dict[str, list[ludb.Wave]], lead: str, tol: float
) -> dict:
    """Counts (tp, fp, fn) under each protocol, and the lead-protocol absolute errors."""
    first, last = ludb.waves_span(waves_by_lead[lead])
    det = detected[(detected >= first - tol) & (detected <= last + tol)]
    ref = np.array([w.peak for w in waves_by_lead[lead] if w.kind == "N"], dtype=np.int64)
    out: dict = {"outside": int(detected.size - det.size)}
    d_idx, r_idx = matched_pairs(det, ref, tol)
    out["lead"] = (d_idx.size, det.size - d_idx.size, ref.size - d_idx.size)
    out["errors"] = np.abs(det[d_idx] - ref[r_idx])
    union_ref = _union_reference(waves_by_lead, lead, det, tol)
    u_idx, _ = matched_pairs(det, union_ref, tol)
    out["union"] = (u_idx.size, det.size - u_idx.size, union_ref.size - u_idx.size)
    out["uses_union"] = _incomplete(waves_by_lead[lead])
    out["fallback"] = out["union"] if out["uses_union"] else out["lead"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ludb_dir", type=Path, default=DEFAULT_LUDB)
    parser.add_argument("--tolerance_ms", type=float, default=50.0)
    parser.add_argument("--lead", default="II", help="lead whose QRS marks are the reference")
    parser.add_argument(
        "--gain_policy",
        default="header",
        choices=("header", "common"),
        help="LUDB lead gains: as in the header, or one common gain (ludb.read_signal)",
    )
    parser.add_argument("--worst", type=int, default=10, help="how many worst records to list")
    parser.add_argument(
        "--compare_neurokit",
        action="store_true",
        help="also score neurokit2's single-lead detector on the reference lead",
    )
    args = parser.parse_args()
    lead = normalize_lead_name(args.lead)

    records = ludb.list_records(args.ludb_dir)
    per_record: list[dict] = []
    nk_records: list[dict] = []
    detect_seconds = 0.0
    for path in records:
        ecg, fs = ludb.read_signal(path, args.gain_policy)
        waves_by_lead = {name: ludb.read_waves(path, name) for name in LEADS}
        tol = args.tolerance_ms * fs / 1000.0
        start = time.perf_counter()
        detected = detect_r_peaks(ecg, fs, record=path.name)
        detect_seconds += time.perf_counter() - start
        result = _evaluate(detected, waves_by_lead, lead, tol)
        result["record"] = path.name
        result["fs"] = fs
        per_record.append(result)
        if args.compare_neurokit:
            nk_det = _neurokit_lead(ecg[:, LEADS.index(lead)], fs)
            nk_records.append(_evaluate(nk_det, waves_by_lead, lead, tol) | {"fs": fs})

    n = len(per_record)
    print(f"LUDB R peaks: {n} records from {args.ludb_dir} (gain policy {args.gain_policy})")
    print(
        f"reference: lead {lead} QRS marks; tolerance {args.tolerance_ms:g} ms; "
        f"scored inside each record's annotated span of lead {lead}"
    )
    fallback = [r["record"] for r in per_record if r["uses_union"]]
    print(f"fallback records (lead {lead} delineation incomplete): {fallback or 'none'}")
    print(f"{'protocol':<10} {'TP':>6} {'FP':>5} {'FN':>5} {'sens':>7} {'PPV':>7} {'F1':>7}")
    for key in PROTOCOLS:
        s = _score(per_record, key)
        print(
            f"{key:<10} {s['tp']:>6} {s['fp']:>5} {s['fn']:>5} "
            f"{s['sens']:>7.4f} {s['ppv']:>7.4f} {s['f1']:>7.4f}"
        )
    errors_ms = np.concatenate([r["errors"] * 1000.0 / r["fs"] for r in per_record])
    print(
        f"abs error of matched peaks (protocol 'lead'): mean {errors_ms.mean():.1f} ms, "
        f"median {np.median(errors_ms):.1f} ms, 95th percentile "
        f"{np.percentile(errors_ms, 95):.1f} ms"
    )
    outside = sum(r["outside"] for r in per_record)
    print(f"detections outside the annotated span (not scored): {outside}")
    worst = sorted(per_record, key=lambda r: (-(r["lead"][1] + r["lead"][2]), r["record"]))
    worst = [r for r in worst if r["lead"][1] + r["lead"][2] > 0][: args.worst]
    print(f"worst records (protocol 'lead'; record: TP/FP/FN; union TP/FP/FN): {len(worst)}")
    for r in worst:
        print(
            f"  {r['record']:>4}: {r['lead'][0]}/{r['lead'][1]}/{r['lead'][2]}; union "
            f"{r['union'][0]}/{r['union'][1]}/{r['union'][2]}"
        )
    print(
        f"speed of detect_r_peaks: {n / detect_seconds:.1f} records/s "
        f"({1000.0 * detect_seconds / n:.1f} ms per 10 s, 12-lead record)"
    )
    if args.compare_neurokit:
        s = _score(nk_records, "lead")
        print(
            f"neurokit2 ecg_peaks('neurokit') on lead {lead} alone, protocol 'lead': "
            f"TP {s['tp']} FP {s['fp']} FN {s['fn']} sens {s['sens']:.4f} "
            f"PPV {s['ppv']:.4f} F1 {s['f1']:.4f}"
        )


if __name__ == "__main__":
    main()
