"""CIT service: collect, suggest, confirm and report critical incidents."""
