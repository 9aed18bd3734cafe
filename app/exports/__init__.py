"""Exports: a survey's stories, codings, suggestions and adjudications as CSV, JSONL or xlsx."""
