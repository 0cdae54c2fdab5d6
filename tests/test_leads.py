"""Lead names, reordering and limb-lead derivation."""

import numpy as np
import pytest

from beatssl_jax.ecg import leads, vcg
from beatssl_jax.ecg.errors import RecordError


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [("AVR", "aVR"), ("avr", "aVR"), ("aVR", "aVR"), ("aVl", "aVL"), ("AVF", "aVF"),
     ("i", "I"), ("ii", "II"), ("III", "III"), ("v1", "V1"), ("V6", "V6"), (" Lead II ", "II"),
     ("lead_aVF", "aVF"), ("DII", "II"), ("C3", "V3")],
)  # fmt: skip
def test_normalize_lead_name(spelling, canonical):
    assert leads.normalize_lead_name(spelling) == canonical


def test_unknown_lead_name_names_record_and_lead():
    with pytest.raises(RecordError, match=r"rec7: unknown lead name 'MLII'"):
        leads.normalize_lead_name("MLII", record="rec7")


def _dipole_record(t=200, seed=0):
    v = np.random.default_rng(seed).normal(size=(t, 3))
    return v @ vcg.DOWER.T.astype(np.float64)  # physically consistent 12 leads


def test_reorder_any_permutation_and_spelling():
    x = _dipole_record()
    perm = np.random.default_rng(1).permutation(12)
    spelled = [n.upper() if i % 2 else n.lower() for i, n in enumerate(leads.LEADS)]
    shuffled_names = [spelled[p] for p in perm]
    out = leads.to_canonical(x[:, perm], shuffled_names)
    np.testing.assert_array_equal(out, x)


def test_eight_leads_are_completed_by_einthoven_and_goldberger():
    x = _dipole_record()
    keep = [leads.LEAD_INDEX[n] for n in leads.INDEPENDENT_LEADS]
    out = leads.to_canonical(x[:, keep], list(leads.INDEPENDENT_LEADS))
    # The derived leads equal the Dower-projected ones up to the rounding of the Dower rows.
    np.testing.assert_allclose(out, x, atol=2e-3 * np.abs(x).max())
    i, ii = x[:, 0], x[:, 1]
    np.testing.assert_allclose(out[:, 2], ii - i)
    np.testing.assert_allclose(out[:, 3] + out[:, 4] + out[:, 5], 0, atol=1e-12)


def test_missing_leads_are_named():
    x = _dipole_record()[:, :11]
    with pytest.raises(RecordError, match=r"r1: .*found 11 .*missing V6"):
        leads.to_canonical(x, list(leads.LEADS[:11]), record="r1")
    names = ["I", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3"]
    with pytest.raises(RecordError, match=r"missing II, V4, V5, V6"):
        leads.to_canonical(np.zeros((10, 8)), names, record="r2")


def test_no_derivation_when_disabled():
    x = _dipole_record()
    keep = [leads.LEAD_INDEX[n] for n in leads.INDEPENDENT_LEADS]
    with pytest.raises(RecordError, match="missing III, aVR, aVL, aVF"):
        leads.to_canonical(x[:, keep], leads.INDEPENDENT_LEADS, derive_missing_limb_leads=False)


def test_duplicate_and_count_mismatch_errors():
    names = list(leads.LEADS)
    names[3] = "AVL"
    with pytest.raises(RecordError, match="lead aVL appears twice"):
        leads.to_canonical(np.zeros((5, 12)), names, record="dup")
    with pytest.raises(RecordError, match="has 12 channels but 8 lead names"):
        leads.to_canonical(np.zeros((5, 12)), leads.INDEPENDENT_LEADS, record="n")
    with pytest.raises(RecordError, match=r"expected a \(T, leads\) signal"):
        leads.to_canonical(np.zeros(5), ["I"], record="flat")
