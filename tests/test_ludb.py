"""The LUDB annotation reader: hand-made mark sequences and real records against wfdb.rdann."""

import numpy as np
import pytest
import wfdb

from beatssl_jax.ecg import ludb
from beatssl_jax.ecg.errors import RecordError
from beatssl_jax.ecg.leads import LEADS
from beatssl_jax.ecg.ludb import Wave, parse_waves
from tests.conftest import shared_data


def _marks(text: str) -> tuple[list[int], list[str]]:
    """'( 10 N 20 ) 30' -> samples and symbols, written as alternating symbol/sample."""
    tokens = text.split()
    symbols, samples = tokens[0::2], [int(s) for s in tokens[1::2]]
    return samples, symbols


def test_regular_triplets():
    samples, symbols = _marks("( 10 p 20 ) 30 ( 40 N 50 ) 60 ( 80 t 100 ) 120")
    assert parse_waves(samples, symbols) == [
        Wave("p", 10, 20, 30),
        Wave("N", 40, 50, 60),
        Wave("t", 80, 100, 120),
    ]


def test_missing_brackets_are_none_and_not_borrowed():
    # QRS without onset (as in LUDB 104 lead II), T without offset (116 V4).
    samples, symbols = _marks("N 50 ) 60 ( 80 t 100 ( 130 p 140 ) 150")
    waves = parse_waves(samples, symbols)
    assert waves == [Wave("N", None, 50, 60), Wave("t", 80, 100, None), Wave("p", 130, 140, 150)]
    assert (waves[0].start, waves[0].end) == (50, 60)
    assert (waves[1].start, waves[1].end) == (80, 100)


def test_brackets_without_a_peak_are_ignored():
    # '( )' pairs enclosing nothing (LUDB 8 V5, 198 V2), including one right after a peak.
    samples, symbols = _marks("( 5 ) 9 ( 10 N 20 ) 30 p 40 ( 41 ) 60 ( 70 N 80 ) 90")
    assert parse_waves(samples, symbols) == [
        Wave("N", 10, 20, 30),
        Wave("p", None, 40, None),
        Wave("N", 70, 80, 90),
    ]


def test_nested_duplicates_become_one_wave():
    # The same T wave annotated three times, nested (LUDB 116 V1).
    samples, symbols = _marks("( 100 ( 104 ( 106 t 120 t 121 t 125 ) 150 ) 152 ) 160")
    assert parse_waves(samples, symbols) == [Wave("t", 100, 121, 160)]


def test_adjacent_peaks_of_different_kinds_split_the_brackets():
    samples, symbols = _marks("( 10 p 20 N 40 ) 50")
    assert parse_waves(samples, symbols) == [Wave("p", 10, 20, None), Wave("N", None, 40, 50)]


def test_unordered_marks_are_sorted_first():
    samples, symbols = _marks(") 30 N 20 ( 10")
    assert parse_waves(samples, symbols) == [Wave("N", 10, 20, 30)]


def test_bad_symbols_and_lengths_raise_record_error():
    with pytest.raises(RecordError, match=r"rec7: unexpected annotation symbols \['V'\]"):
        parse_waves([1, 2, 3], ["(", "V", ")"], record="rec7")
    with pytest.raises(RecordError, match="3 annotation samples but 2 symbols"):
        parse_waves([1, 2, 3], ["(", "N"], record="rec7")


def test_waves_span_and_empty():
    waves = [Wave("N", None, 50, 60), Wave("t", 80, 100, None)]
    assert ludb.waves_span(waves) == (50, 100)
    with pytest.raises(ValueError, match="empty"):
        ludb.waves_span([])


def test_lead_extensions_cover_the_twelve_leads():
    assert list(ludb.LUDB_LEAD_EXTENSIONS) == list(LEADS)
    assert ludb.LUDB_LEAD_EXTENSIONS["aVR"] == "avr"
    assert ludb.LUDB_LEAD_EXTENSIONS["V6"] == "v6"
    assert ludb.annotation_path("/x/data/7", "avf").name == "7.avf"


def test_missing_annotation_file_names_record_and_lead(tmp_path):
    (tmp_path / "12.hea").write_text("12 12 500 5000\n")
    with pytest.raises(RecordError, match=r"^12: no annotation file for lead V3"):
        ludb.read_waves(tmp_path / "12", "V3")
    with pytest.raises(RecordError, match="unknown lead name"):
        ludb.read_waves(tmp_path / "12", "V7")


def test_list_records_needs_a_records_file(tmp_path):
    with pytest.raises(RecordError, match="no RECORDS file"):
        ludb.list_records(tmp_path)


# Real data --------------------------------------------------------------------------------


def _first_record():
    root = shared_data("ludb")
    return ludb.list_records(root)[0]


def test_real_record_matches_raw_rdann():
    path = _first_record()
    for lead, ext in ludb.LUDB_LEAD_EXTENSIONS.items():
        ann = wfdb.rdann(str(path), ext)
        symbols = np.array(ann.symbol)
        waves = ludb.read_waves(path, lead)
        for kind in ("p", "N", "t"):
            assert sum(w.kind == kind for w in waves) == np.sum(symbols == kind), (lead, kind)
        np.testing.assert_array_equal(
            ludb.qrs_peaks(path, lead), ann.sample[symbols == "N"], err_msg=lead
        )
        # This record's marks are complete triplets: onsets and offsets are the brackets.
        np.testing.assert_array_equal([w.onset for w in waves], ann.sample[symbols == "("])
        np.testing.assert_array_equal([w.offset for w in waves], ann.sample[symbols == ")"])
        assert ludb.annotated_span(path, lead) == (ann.sample[0], ann.sample[-1])


@pytest.mark.slow
def test_every_real_lead_parses_with_all_qrs_marks_kept():
    root = shared_data("ludb")
    records = ludb.list_records(root)
    assert len(records) == len((root / "RECORDS").read_text().split())
    for path in records:
        for lead, ext in ludb.LUDB_LEAD_EXTENSIONS.items():
            symbols = wfdb.rdann(str(path), ext).symbol
            waves = ludb.read_waves(path, lead)
            assert sum(w.kind == "N" for w in waves) == symbols.count("N"), (path.name, lead)
            assert all(w.start <= w.peak <= w.end for w in waves)
            peaks = [w.peak for w in waves]
            assert peaks == sorted(peaks)


def test_irregular_real_leads():
    root = shared_data("ludb")
    paced = root / "data" / "104"
    if not paced.with_suffix(".ii").is_file():
        pytest.skip("LUDB record 104 is not in this subset")
    waves = [w for w in ludb.read_waves(paced, "II") if w.kind == "N"]
    assert waves and all(w.onset is None and w.offset is not None for w in waves)


def test_read_signal_is_canonical_mv():
    path = _first_record()
    x, fs = ludb.read_signal(path)
    assert fs == 500.0 and x.shape == (5000, 12) and x.dtype == np.float32
    rec = wfdb.rdrecord(str(path))
    for lead in ("II", "aVL", "V5"):
        column = rec.sig_name.index(ludb.LUDB_LEAD_EXTENSIONS[lead])
        np.testing.assert_allclose(x[:, LEADS.index(lead)], rec.p_signal[:, column], rtol=1e-6)
