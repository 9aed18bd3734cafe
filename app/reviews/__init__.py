"""The review workflow: coding, blind double coding, adjudication, agreement, audit."""
