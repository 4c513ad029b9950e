"""`charlm bench`: throughput of training, sampling and scoring, measured here, beside PyTorch.

Prints figures, never asserts them.  The modules, one job each:

- `workload`: what is measured (the training configurations, the scoring
  sizes, the text) and the checks of what the user gives;
- `measure`: charlm's side, one function per measurement;
- `peers`: the PyTorch peer scripts shipped in `peers/`, and running them;
- `run`: `run_bench`, every measurement in order as one result dict;
- `report`: that result as a table (display only).
"""

from charlm.bench.run import run_bench

__all__ = ["run_bench"]
