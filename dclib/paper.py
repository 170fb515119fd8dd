"""The paper's published numbers, read only from the CSVs shipped in ``book/paper/`` (transcribed from Li et
al., ICCV 2023). A lookup names its rows by their exact keys and fails loudly when one is missing, so a page
can never show a number that is not in the paper's tables."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from .errors import InputError

PAPER_DIR = Path(__file__).resolve().parent.parent / "book" / "paper"


def paper_table(name: str) -> pd.DataFrame:
    """One of the paper's tables, e.g. ``paper_table("table12_noise_sampling")``."""
    path = PAPER_DIR / f"{name}.csv"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in PAPER_DIR.glob("*.csv")))
        raise InputError(f"no paper table {name!r} in {PAPER_DIR}; known: {known}")
    return pd.read_csv(path)


def paper_values(name: str, key_column: str, keys: Sequence, value_column: str) -> pd.Series:
    """The paper's ``value_column`` for each of ``keys`` (exact matches in ``key_column``), indexed by key."""
    table = paper_table(name)
    for column in (key_column, value_column):
        if column not in table.columns:
            raise InputError(f"paper table {name} has no column {column!r}; columns: {', '.join(table.columns)}")
    by_key = table.set_index(key_column)[value_column]
    missing = [k for k in keys if k not in by_key.index]
    if missing:
        raise InputError(f"paper table {name} has no row {missing[0]!r} in {key_column!r}; rows: "
                         f"{', '.join(map(str, by_key.index))}")
    return by_key.loc[list(keys)]


def paper_cell(name: str, column: str, **where) -> float:
    """One number of a paper table: ``column`` of the one row whose columns equal ``where``, e.g.
    ``paper_cell("table5_dit_objective", "imagenet", resolution=256, objective="vlb")`` is 71.6."""
    table = paper_table(name)
    for key in (*where, column):
        if key not in table.columns:
            raise InputError(f"paper table {name} has no column {key!r}; columns: {', '.join(table.columns)}")
    rows = table
    for key, value in where.items():
        rows = rows[rows[key] == value]
    if len(rows) != 1:
        raise InputError(f"paper table {name}: {len(rows)} rows where {where}, not one")
    return float(rows[column].iloc[0])


def text_effect(key: str) -> tuple[float, str]:
    """An effect the paper states in its text rather than in a table (``book/paper/text_effects.csv``, in accuracy
    points): its value as a fraction, as a claim registers it, and where it comes from, with the sentence it is
    read off."""
    rows = paper_table("text_effects").set_index("key")
    if key not in rows.index:
        raise InputError(f"no text effect {key!r}; known: {', '.join(rows.index)}")
    row = rows.loc[key]
    return float(row.effect) / 100, f'{row.location}: "{row.sentence}" ({row.unit})'
