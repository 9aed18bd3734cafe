"""People who sign in with a name and password: set-password links, sessions, revocation."""
