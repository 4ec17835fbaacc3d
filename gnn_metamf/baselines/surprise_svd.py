r"""A wrapper around the SVD of scikit-surprise (Hug, "Surprise: a Python
library for recommender systems", JOSS 2020), the biased matrix
factorization trained by stochastic gradient descent that Funk popularised
in the Netflix prize.

scikit-surprise is an optional extra, imported only when the baseline is
fitted: ``pip install gnn-metamf[surprise]``.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from .base import PerMatrixBaseline, _check_number

__all__ = ['SurpriseSVD']


class SurpriseSVD(PerMatrixBaseline):
    r"""scikit-surprise's ``SVD`` fitted on one matrix's observed entries:
    :math:`\hat{r}_{ij} = \mu + b_i + c_j + \mathbf{u}_i^\top \mathbf{v}_j`
    (without the biases when ``biased=False``), trained by SGD on

    .. math::
        \sum_{(i, j) \in \Omega} (r_{ij} - \hat{r}_{ij})^2 + \lambda \left(
        b_i^2 + c_j^2 + \|\mathbf{u}_i\|^2 + \|\mathbf{v}_j\|^2 \right).

    Predictions follow surprise's own: a row or column with no observed
    entry drops the terms it has no estimate for, a prediction with neither
    falls back to :math:`\mu`, and with ``clip`` predictions are clipped to
    the range of the observed values. The defaults are surprise's.

    Args:
        n_factors (int): Rank. (default: :obj:`100`)
        n_epochs (int): Passes of SGD over the entries. (default: :obj:`20`)
        lr_all (float): SGD step size. (default: :obj:`0.005`)
        reg_all (float): :math:`\lambda`. (default: :obj:`0.02`)
        biased (bool): Whether to learn :math:`\mu`, :math:`b_i`,
            :math:`c_j`. (default: :obj:`True`)
        init_std_dev (float): Standard deviation of the initial factors.
            (default: :obj:`0.1`)
        clip (bool): Clip predictions to the observed range.
            (default: :obj:`True`)
        seed (int): ``random_state`` of surprise's SVD. (default: :obj:`0`)

    Attributes:
        svd_ (surprise.SVD): The fitted surprise model, whose raw user and
            item ids are the row and column ids.

    Raises:
        ImportError: On :meth:`fit`, when scikit-surprise is not installed.
    """
    name = 'surprise_svd'

    def __init__(
        self,
        *,
        n_factors: int = 100,
        n_epochs: int = 20,
        lr_all: float = 0.005,
        reg_all: float = 0.02,
        biased: bool = True,
        init_std_dev: float = 0.1,
        clip: bool = True,
        seed: int = 0,
    ):
        super().__init__(seed=seed)
        self.n_factors = _check_number(n_factors, 'n_factors', int, 1)
        self.n_epochs = _check_number(n_epochs, 'n_epochs', int, 1)
        self.lr_all = _check_number(lr_all, 'lr_all', strict=True)
        self.reg_all = _check_number(reg_all, 'reg_all')
        self.biased = bool(biased)
        self.init_std_dev = _check_number(init_std_dev, 'init_std_dev')
        self.clip = bool(clip)

    def _fit(self, row: Tensor, col: Tensor, value: Tensor, num_rows: int,
             num_cols: int) -> None:
        surprise = _import_surprise()
        import pandas as pd

        frame = pd.DataFrame({'row': row.cpu().numpy(),
                              'col': col.cpu().numpy(),
                              'value': value.cpu().numpy()})
        low, high = float(value.min()), float(value.max())
        reader = surprise.Reader(rating_scale=(low, high))
        dataset = surprise.Dataset.load_from_df(frame, reader)
        trainset = dataset.build_full_trainset()
        algo = surprise.SVD(n_factors=self.n_factors,
                            n_epochs=self.n_epochs, lr_all=self.lr_all,
                            reg_all=self.reg_all, biased=self.biased,
                            init_std_dev=self.init_std_dev,
                            random_state=self.seed)
        algo.fit(trainset)

        # Read the fitted arrays back into row/column id order; -1 marks a
        # row or column surprise never saw.
        self.row_inner_ = _inner_ids(trainset.n_users, trainset.to_raw_uid,
                                     num_rows)
        self.col_inner_ = _inner_ids(trainset.n_items, trainset.to_raw_iid,
                                     num_cols)
        self.mean_ = float(trainset.global_mean)
        self.row_bias_ = torch.as_tensor(np.asarray(algo.bu, np.float64))
        self.col_bias_ = torch.as_tensor(np.asarray(algo.bi, np.float64))
        self.U_ = torch.as_tensor(np.asarray(algo.pu, np.float64))
        self.V_ = torch.as_tensor(np.asarray(algo.qi, np.float64))
        self.range_ = (low, high)
        self.svd_ = algo

    def _predict(self, row: Tensor, col: Tensor) -> Tensor:
        u = self.row_inner_[row.cpu()]  # (Q,)
        i = self.col_inner_[col.cpu()]  # (Q,)
        known_u, known_i = u >= 0, i >= 0
        both = known_u & known_i
        u, i = u.clamp(min=0), i.clamp(min=0)

        dot = (self.U_[u] * self.V_[i]).sum(dim=-1)  # (Q,)
        if self.biased:
            out = self.mean_ + torch.where(both, dot, 0.0)
            out = out + torch.where(known_u, self.row_bias_[u], 0.0)
            out = out + torch.where(known_i, self.col_bias_[i], 0.0)
        else:  # Surprise falls back to the mean without both factors.
            out = torch.where(both, dot, self.mean_)
        if self.clip:
            out = out.clamp(*self.range_)
        return out.to(row.device)


def _import_surprise() -> Any:
    try:
        import surprise
    except ImportError as error:
        raise ImportError(
            "SurpriseSVD needs scikit-surprise, which is not installed; "
            "install it with 'pip install gnn-metamf[surprise]' (or 'pip "
            "install scikit-surprise')") from error
    return surprise


def _inner_ids(count: int, to_raw: Any, size: int) -> Tensor:
    out = torch.full((size,), -1, dtype=torch.long)
    for inner in range(count):
        out[int(to_raw(inner))] = inner
    return out
