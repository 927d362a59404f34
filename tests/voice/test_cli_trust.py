"""`voice trust USER FINGERPRINT` for someone not yet a contact: the key comes from a real
server and is pinned, verified, only if it has the fingerprint USER gave out of band."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

from tests.voice.cli_harness import signaling_server
from voice.cli import main
from voice.crypto.contacts import ContactBook, TrustState
from voice.crypto.identity import Identity
from voice.exitcodes import ExitCode
from voice.net.client import SignalingClient


async def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await asyncio.to_thread(main, list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


async def test_a_new_contact_is_pinned_verified_only_under_its_fingerprint(tmp_path: Path) -> None:
    conf = tmp_path / "alice"
    Identity.load_or_create(conf / "identity.key")
    carol = Identity.generate()
    async with signaling_server() as url:
        client = await SignalingClient.connect(url, "carol", carol.public_key, carol.sign)
        await client.close()  # carol's name is hers now: the server knows her key
        base = ("--config-dir", str(conf), "--server", url, "--user", "alice", "trust", "carol")

        wrong = Identity.generate().fingerprint.machine  # e.g. a server that swapped her key
        code, _, err = await run(*base, wrong)
        assert code == ExitCode.USAGE and "nothing was pinned" in err, err
        assert ContactBook(conf / "contacts.json", server=url).get("carol") is None

        code, out, err = await run(*base, *carol.fingerprint.human.split())
        assert code == ExitCode.OK, err
        contact = ContactBook(conf / "contacts.json", server=url).get("carol")
        assert contact is not None and contact.public_key == carol.public_key
        assert contact.state is TrustState.VERIFIED and "carol is now verified" in out

        code, _, err = await run(*base[:-1], "nobody", carol.fingerprint.machine)
        assert code == ExitCode.UNKNOWN_USER, err
