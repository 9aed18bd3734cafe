"""Follow-up with respondents who left a contact: their contact (encrypted) and their cases."""
