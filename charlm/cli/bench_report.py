"""The benchmark's result as a Rich table (display only: the CLI prints it; nothing here measures)."""

from __future__ import annotations

from rich.table import Table


def render(result: dict) -> Table:
    """The table `charlm bench` prints for a `run_bench` result."""
    t = Table(title=f"charlm bench — {result['date']}, {result['machine']}", title_justify="left")
    t.add_column("measurement")
    t.add_column("charlm", justify="right")
    t.add_column("peer", justify="right")
    t.add_column("ratio", justify="right")
    t.add_column("note")
    for f in result["figures"]:
        peer = f"{f['peer']:,.0f} ({f['peer_name']})" if f["peer"] else "–"
        ratio = f"{f['ratio']:.2f}×" if f["ratio"] else "–"
        value = f"{f['charlm']:.1f} %" if f["unit"] == "%" else f"{f['charlm']:,.0f} {f['unit']}"
        if f["note"].startswith("not measured"):
            value = "–"
        t.add_row(f["label"], value, peer, ratio, f["note"])
    rates = result["matmul_gflops"]
    caption = (f"float32 matmul: {rates['2048x2048x2048']:.0f} GFLOP/s (2048²), "
               f"{rates['32x512x1024']:.0f} GFLOP/s ((32×512)·(512×1024)); data: {result['data']}")
    if result.get("quick"):
        caption += (f"\n--quick: one training configuration, {result['score_sentences']:,} sentences and a "
                    f"{result['score_document_chars']:,} character document scored (not 10,000 and 1,000,000), "
                    "no 7-gram rows")
    status = result.get("peers", {}).get("status", "ran")
    if status != "ran":
        caption += f"\n{status}"
    t.caption = caption
    return t
