"""Billing: tariffs in the OpenEI URDB shape (/tariffs) and the bills they price (GET /bill, /file?bill=1)."""
