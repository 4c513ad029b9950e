"""The benchmark harness's own pieces (the speeds it prints are not asserted anywhere)."""

import sys

from charlm.bench import alternate, flops_per_char, names_novelty, run_peer


def test_flops_per_char_matches_the_issue_estimate():
    # "the LSTM 2 × 256 step above needs about 5 MFLOP per character"
    assert 4.5e6 < flops_per_char("lstm", 256, 2, 65) < 5.5e6
    assert flops_per_char("gru", 256, 2, 65) < flops_per_char("lstm", 256, 2, 65)


def test_run_peer_reads_a_result_line_or_json(tmp_path):
    text_peer = tmp_path / "peer_text.py"
    text_peer.write_text('print("warming up")\nprint("RESULT torch sample lstm: 5000 chars in 3.2s = 1562 chars/s")\n')
    json_peer = tmp_path / "peer_json.py"
    json_peer.write_text('import json\nprint("# header")\nprint(json.dumps({"chars_per_s": 40000.5}))\n')
    broken = tmp_path / "broken.py"
    broken.write_text("raise SystemExit(3)\n")
    assert run_peer(sys.executable, str(text_peer), []) == 1562.0
    assert run_peer(sys.executable, str(json_peer), []) == 40000.5
    assert run_peer(sys.executable, str(broken), []) is None


def test_names_novelty_counts_samples_not_in_the_corpus():
    new, bpc = names_novelty(1.0, num=30)
    assert 0.0 <= new <= 1.0
    assert 0.0 < bpc < 10.0


def test_alternate_takes_turns_and_reports_medians_and_pair_ratios():
    calls = []
    ours = iter([10.0, 30.0, 20.0])
    theirs = iter([5.0, None, 8.0])      # the peer's second run failed: that turn has no pair

    def a():
        calls.append("ours")
        return next(ours)

    def p():
        calls.append("peer")
        return next(theirs)

    mine, peer, ratios = alternate(a, p, 3)
    assert calls == ["ours", "peer"] * 3
    assert mine == 20.0 and peer == 6.5
    assert ratios == [2.0, 2.5]
    assert alternate(lambda: 4.0, None, 2) == (4.0, None, [])
