"""A search's own record, `search.json` in its folder, and the claim on its name.

The record holds what `--resume` and `--warm-start` need and nothing else reliably has: the
parent MLflow run, the store, the experiment, the Optuna storage, the budget, the trial base it
started with, its status, and the space it started with (`space_document`, with its digest),
so a resumed search can refuse a space that changed and say what changed. It is checked as it
is read: a damaged file (not JSON, not an object, a key missing or of the wrong type) is one
clear error, not a traceback. It is written before Tune runs and after, never while: a
restored Tune copies the `.json` files of the search's folder aside and uploads those copies
back over them as it runs.

Two searches started at once under one name both pass the plan's checks; `claim` settles it:
creating the folder is atomic, so one gets it and the other is refused. Every search then
holds a lock on its folder (`.lock`, released when the process ends, however it ends), so a
`--resume` of a search that is still running is refused too.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from mixmo_search import files
from mixmo_search.errors import UserError

SEARCH_META = "search.json"
LOCK = ".lock"
SHOWN_CHANGES = 4  # changes of a space listed in the refusal to resume
_ABSENT = object()  # a key one of two space documents lacks


class Budget(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True)

    trials: int | None
    time_s: float | None


class SearchRecord(BaseModel):
    """`search.json`; unknown keys are ignored (a newer version's, say)."""

    model_config = ConfigDict(strict=True, frozen=True)

    parent_run_id: str
    mlflow_uri: str
    experiment: str
    optuna_storage: str | None = None  # None: sqlite beside the trials (older searches)
    space: str  # the space file's path, as given
    budget: Budget
    base: dict[str, Any]  # the flat overrides every trial gets
    status: Literal["running", "interrupted", "finished"]
    space_digest: str | None = None  # None: a search from before the space was recorded
    space_document: Any = None


def read(path: Path) -> SearchRecord:
    """The record of the search in folder `path`; a UserError if it is missing or damaged."""
    file = path / SEARCH_META
    try:
        data = json.loads(file.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise UserError(
            f"no search {path.name!r} in {path.parent} ({file} is missing); check --name and "
            "--storage"
        ) from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise _damaged(file, f"it is not JSON text ({type(err).__name__})") from None
    if not isinstance(data, dict):
        raise _damaged(file, f"it holds a JSON {_json_type(data)}, not the record's object")
    try:
        return SearchRecord.model_validate(data)
    except ValidationError as err:
        problems = [f"`{'.'.join(map(str, e['loc']))}` {e['msg'].lower()}" for e in err.errors()]
        shown = "; ".join(problems[:3]) + (f" (+{len(problems) - 3} more)" if problems[3:] else "")
        raise _damaged(file, shown) from None


def _damaged(file: Path, problem: str) -> UserError:
    return UserError(
        f"{file} is damaged: {problem}; it is the search's own record (its MLflow run, store "
        "and budget), so the search cannot go on without it: put back a good copy, or start "
        "a new search with --name NEW"
    )


def _json_type(value: Any) -> str:
    return {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )


def write(path: Path, record: SearchRecord) -> None:
    """Replace the record of the search in folder `path` (atomically)."""
    files.write_text(path / SEARCH_META, record.model_dump_json(indent=2))


def space_document(text: str) -> Any:
    """A space file's content as data (comments and layout dropped), JSON-safe."""
    import yaml

    return json.loads(json.dumps(yaml.safe_load(text), default=str))


def space_digest(document: Any) -> str:
    """What the space says, hashed: the same for the same content, however it is laid out."""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def check_same_space(meta: dict[str, Any], name: str, text: str) -> None:
    """Refuse to resume search `name` (its record `meta`) with a space (`text`) whose content
    changed since it started, saying what changed."""
    recorded = meta.get("space_digest")
    if recorded is None or space_digest(space_document(text)) == recorded:
        return
    changes = space_changes(meta.get("space_document"), space_document(text))
    shown = "; ".join(changes[:SHOWN_CHANGES])
    more = f" (+{len(changes) - SHOWN_CHANGES} more)" if changes[SHOWN_CHANGES:] else ""
    raise UserError(
        f"--resume {name}: the space changed since the search started ({shown}{more}); a "
        f"search keeps the space it started with: put back {meta['space']} as it was, or start "
        f"a new search that learns from this one: --name NEW --warm-start {name}"
    )


def space_changes(old: Any, new: Any) -> list[str]:
    """`where: old -> new` for each value that differs between two space documents."""
    before, after = _flat(old), _flat(new)
    keys = [*before, *(k for k in after if k not in before)]
    shown = [(key, _shown(before.get(key, _ABSENT)), _shown(after.get(key, _ABSENT)))
             for key in keys]  # fmt: skip
    return [f"{key}: {was} -> {now}" for key, was, now in shown if was != now]


def _flat(value: Any, where: str = "") -> dict[str, Any]:
    """{`a.b[0].c`: value} of a nested document's leaves."""
    if isinstance(value, dict) and value:
        items = [(f"{where}.{key}" if where else str(key), item) for key, item in value.items()]
    elif isinstance(value, list) and value:
        items = [(f"{where}[{i}]", item) for i, item in enumerate(value)]
    else:
        return {where or "(the whole space)": value}
    return {k: v for at, item in items for k, v in _flat(item, at).items()}


def _shown(value: Any) -> str:
    """A value as the digest sees it (1 and 1.0 differ), strings bare."""
    if value is _ABSENT:
        return "(none)"
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


class Claim:
    """This process's hold on a search's folder (see the module docstring)."""

    def __init__(self, path: Path, *, new: bool) -> None:
        self.path, self.new = path, new
        if new:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                path.mkdir()
            except FileExistsError:
                raise UserError(
                    f"a search named {path.name!r} already exists in {path.parent} (another "
                    "search may have just taken the name); pass --resume to continue it, or "
                    "--name NEW to start another"
                ) from None
        self._fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise UserError(
                f"search {path.name!r} is running in another process right now; let it end "
                "(or stop it with Ctrl-C) before resuming it"
            ) from None

    def release(self) -> None:
        """Let go of the folder; a new search that never wrote its record gives its name back."""
        os.close(self._fd)
        if self.new and not (self.path / SEARCH_META).exists():
            (self.path / LOCK).unlink(missing_ok=True)
            try:
                self.path.rmdir()
            except OSError:  # something was written there: keep it
                pass
