"""A plain float64 reference of every cell's forward and backward: read this first.

One module per cell, each step a pair in the style of the CS231n notes,
`*_step_forward(...) -> (out, cache)` and `*_step_backward(dout, cache)`:

    rnn     a<t> = g(W_aa a<t-1> + W_ax x<t> + b_a),  g = tanh or relu
    gru     charlm's GRU (the reset gate before the matmul)
    lstm    gates i, f, g, o; c<t> = f * c<t-1> + i * g; a<t> = o * tanh(c<t>)
    stack   layers over time, dropout between them, resets at <EOS>, the
            softmax head, the summed cross-entropy, BPTT
    params  charlm's parameter dict <-> these plain matrices

Nothing here is tuned: batch-major arrays, one gate per matrix, Python
loops over time.  `charlm.model` and `charlm.cells` compute the same
numbers fast; tests/test_reference.py holds them to this reference (and
this reference to finite differences).  See docs/reference.md.
"""

from charlm.reference.params import from_charlm, masks_from_charlm, to_charlm
from charlm.reference.stack import backward, forward, loss_and_grads, softmax_loss

__all__ = ["backward", "forward", "from_charlm", "loss_and_grads", "masks_from_charlm", "softmax_loss", "to_charlm"]
