"""One typed schema for the whole pipeline. Every section rejects unknown keys.

Sections are added as stages are built; a key for a stage that does not exist yet is an error,
so a typo never silently falls back to a default.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class MineConfig(Section):
    """How history is read: which refs, how diffs are made, what is kept of them."""

    refs: list[str] = Field(
        default=["refs/heads", "refs/tags", "refs/remotes"],
        description="Ref prefixes whose commits are mined (HEAD is always included). "
        "Add 'refs/pull' for a GitHub mirror, 'refs/stash' for stashes.",
    )
    merge_diff: Literal["first-parent", "none"] = Field(
        default="first-parent",
        description="Merge commits: diff against the first parent, or record no file changes.",
    )
    detect_renames: bool = Field(default=True, description="Rename detection (git -M).")
    detect_copies: bool = Field(default=False, description="Copy detection (git -C).")
    max_patch_bytes: int = Field(
        default=1_000_000,
        ge=0,
        description="Patch text kept per file change; longer patches are cut at a line end "
        "and flagged patch_truncated. 0 keeps no patch text.",
    )
    max_blob_bytes: int = Field(
        default=2_000_000,
        ge=1024,
        description="Files larger than this are not diffed (git never reads them whole) "
        "and are flagged is_large.",
    )
    jobs: int = Field(
        default=0,
        ge=0,
        description="git processes run in parallel; 0 picks one per CPU core, at most 4.",
    )
    branch_lineage: bool = Field(
        default=True,
        description="Record which branches' first-parent lineage contains each commit.",
    )
    max_lineage_branches: int = Field(
        default=200,
        ge=0,
        description="Compute lineages only when the repository has at most this many branches.",
    )


class Config(Section):
    """The resolved configuration of a run."""

    mine: MineConfig = Field(default_factory=MineConfig)
