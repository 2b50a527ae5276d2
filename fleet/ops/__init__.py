"""Ops: alert rules, alerts, notifications, metrics, history and retention (docs/ops.md)."""
