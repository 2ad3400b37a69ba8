"""The site folder format: ``SITE_DIR/manifest.csv`` + ``SITE_DIR/videos/``.

Schema of ``manifest.csv`` (UTF-8, comma separated, header on line 1):

=============  ========  ==============================================================
column         required  meaning
=============  ========  ==============================================================
``video``      yes       path of the video file, relative to SITE_DIR (e.g. videos/a.mp4)
``subject``    yes       subject id (any non-empty string; site-local)
``visit``      yes       visit number, an integer >= 0 (clinical order)
``score``      yes       clinical scale value, a number in ``[0, score_max]``
``label``      no        class label, an integer >= 0 (classification runs)
``split``      no        ``train`` or ``test`` (fixes the split; must agree per subject)
identity       no        ``sex``, ``birth_year``, ``date_of_birth``, ``site``: facts about
                         the PERSON, so every row of one subject must carry the same value
=============  ========  ==============================================================

Other columns are kept and ignored. A *duplicate row* is a second row naming the same video
file (after path normalisation): one recording must not be counted twice. Several rows per
(subject, visit) are allowed (AVEC records two tasks per visit).

The scale maximum (``score_max``) is resolved, first hit wins: an explicit argument,
``SITE_DIR/site.json`` ``{"score_max": ...}``, ``SITE_DIR/../cohort.json`` (synthetic
cohorts), else 27 (PHQ-9).

Problems are reported as ``Problem(file, line, message)`` where ``line`` is the line number
in manifest.csv (the header is line 1) - rendered ``manifest.csv:4: message`` like a
compiler error, so an editor can jump to it.
"""
from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

MANIFEST_NAME = "manifest.csv"
REQUIRED_COLUMNS = ("video", "subject", "visit", "score")
OPTIONAL_COLUMNS = ("label", "split")
IDENTITY_COLUMNS = ("sex", "birth_year", "date_of_birth", "site")
SPLIT_VALUES = ("train", "test")
DEFAULT_SCORE_MAX = 27.0
DEFAULT_SCALE = "PHQ-9"


class ManifestError(Exception):
    """The manifest cannot be read at all (missing file, missing column, unreadable CSV)."""

    def __init__(self, problem: "Problem"):
        super().__init__(str(problem))
        self.problem = problem


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a site: where (file, manifest line) and what."""

    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.message}"


@dataclass
class Row:
    """A parsed manifest row. ``problems`` lists what is wrong with it (empty = usable)."""

    line: int
    video: str
    subject: str
    visit: int | None
    score: float | None
    label: int | None = None
    split: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)          # this row's own problems
    subject_problems: list[str] = field(default_factory=list)  # its subject's (identity...)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.subject_problems

    @property
    def all_problems(self) -> list[str]:
        return self.problems + self.subject_problems


@dataclass
class Manifest:
    site_dir: Path
    columns: list[str]
    rows: list[Row]
    score_max: float
    problems: list[Problem]          # every problem, manifest-level and row-level

    @property
    def good_rows(self) -> list[Row]:
        return [r for r in self.rows if r.ok]


def _read_json(path: Path) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def site_info(site_dir: str | os.PathLike) -> dict:
    """Optional per-site metadata: SITE_DIR/site.json merged over ../cohort.json hints."""
    site_dir = Path(site_dir)
    info: dict = {}
    cohort = _read_json(site_dir.parent / "cohort.json")
    if cohort:
        for key in ("score_max", "scale", "label_threshold"):
            if key in cohort:
                info[key] = cohort[key]
    own = _read_json(site_dir / "site.json")
    if own:
        info.update(own)
    return info


def resolve_score_max(site_dir: str | os.PathLike, score_max: float | None = None) -> float:
    if score_max is not None:
        return float(score_max)
    value = site_info(site_dir).get("score_max")
    try:
        if value is not None and float(value) > 0:
            return float(value)
    except (TypeError, ValueError):
        pass
    return DEFAULT_SCORE_MAX


def _parse_number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _parse_int(text: str) -> int | None:
    value = _parse_number(text)
    if value is None or value != int(value):
        return None
    return int(value)


def normalise_video_path(text: str) -> str:
    return Path(os.path.normpath(text.strip())).as_posix()


def _read_lines(path: Path) -> list[list[str]]:
    """All CSV records of the manifest (BOM tolerated).

    Raises
    ------
    ManifestError
        The file cannot be opened, decoded as UTF-8 or parsed as CSV.
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            return list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ManifestError(Problem(MANIFEST_NAME, None, f"cannot read manifest: {e}")) from None


