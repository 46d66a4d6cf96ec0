"""The compare-threat-models table: the same attack under each threat model a defence has, one row
each (app.flows.pipeline.compare_threat_models makes the results); the defence is named in its columns."""
from __future__ import annotations

from app.views.report import defended, unknown_words_notice, yes_no
from app.flows.results import PipelineResult
from app.attacks.threat_models import THREAT_MODELS

# "the defence" stands for the defence compared; compare_table puts its declared label there.
COMPARE_COLUMNS = ["threat model", "bare CLIP (attacked)", "the defence (attacked)", "fooled bare CLIP",
                   "fooled the defence", "the defence changed clean", "gradient: exact zeros", "gradient norm",
                   "L-inf (/255)", "time (s)"]
# Under the table: what its L-inf column counts, so a row that "never moved" is not misread.
RANDOM_START_NOTE = ("L-inf is the perturbation the attack returned. PGD starts from a uniform random point "
                     "within eps (its random start), so a row whose gradient is exactly zero still shows up to eps "
                     "there: the attack stayed at its random start and never moved towards another class.")


def threat_model_row(result: PipelineResult) -> dict:
    """A row of the 'compare threat models' table, keyed by COMPARE_COLUMNS; yes/no from the Outcome."""
    a, o, tm, g = result.attack, result.outcome, result.attack_config.threat_model, result.gradient
    over = " (past eps)" if o.exceeds_eps else ""
    fooled = [yes_no(o.fooled_clip) + over, yes_no(o.fooled_defence) + over]
    if unknown_words_notice(result) is not None:   # the model does not know the words: no verdict
        fooled = ["no verdict", "no verdict"]
    values = [THREAT_MODELS[tm].label, result.adversarial.label, result.purified.label, *fooled,
              yes_no(o.defence_changed_clean), "—" if g is None else f"{g.zero_fraction:.0%}",
              "—" if g is None else f"{g.norm:.2g}", f"{a.linf_255:.2f}", f"{a.seconds:.1f}"]
    return dict(zip(COMPARE_COLUMNS, values))


def compare_table(results: list[PipelineResult]) -> dict:
    """The 'compare threat models' table: {"headers": COMPARE_COLUMNS with the defence compared named
    by its label, "data": one row per result}."""
    rows = [threat_model_row(r) for r in results]
    who = defended(results[0]) if results else "the defence"
    return {"headers": [c.replace("the defence", who) for c in COMPARE_COLUMNS],
            "data": [[row[c] for c in COMPARE_COLUMNS] for row in rows]}
