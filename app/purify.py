"""Kept for `from app.purify import clipure_cos`; purifiers live in app/purifiers/."""
from app.purifiers import (  # noqa: F401
    BACKWARDS,
    GRAD_SCOPES,
    NORMS,
    PAPER_DEFAULTS,
    PURIFIERS,
    PurifyConfig,
    Trajectory,
    clipure_cos,
    clipure_cos_iter,
    purify,
    rotation_per_step,
)
