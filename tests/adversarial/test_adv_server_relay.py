"""Another deployment at a pinned address gets no signature from the CLI.

Whoever controls the address we dial (a hijacked name, a hostile operator) can put another
server there. The CLI pins each address's server id on first login (``servers.json``) and
refuses to sign a challenge with another id. The id is random per deployment: the name, which
the old pin used, is the default "voice-signaling" on both servers here, as on most.

Here the address is a TCP relay on loopback (plain ws://, so no certificate binds the login):
first in front of "mine" (the server the user signed up with), then switched to "theirs"
(another real server). The control shows what the relay gains when nothing is pinned. The
certificate binding that stops a relay even on first contact is in
``test_adv_tls_login_relay.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

from signaling.server import serve_signaling
from tests.integration.conftest import server_config
from tests.integration.recording_proxy import RecordingProxy
from tests.voice.cli_harness import run_voice
from voice.exitcodes import ExitCode

HEADLESS = ("--silence", "--no-output", "--no-prompt", "--timeout", "1")


async def test_the_cli_refuses_a_relayed_challenge_from_another_server(tmp_path: Path) -> None:
    async with (
        serve_signaling(server_config()) as mine,
        serve_signaling(server_config()) as theirs,
    ):
        assert mine.name == theirs.name == "voice-signaling"  # names cannot tell them apart
        relay = await RecordingProxy(mine.port).start()
        try:
            conf = tmp_path / "bob"
            first = await run_voice(conf, "listen", *HEADLESS, server=relay.url, user="bob")
            assert first.proc.returncode == ExitCode.NO_ANSWER, first.stdout + first.stderr
            pins = json.loads((conf / "servers.json").read_text())
            assert pins == {relay.url: {"name": mine.name, "id": mine.identity.server_id}}
            assert (conf / "servers.json").stat().st_mode & 0o777 == 0o600

            relay.target_port = theirs.port  # the address now leads to another server
            again = await run_voice(conf, "listen", *HEADLESS, server=relay.url, user="bob")
            assert again.proc.returncode == ExitCode.LOGIN_REFUSED, again.stdout + again.stderr
            assert repr(theirs.identity.server_id) in again.stderr
            assert repr(mine.identity.server_id) in again.stderr
            assert "Traceback" not in again.stderr
            assert not theirs.router.registry.exists("bob")  # no signature reached it

            # Control: a user with nothing pinned for that address signs, and is logged in there.
            fresh = await run_voice(
                tmp_path / "carol", "listen", *HEADLESS, server=relay.url, user="carol"
            )
            assert fresh.proc.returncode == ExitCode.NO_ANSWER, fresh.stdout + fresh.stderr
            assert theirs.router.registry.exists("carol")
        finally:
            await relay.close()
