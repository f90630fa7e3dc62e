"""Where a search's Optuna study lives: a SQLite file beside its trials, or a shared database.

By default the study is `sqlite:///<storage>/<name>/optuna.db`. A search on a cluster can
keep it in PostgreSQL instead (`--optuna-storage postgresql://USER@HOST:PORT/DB`, typically
the database server of the MLflow store), where several searches, optuna-dashboard and later
warm starts all read it. The URL is recorded in the search's `search.json`, so `--resume`,
`--warm-start` and the summary's "Optuna:" command find the study wherever it is.

`check` runs at plan time and writes nothing: the scheme, the driver, no password in the URL
(it is recorded and printed; libpq reads it from PGPASSFILE or PGPASSWORD), a server that
answers, and a study name that is free (or, resuming, taken).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import TYPE_CHECKING

from mixmo_search.errors import UserError

if TYPE_CHECKING:
    import optuna

OPTUNA_DB = "optuna.db"  # the default study file, beside the search's trials
SCHEMES = {"sqlite": "", "postgresql": "psycopg", "postgresql+psycopg": "psycopg"}
CONNECT_TIMEOUT_S = 5


class StudyStorageError(UserError):
    """The Optuna storage URL cannot hold this search's study."""


def default_url(search_path: Path) -> str:
    return f"sqlite:///{search_path / OPTUNA_DB}"


def check(url: str, study: str, *, exists: bool | None, reachable: bool = True) -> str:
    """The URL, checked as the module says; `exists`: the study must (a warm start's source)
    or must not (a new search) be there already, None: either (a resumed search, which may
    have stopped before its study began). `reachable=False` (a dry run) skips the server."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in SCHEMES:
        raise StudyStorageError(
            f"--optuna-storage {url!r}: use postgresql://USER@HOST:PORT/DB (a shared study) "
            "or sqlite:////ABSOLUTE/PATH.db"
        )
    driver = SCHEMES[scheme]
    if driver and importlib.util.find_spec(driver) is None:
        raise StudyStorageError(
            f"--optuna-storage {url!r} needs the {driver} driver; `pip install 'psycopg[binary]'`"
        )
    if re.match(r"^[^/]*//[^/@]*:[^/@]*@", url):
        raise StudyStorageError(
            f"--optuna-storage: keep the password out of the URL ({redacted(url)}): it is "
            "recorded in search.json and printed; give it to libpq in PGPASSFILE or PGPASSWORD"
        )
    if scheme == "sqlite":
        path = Path(url.removeprefix("sqlite:///"))
        if not url.startswith("sqlite:///") or not path.is_absolute():
            raise StudyStorageError(
                f"--optuna-storage {url!r}: a SQLite study needs a file path, "
                "sqlite:///PATH.db or sqlite:////ABSOLUTE/PATH.db"
            )
        _check_sqlite_file(path)
        found = path.is_file() and study in _study_names(url)
    elif not reachable:
        return url
    else:
        found = study in _study_names(url)
    if exists is True and not found:
        raise StudyStorageError(f"no Optuna study {study!r} in {url}; check --optuna-storage")
    if exists is False and found:
        raise StudyStorageError(
            f"the Optuna storage {url} already holds a study named {study!r}; pick another "
            "--name, or pass --resume to continue that search"
        )
    return url


def absolute_url(url: str) -> str:
    """`url` with a relative SQLite path made absolute (from the working directory)."""
    if not url.startswith("sqlite:///"):
        return url
    path = Path(url.removeprefix("sqlite:///"))
    return url if path.is_absolute() or not str(path) else f"sqlite:///{path.absolute()}"


def _check_sqlite_file(path: Path) -> None:
    """An Optuna SQLite file that is one, or can be created where it is named."""
    from mixmo_search.files import unwritable

    if path.is_dir():
        raise StudyStorageError(f"--optuna-storage {path} is a folder; give a .db file path")
    if not path.exists():
        reason = (
            unwritable(path.parent)
            if path.parent.exists()
            else (f"its folder {path.parent} does not exist")
        )
        if reason:
            raise StudyStorageError(
                f"--optuna-storage: cannot create {path}: {reason}; give a file in a folder "
                "that exists and that you can write"
            )
        return
    with path.open("rb") as db:
        header = db.read(16)
    if header and header != b"SQLite format 3\x00":
        raise StudyStorageError(
            f"--optuna-storage {path} is not a SQLite database; give another file"
        )


OPTUNA_TABLES = {"studies", "trials", "version_info"}  # tables every Optuna storage has


def _study_names(url: str) -> set[str]:
    """Study names in the database, read without creating Optuna's tables."""
    import sqlalchemy

    connect_args = {"connect_timeout": CONNECT_TIMEOUT_S} if url.startswith("postgres") else {}
    engine = sqlalchemy.create_engine(url, connect_args=connect_args)
    try:
        with engine.connect() as db:
            tables = set(sqlalchemy.inspect(db).get_table_names())
            if tables and not OPTUNA_TABLES <= tables:
                raise StudyStorageError(
                    f"the database {redacted(url)} holds another application's tables "
                    f"({', '.join(sorted(tables)[:5])}), not an Optuna storage; give a new "
                    "database or file for --optuna-storage"
                )
            if not tables:
                return set()
            return set(db.execute(sqlalchemy.text("SELECT study_name FROM studies")).scalars())
    except sqlalchemy.exc.SQLAlchemyError as err:
        reason = str(getattr(err, "orig", None) or err).strip().splitlines()[0][:200]
        raise StudyStorageError(
            f"cannot reach the Optuna storage {url} ({reason}); start the database, check "
            "the URL, and give the password in PGPASSFILE or PGPASSWORD"
        ) from None
    finally:
        engine.dispose()


def directions(url: str, study: str) -> list[str]:
    """The study's objective directions (MAXIMIZE or MINIMIZE, in objective order), read
    without writing to its database."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as db:
            rows = db.execute(
                sqlalchemy.text(
                    "SELECT d.direction FROM study_directions d JOIN studies s "
                    "ON s.study_id = d.study_id WHERE s.study_name = :name ORDER BY d.objective"
                ),
                {"name": study},
            ).scalars()
            return [str(getattr(row, "name", row)) for row in rows]
    except sqlalchemy.exc.SQLAlchemyError as err:
        reason = str(getattr(err, "orig", None) or err).strip().splitlines()[0][:200]
        raise StudyStorageError(f"cannot read the study {study!r} in {url} ({reason})") from None
    finally:
        engine.dispose()


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's storage for `url`; a server's connections are checked before each use, so a
    database restart between trials costs a reconnect, not the search."""
    import optuna

    engine_kwargs = {"pool_pre_ping": True} if not url.startswith("sqlite") else {}
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)


def redacted(url: str) -> str:
    return re.sub(r"^([^/]*//[^/@:]*):[^/@]*@", r"\1:***@", url)
