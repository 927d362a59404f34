"""Call set-up, pure: no asyncio, no sockets, no files of its own (the contact book and the
replay guard come in as parameters). messages (wire payloads), events (vocabulary), table and
machine (one call), routing (busy and glare across calls), inbound (a delivery -> actions),
outbound (sealing a call's messages), agreement (the key-agreement steps), health (is the
media alive). The asyncio shell is :mod:`voice.phone`. See docs/call-states.md."""