def _parse_header(lines: list[list[str]]) -> list[str]:
    """The stripped header (line 1).

    Raises
    ------
    ManifestError
        There is no header line, or it lacks a required column.
    """
    if not lines or not any(c.strip() for c in lines[0]):
        raise ManifestError(Problem(MANIFEST_NAME, 1, "empty manifest: no header line (expected "
                                    + ", ".join(REQUIRED_COLUMNS) + ")"))
    header = [c.strip() for c in lines[0]]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        word = "column" if len(missing) == 1 else "columns"
        raise ManifestError(Problem(MANIFEST_NAME, 1, f"missing required {word} "
                                    + ", ".join(repr(c) for c in missing)
                                    + f" (header has: {', '.join(header)})"))
    return header


def _duplicate_columns(header: list[str]) -> list[Problem]:
    """One problem (on line 1) per non-empty column name that appears more than once."""
    dups = sorted({c for c in header if header.count(c) > 1 and c})
    return [Problem(MANIFEST_NAME, 1, f"column {c!r} appears more than once") for c in dups]


def _cell(cells: list[str], col: dict[str, int], name: str) -> str:
    """The stripped value of column ``name`` ("" when the column or the cell is absent)."""
    i = col.get(name)
    return cells[i].strip() if i is not None and i < len(cells) else ""


def _check_video(video: str, lineno: int, seen: dict[str, int], errs: list[str]) -> str:
    """Validate a video path and return it normalised (unchanged when empty).

    The path must be relative and stay inside the site folder, and name a file no earlier
    row named (``seen``: normalised path -> first line, updated here). Problems are
    appended to ``errs``.
    """
    if not video:
        errs.append("missing video path")
        return video
    norm = normalise_video_path(video)
    if Path(video).is_absolute() or norm.startswith("../") or norm == "..":
        errs.append(f"video path {video!r} must be relative and inside the site folder")
    if norm in seen:
        errs.append(f"duplicate row: video {video!r} is already listed on line {seen[norm]}")
    else:
        seen[norm] = lineno
    return norm


def _check_visit(text: str, errs: list[str]) -> int | None:
    """The visit number (an integer >= 0), or None with a problem appended to ``errs``."""
    visit = _parse_int(text)
    if not text:
        errs.append("missing visit")
    elif visit is None or visit < 0:
        errs.append(f"visit {text!r} is not an integer >= 0")
        visit = None
    return visit


def _check_score(text: str, smax: float, errs: list[str]) -> float | None:
    """The score (a finite number in ``[0, smax]``), or None with a problem in ``errs``."""
    score = _parse_number(text)
    if not text:
        errs.append("missing score")
    elif score is None:
        errs.append(f"score {text!r} is not a number")
    elif not (0.0 <= score <= smax):
        errs.append(f"score {text} out of range [0, {smax:g}]")
        score = None
    return score


def _check_label(cells: list[str], col: dict[str, int], errs: list[str]) -> int | None:
    """The optional class label (an integer >= 0); None when absent or invalid."""
    if "label" not in col:
        return None
    text = _cell(cells, col, "label")
    if not text:
        return None
    label = _parse_int(text)
    if label is None or label < 0:
        errs.append(f"label {text!r} is not an integer >= 0")
        return None
    return label


def _check_split(cells: list[str], col: dict[str, int], errs: list[str]) -> str | None:
    """The optional split, lower-cased (``train`` or ``test``); None when absent or invalid."""
    if "split" not in col:
        return None
    text = _cell(cells, col, "split").lower()
    if not text:
        return None
    if text not in SPLIT_VALUES:
        errs.append(f"split {_cell(cells, col, 'split')!r} is not one of train, test")
        return None
    return text


