"""Train/validation split and the (T, B) chunks of stateful truncated BPTT."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from charlm.data import BatchPlan, chunk, epoch_plan, fit_batch, inputs_targets, split, val_blocks
from charlm.vocab import EOS_ID


def test_split_holds_out_stretches_spread_through_the_corpus():
    ids = np.arange(100_000, dtype=np.uint32) % 50_000 + 2   # no <EOS>: edges stay where they fall
    original = ids.copy()
    train, val = split(ids, 0.1)
    assert (len(train), len(val)) == (90_000, 10_000)
    edges = val_blocks(original, 0.1)
    assert len(edges) == 10 and all(b - a == 1000 for a, b in edges)
    # one stretch in the middle of each tenth; the start and the end of the corpus are trained on
    assert [(a + b) // 2 for a, b in edges] == [5_000 + 10_000 * j for j in range(10)]
    assert np.array_equal(val, np.concatenate([original[a:b] for a, b in edges]))
    kept = np.ones(len(original), bool)
    for a, b in edges:
        kept[a:b] = False
    assert np.array_equal(train, original[kept])                  # the rest, in order
    assert train[0] == original[0] and train[-1] == original[-1]
    assert np.shares_memory(train, ids)                           # compacted in place, not copied


def test_split_edges_move_to_line_starts():
    rng = np.random.default_rng(0)
    ids = rng.integers(2, 30, size=20_000).astype(np.uint8)
    ids[rng.random(20_000) < 0.05] = EOS_ID                       # lines of about 20 tokens
    edges = val_blocks(ids, 0.1)
    assert len(edges) == 7                                        # 2,000 held out: stretches of at least 256
    for a, b in edges:
        assert ids[a - 1] == EOS_ID and ids[b - 1] == EOS_ID      # each stretch is whole lines
    assert abs(sum(b - a for a, b in edges) - 2000) < 7 * 60


def test_a_small_share_is_held_out_as_fewer_longer_stretches():
    ids = np.arange(2, 5_002, dtype=np.uint16)
    assert len(val_blocks(ids, 0.1)) == 1 and len(val_blocks(ids, 0.5)) == 9
    train, val = split(ids.copy(), 0.1)
    assert (len(train), len(val)) == (4_500, 500)


def test_split_without_validation_and_tiny_inputs():
    ids = np.arange(10)
    train, val = split(ids, 0.0)
    assert np.array_equal(train, ids) and len(val) == 0
    train, val = split(np.arange(3), 0.5)  # too small to split
    assert len(train) == 3 and len(val) == 0
    train, val = split(np.arange(5), 0.01)  # at least one validation token
    assert len(train) == 4 and len(val) == 1


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 60), st.floats(0.0, 0.999))
def test_property_split_keeps_order_and_a_training_token(n, f):
    ids = np.arange(n)
    train, val = split(ids.copy(), f)
    assert sorted(np.concatenate([train, val]).tolist()) == ids.tolist()   # every token exactly once
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)      # each part in corpus order
    if n:
        assert len(train) >= 1  # training on an empty split is impossible
    if f > 0 and n >= 4:
        assert len(val) >= 1


def test_inputs_targets_start_with_eos():
    ids = np.array([5, 6, 0, 7, 0], dtype=np.uint8)
    x, y = inputs_targets(ids)
    assert x.tolist() == [EOS_ID, 5, 6, 0, 7]
    assert y.tolist() == ids.tolist()
    assert x.dtype == ids.dtype


@settings(max_examples=300, deadline=None)
@given(st.integers(2, 400), st.integers(1, 40), st.integers(1, 70), st.integers(0, 2**31))
def test_property_fit_batch_always_gives_a_chunk(N, B, T, seed):
    b, t = fit_batch(N, B, T)
    assert 1 <= b <= B and 1 <= t <= T
    if N >= B * T + T:
        assert (b, t) == (B, T)  # nothing to adapt
    rng = np.random.default_rng(seed)
    for _ in range(5):
        plan = epoch_plan(N, b, t, rng)
        assert 0 <= plan.offset < t
        assert plan.steps >= 1
        assert plan.offset + plan.batch_size * plan.row_length <= N


def test_fit_batch_on_tiny_corpora():
    assert fit_batch(2, 32, 64) == (1, 1)
    assert fit_batch(5, 32, 64) == (1, 2)
    assert fit_batch(1000, 32, 64) == (14, 64)  # fewer rows first: 14 * 64 + 64 <= 1000
    assert fit_batch(32 * 64 + 64, 32, 64) == (32, 64)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 300), st.integers(1, 12), st.integers(1, 20), st.data())
def test_property_chunks_of_a_row_are_contiguous_and_rows_do_not_overlap(N, B, T, data):
    B, T = fit_batch(N, B, T)
    offset = data.draw(st.integers(0, T - 1)) if N >= B * T + T else 0
    plan = BatchPlan(N, B, T, offset)
    all_pos = np.stack([plan.positions(k) for k in range(plan.steps)])  # (K, T, B)
    assert all_pos.shape == (plan.steps, T, B)
    assert all_pos.min() >= offset and all_pos.max() < N
    # every stream position is used at most once in an epoch
    flat = all_pos.reshape(-1)
    assert len(np.unique(flat)) == len(flat)
    for b in range(B):
        row = all_pos[:, :, b].reshape(-1)  # chunk 0's T steps, then chunk 1's, ...
        # one row walks one contiguous stretch: the state carried from the end of
        # chunk k is the state right before the first position of chunk k + 1
        assert np.array_equal(row, np.arange(row[0], row[0] + len(row)))
        assert row[0] == offset + b * plan.row_length
    # rows are ordered stretches that do not overlap
    firsts = all_pos[0, 0, :]
    lasts = all_pos[-1, -1, :]
    assert np.all(lasts[:-1] < firsts[1:])


def test_chunk_pairs_each_input_with_the_next_target():
    ids = np.arange(1, 41, dtype=np.uint8)  # no EOS inside, easy to read
    x, y = inputs_targets(ids)
    plan = BatchPlan(len(ids), 3, 4, 2)
    for k in range(plan.steps):
        xc, yc = chunk(ids, plan, k)
        assert np.array_equal(xc, x[plan.positions(k)]) and np.array_equal(yc, y[plan.positions(k)])
        assert xc.shape == yc.shape == (4, 3)
        assert xc.dtype == np.intp
        # the input of every position is the target of the position before it
        assert np.array_equal(xc, yc - 1)
    # with offset 0 the very first input is <EOS>
    xc, yc = chunk(ids, BatchPlan(len(ids), 3, 4, 0), 0)
    assert xc[0, 0] == EOS_ID and yc[0, 0] == 1


def test_epoch_plan_offset_is_random_and_reproducible():
    offsets = [epoch_plan(10_000, 4, 16, np.random.default_rng(s)).offset for s in range(40)]
    assert len(set(offsets)) > 5
    assert all(0 <= o < 16 for o in offsets)
    a = [epoch_plan(10_000, 4, 16, np.random.default_rng(7)).offset for _ in range(3)]
    assert len(set(a)) == 1
