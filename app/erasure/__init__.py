"""Erasure: an admin deletes a story, or its respondent withdraws it with their receipt code."""
