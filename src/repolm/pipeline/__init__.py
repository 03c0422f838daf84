"""The stage pipeline: registry, fingerprints and caching, manifest."""
