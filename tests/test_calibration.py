"""The calibration benchmark's pairwise precision/recall, checked on a hand-worked example."""

import numpy as np
import pytest

from benchmarks.calibrate import distance_matrix, pair_metrics, partner_distance

# files 0 and 1 show picture A, file 2 picture B, file 3 picture C
PICTURES = np.array(["A", "A", "B", "C"])
SAME = PICTURES[:, None] == PICTURES[None, :]
HASHES = np.array([0b000, 0b111, 0b001, 2**64 - 1], dtype=np.uint64)  # d(0,1)=3 d(0,2)=1 d(1,2)=2


def test_distance_matrix_is_hamming_distance():
    d = distance_matrix(HASHES, np.ones(4, dtype=bool))
    assert d[0, 1] == 3 and d[0, 2] == 1 and d[1, 2] == 2
    assert d[0, 3] == 64 and d[1, 3] == 61
    assert (np.diag(d) == 0).all() and (d == d.T).all()


@pytest.mark.parametrize(("t", "tp", "fp", "fn", "precision", "recall"), [
    (0, 0, 0, 1, 1.0, 0.0),  # nothing predicted: precision is vacuously 1
    (1, 0, 1, 1, 0.0, 0.0),  # (0,2) predicted but different pictures; (0,1) missed
    (2, 0, 2, 1, 0.0, 0.0),  # (1,2) joins the false pairs
    (3, 1, 2, 0, 1 / 3, 1.0),  # the true pair (0,1) found beside two false ones
])
def test_pair_metrics_by_hand(t, tp, fp, fn, precision, recall):
    m = pair_metrics(distance_matrix(HASHES, np.ones(4, dtype=bool)), SAME, t)
    assert (m["tp"], m["fp"], m["fn"]) == (tp, fp, fn)
    assert m["precision"] == pytest.approx(precision) and m["recall"] == pytest.approx(recall)


def test_a_missing_hash_matches_nothing():
    valid = np.array([True, True, False, True])
    m = pair_metrics(distance_matrix(HASHES, valid), SAME, 3)
    assert (m["tp"], m["fp"], m["fn"]) == (1, 0, 0)


def test_partner_distance_is_nearest_same_picture_file():
    d = distance_matrix(HASHES, np.ones(4, dtype=bool))
    assert partner_distance(d, SAME).tolist() == [3, 3, 65, 65]  # 2 and 3 have no partner
