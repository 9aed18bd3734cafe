"""Surveys: definitions, links and invitations (researcher side) and the respondent's form."""
