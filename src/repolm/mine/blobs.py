"""What the diff text cannot say about a file change, settled from the object store in batches.

A pure rename or a mode change prints no content lines, a blob over `core.bigFileThreshold` is
printed as binary, and a symlink's target is only its blob. For those few rows the blob sizes
are read from object headers, and small blobs (never more than `max_blob_bytes`) are read to
tell binary from text and to record symlink targets. Large blobs are never read.
"""

from __future__ import annotations

from repolm.gitrepo import Repo
from repolm.mine.model import MODE_SYMLINK, looks_binary


def settle_blobs(repo: Repo, c: dict[str, list], max_blob_bytes: int) -> None:
    """Fill `is_large`, `is_binary` (for rows without content lines) and `symlink_target`."""
    rows = range(len(c["sha"]))
    quiet = [
        i
        for i in rows
        if not c["is_submodule"][i] and not c["additions"][i] and not c["deletions"][i]
    ]
    links = [i for i in rows if c["is_symlink"][i]]
    if not quiet and not links:
        return
    wanted = {b for i in quiet + links for b in (c["old_blob"][i], c["new_blob"][i]) if b}
    sizes = repo.blob_sizes(sorted(wanted))

    to_read: dict[int, str] = {}
    for i in quiet:
        blobs = [b for b in (c["old_blob"][i], c["new_blob"][i]) if b]
        if max((sizes.get(b, 0) for b in blobs), default=0) > max_blob_bytes:
            c["is_large"][i] = c["is_binary"][i] = True
        elif not c["is_binary"][i] and not c["is_symlink"][i] and blobs:
            blob = c["new_blob"][i] or c["old_blob"][i]
            if sizes.get(blob, 0) > 0:
                to_read[i] = blob
    for i in links:
        blob = c["new_blob"][i] if c["new_mode"][i] == MODE_SYMLINK else c["old_blob"][i]
        if blob and sizes.get(blob, max_blob_bytes + 1) <= max_blob_bytes:
            to_read[i] = blob
    if not to_read:
        return
    contents = repo.read_blobs(sorted(set(to_read.values())))
    for i, blob in to_read.items():
        data = contents.get(blob)
        if data is None:
            continue
        if c["is_symlink"][i]:
            c["symlink_target"][i] = data.decode("utf-8", "replace")
        else:
            c["is_binary"][i] = looks_binary(data)
