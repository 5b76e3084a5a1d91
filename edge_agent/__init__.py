"""Intellimeter edge agent: reads the site's Modbus meters and delivers every reading to the cloud.

See docs/edge-agent.md.
"""

__version__ = "1.1.0"  # sent to the cloud in PUT /status
