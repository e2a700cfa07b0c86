"""Local mode: a Letta server installed into its own virtualenv and started on loopback, with its kit."""
