"""Call set-up, pure: messages (wire payloads), events (vocabulary), table (transitions),
machine (one call), phone (glare and busy across calls). See docs/call-states.md."""
