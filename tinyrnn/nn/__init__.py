"""Neural-network modules: ``Module``, feed-forward layers, recurrent cells and sequence layers."""
from .layers import Dropout, Embedding, LayerNorm, Linear
from .module import Module, Parameter
from .cells import GRUCell, LSTMCell, RNNCell
from .recurrent import GRU, LSTM, RNN, Bidirectional

__all__ = ["Module", "Parameter", "Linear", "Embedding", "LayerNorm", "Dropout", "RNNCell", "LSTMCell", "GRUCell",
           "RNN", "LSTM", "GRU", "Bidirectional"]
