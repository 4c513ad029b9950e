"""charlm's parameter dict <-> the reference's plain matrices, one per gate.

charlm (`charlm.model.param_shapes`) keeps each layer's gates stacked, G
blocks of H rows in the cell's gate order (rnn: one; gru: r, z, n;
lstm: i, f, g, o):

    layers.{l}.weight_ih   (G·H, D)    ->  W_kx for each gate k   (H, D)
    layers.{l}.weight_hh   (G·H, H)    ->  W_ka                   (H, H)
    layers.{l}.bias        (G·H,)      ->  b_k                    (H,)
    head.weight            (V, H)      ->  W_ya
    head.bias              (V,)        ->  b_y

(the vanilla RNN's one "gate" is a itself: W_aa, W_ax, b_a).  The same
maps convert gradients, so the two implementations can be compared on
the same weights.  Everything here is float64 and copied.
"""

from __future__ import annotations

import numpy as np

from charlm.reference import gru, lstm

GATES = {"rnn": ("a",), "gru": gru.GATES, "lstm": lstm.GATES}
CHARLM_KEYS = {"x": "weight_ih", "a": "weight_hh"}


def from_charlm(params: dict, cell: str) -> dict:
    """charlm's flat dict (`charlm.model.init_params` keys) -> {"layers": [...], "W_ya", "b_y"}."""
    gates = GATES[cell]
    H = params["layers.0.weight_hh"].shape[1]
    num_layers = sum(1 for k in params if k.endswith(".weight_hh"))
    layers = []
    for l in range(num_layers):
        p = {}
        for n, k in enumerate(gates):
            rows = slice(n * H, (n + 1) * H)
            for src, name in CHARLM_KEYS.items():
                p[f"W_{k}{src}"] = np.array(params[f"layers.{l}.{name}"][rows], dtype=np.float64)
            p[f"b_{k}"] = np.array(params[f"layers.{l}.bias"][rows], dtype=np.float64)
        layers.append(p)
    return {"layers": layers,
            "W_ya": np.array(params["head.weight"], dtype=np.float64),
            "b_y": np.array(params["head.bias"], dtype=np.float64)}


def to_charlm(ref: dict, cell: str) -> dict:
    """The inverse of `from_charlm` (for parameters or gradients): the gates stacked back in charlm's order."""
    gates = GATES[cell]
    out = {}
    for l, p in enumerate(ref["layers"]):
        for src, name in CHARLM_KEYS.items():
            out[f"layers.{l}.{name}"] = np.concatenate([p[f"W_{k}{src}"] for k in gates], axis=0)
        out[f"layers.{l}.bias"] = np.concatenate([p[f"b_{k}"] for k in gates])
    out["head.weight"] = np.array(ref["W_ya"])
    out["head.bias"] = np.array(ref["b_y"])
    return out


def masks_from_charlm(masks):
    """charlm's dropout masks, (T, H, N) each (`charlm.model.dropout_masks`), -> (T, N, H) each."""
    return None if masks is None else [np.swapaxes(m, 1, 2).astype(np.float64) for m in masks]
