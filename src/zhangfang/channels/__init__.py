"""Channels: one adapter per way money comes in or goes out (banks direct, payment companies indirect)."""
