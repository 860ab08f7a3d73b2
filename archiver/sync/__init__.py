"""Session discovery, per-session sync workers and the supervisor that schedules them."""
