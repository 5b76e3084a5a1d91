"""Intellimeter edge agent: reads the site's Modbus meters and delivers every reading to the cloud.

See docs/edge-agent.md.
"""
