"""The mine stage: every commit of every branch, tag and remote, with its diffs, to Parquet."""
