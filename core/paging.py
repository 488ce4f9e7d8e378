"""Where queues page messages out past their memory budget, and the thread that writes there.

Page files are scratch: a queue writes the messages it holds beyond its budget (see
``Queue.page``) and reads them back before delivery; nothing reads them after a restart. The
directory is ``paging`` in the disk store's data directory (so the free-disk alarm watches it),
emptied at every start, or a temporary directory with a store that writes nothing. One worker
thread per broker writes and deletes the files, in the order jobs are given.
"""

from __future__ import annotations

import itertools
import logging
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

log = logging.getLogger("warrenmq.paging")


class PagingSpace:
    """The broker's paging directory and thread, both made on first use."""

    def __init__(self, data_dir: Path | None) -> None:
        #: the directory under which queues page out (None until first asked, with no store)
        self._root = data_dir / "paging" if data_dir is not None else None
        self._temporary = data_dir is None
        self._made = False
        self._numbers = itertools.count(1)
        self._executor: ThreadPoolExecutor | None = None

    def clear(self) -> None:
        """Remove what a previous run left (at start: page files never outlive a broker)."""
        if self._root is not None and not self._temporary:
            shutil.rmtree(self._root, ignore_errors=True)

    def directory(self) -> Path:
        """A new directory name for one queue's page files (created by its first write)."""
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix="warrenmq-paging-"))
        self._made = True
        return self._root / str(next(self._numbers))

    def run(self, job: Callable[[], Any]) -> None:
        """Run ``job`` on the paging thread, after the jobs given before it."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="warrenmq-paging")
        self._executor.submit(_logged, job)

    def close(self) -> None:
        """The broker stops: finish the jobs, then remove every page file."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        if self._made and self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)


def _logged(job: Callable[[], Any]) -> None:
    try:
        job()
    except OSError as exc:  # a run not written stays in memory (its bytes): nothing is lost
        log.warning("paging: %s", exc)
