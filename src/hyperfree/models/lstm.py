"""Character-level LSTM language model, as in the hypergradient paper's RNN experiment on a Tolstoy
text (Chandra et al. 2022, "Gradient Descent: The Ultimate Optimizer", arXiv 1909.13371)::

    e = Embedding(V, w)(tokens)                 # (B, T) int64 -> (B, T, w)
    h = LSTM(w, w, num_layers=depth)(e)         # (B, T, w), batch_first
    logits = Linear(w, V)(h)                    # (B, T, V)

``V`` is ``num_classes`` (the vocabulary size). Not paper-exact for AGD: the LSTM and the head
have biases (1-D parameters) and the embedding is a lookup table, not a linear map on features.
"""
from __future__ import annotations

from torch import Tensor, nn

from ._registry import register_model

__all__ = ["CharLSTM", "char_lstm"]


class CharLSTM(nn.Module):
    """Embedding → multi-layer LSTM → Linear head, predicting the next token at every step."""

    def __init__(self, vocab_size: int, *, depth: int, width: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, width)
        self.lstm = nn.LSTM(width, width, num_layers=depth, batch_first=True)
        self.head = nn.Linear(width, vocab_size)

    def forward(self, tokens: Tensor) -> Tensor:  # tokens: (B, T) int64 -> (B, T, V) logits
        h, _ = self.lstm(self.embed(tokens))
        return self.head(h)


@register_model("char_lstm", description="character-level LSTM language model (tokens in)",
                input_kind="tokens", paper_exact=False, default_depth=2, default_width=256,
                default_seq_len=128)
def char_lstm(*, in_channels: int, num_classes: int, image_size: int, depth: int, width: int,
              seq_len: int) -> CharLSTM:
    """LSTM of ``depth`` layers (default 2) and ``width`` units (256); vocabulary ``num_classes``.

    ``seq_len`` (default 128) is the length of the training windows; the LSTM itself runs on
    sequences of any length, so the model does not keep it. ``in_channels`` and ``image_size``
    are accepted for a uniform signature and ignored.
    """
    return CharLSTM(num_classes, depth=depth, width=width)
