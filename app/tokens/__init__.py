"""API tokens: admins create them for people; each is shown once."""
