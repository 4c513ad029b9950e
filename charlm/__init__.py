"""charlm: character-level language models (RNN, GRU, LSTM) in NumPy."""

__version__ = "0.2.0"
