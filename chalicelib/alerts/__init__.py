"""Alerts: rules that watch meters, agents and use (rules: /alerts), the scheduled evaluation that turns
them into events (evaluator), the events' history (events: /alerts/events), and their delivery through a
queue (delivery) as signed webhooks (webhooks) or e-mails through SNS (mail). Webhook secrets are kept
encrypted with KMS (sealing)."""
