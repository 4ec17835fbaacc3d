import sys

import pytest
import torch

from gnn_metamf import MatrixGraph
from gnn_metamf.baselines import SurpriseSVD


def test_surprise_svd_missing_extra(monkeypatch, low_rank):
    monkeypatch.setitem(sys.modules, 'surprise', None)
    model = SurpriseSVD()
    with pytest.raises(ImportError, match=r"pip install "
                                          r"gnn-metamf\[surprise\]"):
        model.fit(low_rank())
    assert not model.is_fitted


def test_surprise_svd_matches_surprise(low_rank):
    pytest.importorskip('surprise')
    graph = low_rank(num_rows=20, num_cols=15, noise=0.3)
    model = SurpriseSVD(n_factors=4, n_epochs=30, seed=1).fit(graph)
    query = graph.edge_label_index
    pred = model.predict(query)
    expected = [model.svd_.predict(int(i), int(j)).est
                for i, j in query.T.tolist()]
    torch.testing.assert_close(pred, torch.tensor(expected,
                                                  dtype=torch.float64))


def test_surprise_svd_cold_rows_and_determinism():
    pytest.importorskip('surprise')
    # Row 2 and column 2 have no entry.
    graph = MatrixGraph.from_triples([0, 0, 1, 1, 3], [0, 1, 1, 3, 0],
                                     [1.0, 2.0, 3.0, 5.0, 4.0],
                                     num_rows=4, num_cols=4)
    index = torch.tensor([[2, 2, 0], [0, 2, 2]])
    pred = SurpriseSVD(seed=3).fit(graph).predict(index)
    assert torch.isfinite(pred).all()
    assert pred[1].item() == pytest.approx(3.0)  # The global mean.
    assert torch.equal(pred, SurpriseSVD(seed=3).fit(graph).predict(index))
