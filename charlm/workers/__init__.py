"""Using the second core: worker processes for training steps and for scoring.

- `process`: one way to start, feed, reap and report a worker process;
- `train`: a training step's batch shared by workers, each on its rows;
- `score`: batches of sentences read by workers, one batch each at a time.

The workers import only the model below them (`charlm.model`,
`charlm.inference`), never the jobs (`train`, `score`) that use them.
"""
