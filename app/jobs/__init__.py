"""The job queue kept in the database, and its API."""
