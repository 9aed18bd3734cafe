"""Webhooks: events published in the outbox, subscriptions, signed deliveries by the worker."""
