"""Models. Each fulfils the `keras_rec.models.base.Recommender` contract."""

from keras_rec.models.base import ITEM_HISTORY, USER_ID, Recommender
from keras_rec.models.bpr_mf import BPRMF
from keras_rec.models.ease import EASE
from keras_rec.models.flvae import FLVAE
from keras_rec.models.lightgcn import LightGCN
from keras_rec.models.mult_vae import MultDAE, MultVAE
from keras_rec.models.ncf import GMF, MLP, NeuMF
from keras_rec.models.neural_ease import NeuralEASE
from keras_rec.models.ngcf import NGCF
from keras_rec.models.popularity import Popularity
from keras_rec.models.recvae import RecVAE
from keras_rec.models.sasrec import SASRec
from keras_rec.models.vasp import VASP

__all__ = [
    "BPRMF",
    "EASE",
    "FLVAE",
    "GMF",
    "ITEM_HISTORY",
    "LightGCN",
    "MLP",
    "MultDAE",
    "MultVAE",
    "NGCF",
    "NeuMF",
    "NeuralEASE",
    "Popularity",
    "RecVAE",
    "Recommender",
    "SASRec",
    "USER_ID",
    "VASP",
]
