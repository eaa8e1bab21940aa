"""One module per mode of `run.py`: `train` (the loop), `evaluate`, `export`, `predict`,
`transfer`; `build` and `start` make a run's parts (model, state, input) from its config."""
