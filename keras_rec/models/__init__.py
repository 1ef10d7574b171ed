"""Models. Each fulfils the `keras_rec.models.base.Recommender` contract."""

from keras_rec.models.base import ITEM_HISTORY, USER_ID, Recommender
from keras_rec.models.bpr_mf import BPRMF
from keras_rec.models.popularity import Popularity
from keras_rec.models.sasrec import SASRec

__all__ = [
    "BPRMF",
    "ITEM_HISTORY",
    "Popularity",
    "Recommender",
    "SASRec",
    "USER_ID",
]
