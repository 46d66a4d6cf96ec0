"""Batch evaluation at scale: robust accuracy over a dataset, resumable, sharded, with tables,
plots and an evaluation card.

    python -m app.evaluate --data toy --n 8 --backbone toy-shapes --defences clipure-cos \
        --attacks PGD --eps 8 --steps 5 --threat-models undefended,adaptive --out DIR
    torchrun --nproc_per_node 2 -m app.evaluate ...      # the same run, sharded by whole batches

Predictions come from app.flows.scoring only; attacks from app.attacks; threat models from
app.attacks.threat_models. This package adds the grid, the data, the bookkeeping and the reports.
"""
from app.evaluate.config import EvalConfig, Setting
from app.evaluate.protocols import PROTOCOLS
from app.evaluate.runner import run_evaluation

__all__ = ["EvalConfig", "Setting", "PROTOCOLS", "run_evaluation"]
