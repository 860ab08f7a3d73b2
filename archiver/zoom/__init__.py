"""Talking to Zoom: the REST client, OAuth, and the shared per-label rate budgets."""
