"""Training: `options.py` declares the training options once (train()/resume() keywords and the commands' flags),
`jobs.py` plans a job from them and runs it (what openocr_cli.train and the commands call), `run.py` starts a run
(one process or torchrun), `trainer.py` is the loop, `settings.py` the validated settings it reads, `run_data.py`
its data, `builders.py` the model/optimizer/scheduler, `callbacks.py` what listens to it (logs, plots,
checkpoints, early stopping), `state.py` exact resume, `distributed.py` DDP.
"""
