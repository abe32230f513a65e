"""Every fact's history: at each evaluation, each evaluated query's result, and each training individual's
exposures and the step after which it was last drawn, as Parquet files that pandas, polars and `datasets`
load directly (`pandas.read_parquet("runs/x/facts/queries")`).

One file per evaluation and table, written whole through a temporary name and a rename: a run killed at any
point leaves every earlier evaluation's files readable, and a resumed run rewrites the steps it evaluates
again with the same rows."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from data_gen import ATTRIBUTES

from ..run_folder import RunFolder, replacing

QUERY_COLUMNS = {  # facts/queries: one row per evaluated query of every group at one evaluation
    "step": "The evaluation's step.",
    "group": "The group of individuals evaluated (a trajectory line's split).",
    "individual": "The individual's index in its group's corpus split.",
    "attribute": "The attribute asked (birth_date, birth_city, ...).",
    "template": "The held-out question template's index.",
    "correct": "Whether every value token was the argmax.",
    "value_loss": "Cross-entropy of the value, summed over its tokens (nats).",
    "top_prob": "Highest probability of the value's first token.",
}
EXPOSURE_COLUMNS = {  # facts/exposures: one row per training individual at one evaluation
    "step": "The evaluation's step.",
    "individual": "The individual's index in the corpus's train split.",
    "exposures": "Times it was drawn in the first `step` steps.",
    "last_drawn": "The step after which it was last drawn (0: never).",
}


def query_table(step: int, scores: dict[str, dict[str, np.ndarray]], templates: dict[str, np.ndarray]) -> pa.Table:
    """One row per evaluated query of every group (QUERY_COLUMNS)."""
    groups = list(scores)
    rows = [len(scores[g]["value_loss"]) for g in groups]
    column = {key: np.concatenate([scores[g][key] for g in groups]) for key in ("individual", "attribute", "correct",
                                                                              "value_loss", "top_prob")}
    return pa.table({
        "step": pa.array(np.full(sum(rows), step, dtype=np.int32)),
        "group": pa.DictionaryArray.from_arrays(pa.array(np.repeat(np.arange(len(groups)), rows).astype(np.int16)),
                                                pa.array(groups)),
        "individual": pa.array(column["individual"].astype(np.int32)),
        "attribute": pa.DictionaryArray.from_arrays(pa.array(column["attribute"].astype(np.int8)),
                                                    pa.array(ATTRIBUTES)),
        "template": pa.array(np.concatenate([templates[g] for g in groups]).astype(np.int8)),
        "correct": pa.array(column["correct"].astype(bool)),
        "value_loss": pa.array(column["value_loss"].astype(np.float32)),
        "top_prob": pa.array(column["top_prob"].astype(np.float32)),
    })


def exposure_table(step: int, exposures: np.ndarray, last_drawn: np.ndarray) -> pa.Table:
    """One row per training individual (EXPOSURE_COLUMNS)."""
    return pa.table({"step": pa.array(np.full(len(exposures), step, dtype=np.int32)),
                     "individual": pa.array(np.arange(len(exposures), dtype=np.int32)),
                     "exposures": pa.array(exposures.astype(np.int32)),
                     "last_drawn": pa.array(last_drawn.astype(np.int32))})


def write_facts(run: RunFolder, step: int, tables: dict[str, pa.Table]) -> None:
    """Each table's rows of evaluation `step` into its own file (`RunFolder.facts_file`)."""
    for name, table in tables.items():
        path = run.facts_file(name, step)
        path.parent.mkdir(parents=True, exist_ok=True)
        with replacing(path) as temporary:
            pq.write_table(table, temporary)
