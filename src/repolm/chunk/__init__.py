"""The chunk stage: code units from tree-sitter, change labels per commit."""
