"""Imports: stories from CSV, JSON Lines and xlsx files (CLI, or an API upload run as a job)."""
