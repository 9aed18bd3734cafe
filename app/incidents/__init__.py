"""Incidents: the stories respondents submit, and how researchers read them."""
