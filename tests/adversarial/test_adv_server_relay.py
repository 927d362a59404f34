"""A server that relays another server's login challenge gets no signature from the CLI.

The login signature binds the server's name from the challenge. Whoever controls the address we
dial (a hijacked name, a hostile operator) can forward another server's challenge to us and our
signed answer to that server, and so log in there as us: receive our sealed envelopes, appear
online in our name, push our real session out. The CLI pins each server address's name on first
login (``servers.json``) and refuses to sign a challenge with another name.

Here the address is a TCP relay: first in front of "mine" (the server the user signed up with),
then switched to "theirs" (another real server). The control shows what the relay gains when
nothing is pinned.
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
        serve_signaling(server_config(name="mine")) as mine,
        serve_signaling(server_config(name="theirs")) as theirs,
    ):
        relay = await RecordingProxy(mine.port).start()
        try:
            conf = tmp_path / "bob"
            first = await run_voice(conf, "listen", *HEADLESS, server=relay.url, user="bob")
            assert first.proc.returncode == ExitCode.NO_ANSWER, first.stdout + first.stderr
            pins = json.loads((conf / "servers.json").read_text())
            assert pins == {relay.url: "mine"}
            assert (conf / "servers.json").stat().st_mode & 0o777 == 0o600

            relay.target_port = theirs.port  # the address now leads to another server
            again = await run_voice(conf, "listen", *HEADLESS, server=relay.url, user="bob")
            assert again.proc.returncode == ExitCode.LOGIN_REFUSED, again.stdout + again.stderr
            assert "'theirs'" in again.stderr and "'mine'" in again.stderr
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
