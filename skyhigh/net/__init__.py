"""Outbound HTTP to URLs a client chose (`audio_url`, webhook targets), guarded against SSRF.

A client that names a URL makes this server send a request from inside its network, so every
such request goes through here:

- `policy`: which URLs and addresses may be contacted (the cloud metadata address never);
- `allowlist`: host allow-list entries (`AUDIO_URL_ALLOWED_HOSTS`);
- `resolve`: DNS with the policy applied to every answer;
- `pinned`: the one client factory, and requests sent to the address that was checked;
- `redact`: URLs fit for messages, logs and API answers;
- `errors`: refused (final) versus unreachable (worth retrying).
"""
