"""Codebooks: versioned code definitions, their import/export, and rename/merge/split of codes."""
