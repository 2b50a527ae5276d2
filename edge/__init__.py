"""Raspberry Pi edge agent."""