def _parse_row(lineno: int, cells: list[str], header: list[str], col: dict[str, int],
               seen: dict[str, int], smax: float) -> Row:
    """Parse one non-blank manifest line into a :class:`Row` carrying its own problems
    (field count, video, subject, visit, score, label, split, in that order). Columns not
    in the schema go to ``Row.extra``."""
    errs: list[str] = []
    if len(cells) != len(header):
        errs.append(f"has {len(cells)} fields, header has {len(header)}")
    video = _check_video(_cell(cells, col, "video"), lineno, seen, errs)
    subject = _cell(cells, col, "subject")
    if not subject:
        errs.append("missing subject id")
    visit = _check_visit(_cell(cells, col, "visit"), errs)
    score = _check_score(_cell(cells, col, "score"), smax, errs)
    label = _check_label(cells, col, errs)
    split = _check_split(cells, col, errs)
    extra = {h: (cells[i].strip() if i < len(cells) else "")
             for h, i in col.items() if h not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS}
    return Row(lineno, video, subject, visit, score, label, split, extra, errs)


def _parse_rows(lines: list[list[str]], header: list[str], col: dict[str, int],
                smax: float) -> list[Row]:
    """Every non-blank data line (``lines`` starts at manifest line 2) as a :class:`Row`."""
    rows: list[Row] = []
    seen_video: dict[str, int] = {}
    for lineno, cells in enumerate(lines, start=2):
        if not any(c.strip() for c in cells):
            continue                                   # blank line
        rows.append(_parse_row(lineno, cells, header, col, seen_video, smax))
    return rows


def _first_lines(srows: list[Row], name: str) -> dict[str, int]:
    """Each distinct non-empty value of field ``name`` among a subject's rows -> the line
    it first appears on (``split`` is the parsed split, other names come from extra)."""
    first: dict[str, int] = {}
    for r in srows:
        value = (r.split or "") if name == "split" else r.extra.get(name, "")
        if value == "":
            continue
        first.setdefault(value, r.line)
    return first


def _subject_problems(rows: list[Row], col: dict[str, int]) -> list[Problem]:
    """Subject-level consistency: identity fields and split must agree across visits.

    A disagreement gives one problem line (at the first conflicting row) and makes every
    row of that subject unusable (appended to each row's ``subject_problems``), since we
    cannot tell which rows are the right person.
    """
    problems: list[Problem] = []
    by_subject: dict[str, list[Row]] = {}
    for r in rows:
        if r.subject:
            by_subject.setdefault(r.subject, []).append(r)
    names = [c for c in IDENTITY_COLUMNS if c in col] + (["split"] if "split" in col else [])
    for subject, srows in by_subject.items():
        for name in names:
            first = _first_lines(srows, name)
            if len(first) <= 1:
                continue
            vals = sorted(first.items(), key=lambda kv: kv[1])
            desc = " vs ".join(f"{v!r} (line {ln})" for v, ln in vals)
            what = "identity field" if name != "split" else "split"
            msg = f"subject {subject!r}: visits disagree on {what} {name!r}: {desc}"
            problems.append(Problem(MANIFEST_NAME, vals[1][1], msg))
            for r in srows:
                r.subject_problems.append(msg)
    return problems


def _all_problems(header_problems: list[Problem], rows: list[Row],
                  subject_problems: list[Problem]) -> list[Problem]:
    """Header, row and subject problems (plus "no videos" for an empty manifest), stably
    sorted by line (problems without a line first)."""
    problems = list(header_problems)
    for r in rows:
        for msg in r.problems:
            problems.append(Problem(MANIFEST_NAME, r.line, msg))
    problems.extend(subject_problems)
    if not rows:
        problems.append(Problem(MANIFEST_NAME, None, "manifest lists no videos"))
    problems.sort(key=lambda p: (p.line or 0))
    return problems


def read_manifest(site_dir: str | os.PathLike, *, score_max: float | None = None) -> Manifest:
    """Parse and validate ``SITE_DIR/manifest.csv`` (content only; files are checked by
    :func:`mpdrm.data.check.check_site`). Raises :class:`ManifestError` when the file is
    missing, unreadable or lacks a required column; otherwise returns every row with its
    problems attached (one pass, nothing dropped silently)."""
    site_dir = Path(site_dir)
    path = site_dir / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(Problem(MANIFEST_NAME, None,
                                    "missing manifest (expected a CSV with columns "
                                    + ", ".join(REQUIRED_COLUMNS) + ")"))
    smax = resolve_score_max(site_dir, score_max)
    lines = _read_lines(path)
    header = _parse_header(lines)
    col = {name: i for i, name in reversed(list(enumerate(header)))}
    rows = _parse_rows(lines[1:], header, col, smax)
    problems = _all_problems(_duplicate_columns(header), rows, _subject_problems(rows, col))
    return Manifest(site_dir, header, rows, smax, problems)
