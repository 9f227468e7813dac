"""A run's outcomes, spilled to an unnamed temporary file so memory does not grow with them.

A 100,000-record run decides tens of thousands of people; the report needs their counts at
once and the outcomes themselves only when it renders (the dry-run table, `--output`,
`--json`). The log writes one JSON line per outcome to a file that is unlinked as it is
created: nothing is left behind, however the process ends, and a dry run writes nothing
to the state DB. Each pass reads the file again from the start.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Generic, TypeVar

from flipsync.json_fields import JSONObject, StoredDataError

T = TypeVar("T")
_CHUNK = 1 << 16


class OutcomeLog(Generic[T]):
    """An append-only sequence of values, kept on disk as NDJSON; iterate it as often as needed."""

    def __init__(
        self,
        encode: Callable[[T], JSONObject],
        decode: Callable[[Mapping[str, object]], T],
        directory: Path | None = None,
    ) -> None:
        self._encode = encode
        self._decode = decode
        self._directory = directory
        self._file: IO[bytes] | None = None
        self._size = 0
        self._count = 0

    def extend(self, items: Iterable[T]) -> None:
        lines = b"".join(
            json.dumps(self._encode(item), ensure_ascii=False).encode("utf-8") + b"\n"
            for item in items
        )
        if not lines:
            return
        if self._file is None:
            self._file = _spill_file(self._directory)
        self._file.write(lines)
        self._size += len(lines)
        self._count += lines.count(b"\n")

    def __len__(self) -> int:
        return self._count

    def __bool__(self) -> bool:
        return self._count > 0

    def __iter__(self) -> Iterator[T]:
        """The values in the order they were added (those added before this pass began)."""
        if self._file is None:
            return
        self._file.flush()
        fd, end, pos, rest = self._file.fileno(), self._size, 0, b""
        while pos < end:
            # pread leaves the file's own offset (where extend writes) alone.
            chunk = os.pread(fd, min(_CHUNK, end - pos), pos)
            if not chunk:
                raise StoredDataError("the run's outcome spill file was cut short")
            pos += len(chunk)
            *lines, rest = (rest + chunk).split(b"\n")
            for line in lines:
                data = json.loads(line)
                if not isinstance(data, dict):
                    raise StoredDataError("the run's outcome spill file holds a non-object line")
                yield self._decode(data)

    def close(self) -> None:
        """Drop the spill (also done when the log is garbage-collected or the process ends)."""
        if self._file is not None:
            self._file.close()
            self._file = None
            self._size = self._count = 0


def _spill_file(directory: Path | None) -> IO[bytes]:
    """An unnamed file: 0600 and unlinked at once, so personal data never outlives the run.

    Beside the state DB when that directory takes it (the same disk, not a RAM-backed /tmp),
    else in the system's temporary directory.
    """
    if directory is not None:
        with contextlib.suppress(OSError):  # e.g. a read-only directory: use the system's
            return tempfile.TemporaryFile(dir=directory, prefix=".flipsync-outcomes-")
    return tempfile.TemporaryFile(prefix=".flipsync-outcomes-")
