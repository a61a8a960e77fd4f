"""Files at a URL: a local directory, or a bucket prefix on S3 (or an S3-compatible server),
through pyarrow's filesystems. The event lake (service/events/lake.py) and the offline feature
data (flows/featurestore/) keep their files here, so that a batch worker on another host
reads and writes them by URL, not through a shared disk.

Guarantees:
- A written file is visible only whole. Locally it is written under a dot-name that listings
  ignore, fsynced, renamed into place (replacing a file of that name), and its directory
  fsynced; on S3 an object appears when its upload completes.
- Listings ignore names starting with "." or "_": half-written files and what is kept beside
  the data (checkpoints) are never taken for data.

The endpoint and credentials of S3 come from the standard AWS variables (AWS_ENDPOINT_URL for
an S3-compatible server), as for every other AWS client.
"""

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

HIDDEN = (".", "_")


class Storage:
    """A root directory or bucket prefix; every path below is a '/'-joined string under it."""

    def __init__(self, url: str) -> None:
        self.url = url
        if "://" in url and not url.startswith("file://"):
            filesystem, root = pafs.FileSystem.from_uri(url)
            endpoint = os.environ.get("AWS_ENDPOINT_URL")
            if isinstance(filesystem, pafs.S3FileSystem) and endpoint and "endpoint" not in url:
                scheme, _, host = endpoint.partition("://")
                filesystem = pafs.S3FileSystem(endpoint_override=host, scheme=scheme)
            self.fs, self.root, self.local = filesystem, root.rstrip("/"), False
        else:
            path = Path(url.removeprefix("file://")).resolve()
            self.fs, self.root, self.local = pafs.LocalFileSystem(), str(path), True

    def path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def exists(self, path: str) -> bool:
        return self.fs.get_file_info(path).type == pafs.FileType.File

    def _listing(self, path: str) -> list[pafs.FileInfo]:
        """What is in a directory; nothing when `path` is missing or not a directory (a stray
        file where a directory should be is not ours, and must not stop a reader)."""
        if self.fs.get_file_info(path).type != pafs.FileType.Directory:
            return []
        return self.fs.get_file_info(pafs.FileSelector(path))

    def list_dirs(self, path: str, prefix: str = "") -> list[str]:
        """Names of the directories in `path` that start with `prefix`, without it."""
        return sorted(
            info.base_name.removeprefix(prefix)
            for info in self._listing(path)
            if info.type == pafs.FileType.Directory
            and info.base_name.startswith(prefix)
            and not info.base_name.startswith(HIDDEN)
        )

    def list_files(self, path: str, suffix: str = ".parquet") -> list[str]:
        """Paths of the files in `path` whose names end with `suffix`, sorted."""
        return sorted(
            info.path
            for info in self._listing(path)
            if info.type == pafs.FileType.File
            and info.base_name.endswith(suffix)
            and not info.base_name.startswith(HIDDEN)
        )

    def write_once(self, files: Sequence[tuple[str, str, bytes]]) -> None:
        """Write (directory, name, data) files, each visible only whole (replacing a file of
        that name), all durable on return.

        Locally every file is written under a hidden name first, then all are fsynced, then
        renamed, then each directory is fsynced once: one journal flush serves the batch.
        """
        if not self.local:
            for directory, name, data in files:
                self.fs.create_dir(directory, recursive=True)
                with self.fs.open_output_stream(f"{directory}/{name}") as out:
                    out.write(data)
            return
        staged = []
        for directory, name, data in files:
            folder = Path(directory)
            folder.mkdir(parents=True, exist_ok=True)
            hidden = folder / f".{name}.tmp"
            with open(hidden, "wb") as f:
                f.write(data)
            staged.append((hidden, folder / name))
        for hidden, _ in staged:
            _fsync(hidden)
        for hidden, final in staged:
            os.replace(hidden, final)
        for folder in {final.parent for _, final in staged}:
            _fsync(folder)  # the renames survive a crash too

    def write_table(self, path: str, table: pa.Table, **options: object) -> None:
        """One Parquet file at `path`, visible only whole; `options` go to pq.write_table."""
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, **options)
        directory, _, name = path.rpartition("/")
        self.write_once([(directory, name, sink.getvalue().to_pybytes())])

    def read_table(self, path: str, schema: pa.Schema | None = None) -> pa.Table:
        return pq.read_table(path, filesystem=self.fs, schema=schema)

    def read_text(self, path: str) -> str | None:
        """A small file's text; None when there is none."""
        if not self.exists(path):
            return None
        with self.fs.open_input_stream(path) as source:
            return source.read().decode()

    def copy_to(self, path: str, destination: Path) -> None:
        """A file as a local file: a hard link when both are on this disk (nothing copied),
        else a download."""
        destination.parent.mkdir(parents=True, exist_ok=True)
        if self.local:
            try:
                os.link(path, destination)
                return
            except OSError:  # another device: copy it
                shutil.copyfile(path, destination)
                return
        pafs.copy_files(
            path,
            str(destination),
            source_filesystem=self.fs,
            destination_filesystem=pafs.LocalFileSystem(),
        )

    def delete(self, paths: Sequence[str]) -> None:
        for path in paths:
            self.fs.delete_file(path)

    def delete_dir(self, path: str) -> None:
        if self.fs.get_file_info(path).type == pafs.FileType.Directory:
            self.fs.delete_dir(path)


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
