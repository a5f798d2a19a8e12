"""A sweep's rows in a file, written as they come, read back to resume.

The format follows the file name:

    .csv                  CSV with a header row (None is an empty field)
    .jsonl, .ndjson       JSON lines: one object per row
    .parquet, .pq         Parquet (needs pyarrow). Parquet cannot be
                          appended to, so rows go first to FILE.part.jsonl
                          beside it, and the Parquet file is (re)written
                          when the sweep ends; a sweep that stopped early
                          leaves the .part.jsonl, which the next run reads.

Every row is flushed as soon as it is written, so an interrupted sweep
loses no finished cell. A CSV file written by an earlier sweep with other
columns (another parameter swept) is rewritten once with the columns of
both.
"""
from __future__ import annotations

import csv
import importlib.util
import json
import os
from typing import TYPE_CHECKING, Any

from .. import errors
from .cell import TEXT_COLUMNS, column_kinds

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["file_format", "read_rows", "RowWriter", "MISSING_PYARROW"]

MISSING_PYARROW = ("writing Parquet needs pyarrow, which is not installed; install it with:  "
                   "pip install pyarrow  (or write .csv or .jsonl)")
_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet",
            ".pq": "parquet"}


def file_format(path: str | os.PathLike[str]) -> str:
    ext = os.path.splitext(path)[1].lower()
    fmt = _FORMATS.get(ext)
    if fmt is None:
        raise errors.IovaValueError("cannot tell the format of %r from its name: use .csv, "
                                    ".jsonl or .parquet" % (path,))
    if fmt == "parquet" and importlib.util.find_spec("pyarrow") is None:
        raise errors.IovaValueError(MISSING_PYARROW)
    return fmt


def _journal(path: str | os.PathLike[str]) -> str:
    return os.fspath(path) + ".part.jsonl"


# ---- reading --------------------------------------------------------------------------

def _guess(text: str) -> Any:
    """A parameter column's value: an int or float when it reads as one."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    if text in ("True", "False"):
        return text == "True"
    return text


def _typed(name: str, text: str, types: dict[str, Any]) -> Any:
    if text == "":
        return "" if name in TEXT_COLUMNS else None
    kind = types.get(name)
    if kind is None:
        return _guess(text)
    if kind is bool:
        return text == "True"
    if kind is str:
        return text
    try:
        return kind(text)
    except ValueError:
        return text


def _read_csv(path: str | os.PathLike[str]) -> tuple[list[str], list[dict[str, Any]]]:
    types = column_kinds()
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            return [], []
        rows = [{k: _typed(k, v, types) for k, v in zip(header, line)}
                for line in reader if len(line) == len(header)]
    return header, rows


def _read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    rows = []
    with open(path) as f:
        lines = f.read().split("\n")
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError:
            if n < len(lines):      # only a last line cut short (a killed sweep) is skipped
                raise errors.IovaValueError("%s line %d is not JSON" % (path, n)) from None
    return rows


def _drop_partial_line(path: str | os.PathLike[str]) -> None:
    """Cuts a last line that has no newline (the sweep was killed while
    writing it), so the next row starts on a line of its own."""
    if not os.path.exists(path):
        return
    with open(path, "rb+") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        back = min(size, 1 << 20)
        f.seek(size - back)
        tail = f.read(back)
        cut = tail.rfind(b"\n")
        f.truncate(size - back + cut + 1 if cut >= 0 else 0)


def read_rows(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The rows in path (and its Parquet journal), in file order; [] when
    there is no file yet."""
    fmt = file_format(path)
    rows = []
    if fmt == "csv" and os.path.exists(path):
        rows = _read_csv(path)[1]
    elif fmt == "jsonl" and os.path.exists(path):
        rows = _read_jsonl(path)
    elif fmt == "parquet":
        if os.path.exists(path):
            import pyarrow.parquet as pq
            rows = pq.read_table(path).to_pylist()
        if os.path.exists(_journal(path)):
            rows += _read_jsonl(_journal(path))
    for row in rows:
        if "cell" not in row:
            raise errors.IovaValueError("%s is not a sweep's table: its rows have no 'cell' "
                                        "column" % path)
    return rows


# ---- writing --------------------------------------------------------------------------

def _csv_text(value: object) -> Any:
    return "" if value is None else value


class RowWriter:
    """Appends rows to path as they come (flushed each time); close() ends
    the file (writes the Parquet file)."""

    def __init__(self, path: str | os.PathLike[str], columns: Sequence[str]) -> None:
        self.path = os.fspath(path)     # (a pathlib.Path too: names are made from it)
        self.format = file_format(path)
        self.columns = list(columns)
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise errors.IovaValueError("cannot write %s: %s is not a folder" % (path, folder))
        self._file: Any = None
        if self.format == "csv":
            _drop_partial_line(path)
            self._open_csv()
        else:
            target = _journal(path) if self.format == "parquet" else path
            _drop_partial_line(target)
            self._file = open(target, "a")

    def _open_csv(self) -> None:
        header, old = _read_csv(self.path) if os.path.exists(self.path) else ([], [])
        if header and header != self.columns:
            self.columns = header + [c for c in self.columns if c not in header]
            tmp = self.path + ".tmp"
            with open(tmp, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(self.columns)
                for row in old:
                    w.writerow([_csv_text(row.get(c)) for c in self.columns])
            os.replace(tmp, self.path)
            header = self.columns
        self._file = open(self.path, "a", newline="")
        self._csv = csv.writer(self._file)
        if not header:
            self._csv.writerow(self.columns)
            self._file.flush()

    def write(self, row: dict[str, Any]) -> None:
        if self.format == "csv":
            self._csv.writerow([_csv_text(row.get(c)) for c in self.columns])
        else:
            self._file.write(json.dumps(row) + "\n")
        self._file.flush()

    def close(self, finished: bool = True) -> None:
        """Closes the file; for Parquet, when the sweep finished, writes the
        whole table and removes the journal."""
        if self._file is None:
            return
        self._file.close()
        self._file = None
        if self.format == "parquet" and finished:
            import pyarrow as pa
            import pyarrow.parquet as pq
            rows = read_rows(self.path)
            cols = list(self.columns) + sorted({k for r in rows for k in r} - set(self.columns))
            table = pa.Table.from_pylist([{c: r.get(c) for c in cols} for r in rows])
            tmp = self.path + ".tmp"
            pq.write_table(table, tmp)
            os.replace(tmp, self.path)
            os.remove(_journal(self.path))
