"""Who calls: projects and their user accounts (accounts), account keys (apikeys), password hashing
(passwords), login and per-request authentication (auth), the login throttle (throttle), login
sessions (sessions) and the project's scoped keys (scoped_keys, /keys)."""
