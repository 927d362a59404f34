"""Attacks 2 (eavesdropper, forward secrecy), 3 (constant bitrate), 4 (log hygiene).

All on one real recorded call (tests/adversarial/recorded_call.py): two real phones, relay-only
through a real coturn whose address the malicious server chose, with a recording UDP forwarder
in front of it (the eavesdropper), every signaling frame recorded by the server, every log
record at DEBUG captured, and the identity key files read back after the call.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from aiortc.rtp import RtpPacket
from nacl.bindings import crypto_scalarmult

from tests.adversarial.leakscan import (
    candidate_keys,
    decoded_runs,
    decrypt_stream,
    decrypts,
    encoded_forms,
    find_any,
    keys_that_decrypt,
    leak_needles,
    varied,
    windows,
)
from tests.adversarial.recorded_call import Recording, record_call
from tests.adversarial.udp_forwarder import is_rtcp, media_packets
from voice.audio.base import pcm_to_array
from voice.call import messages as m
from voice.crypto import kdf
from voice.crypto._bytes import sha256
from voice.crypto.callenvelope import is_call_envelope, open_call
from voice.crypto.envelope import open_envelope
from voice.crypto.identity import Identity, x25519_public_of
from voice.crypto.keyagreement import encode_transcript
from voice.crypto.sas import Sas
from voice.errors import BadEnvelope
from voice.media.opus import OpusDecoder


@pytest.fixture(scope="module")
def rec(tmp_path_factory: pytest.TempPathFactory) -> Recording:
    return record_call(tmp_path_factory.mktemp("recorded-call"))


def keys_of(rec: Recording, user: str) -> tuple[bytes, bytes]:
    (pair,) = rec.keys[user].by_call[rec.call_id]
    return pair


def rtp_of(rec: Recording, user: str) -> list[bytes]:
    """The SRTP (not SRTCP) packets ``user`` sent, as the eavesdropper recorded them."""
    sent = set(rec.sent_by_phone[user])
    return [p for p in media_packets(rec.datagrams) if p in sent and not is_rtcp(p)]


# ---- 2. the eavesdropper -------------------------------------------------------------------


def test_the_eavesdropper_recorded_the_whole_media_path(rec: Recording) -> None:
    up, down = media_packets(rec.datagrams, "up"), media_packets(rec.datagrams, "down")
    sent = rec.sent_by_phone["alice"] + rec.sent_by_phone["bob"]
    assert len(sent) > 200
    assert set(sent) <= set(up)  # every datagram a phone sent crossed the forwarder ...
    assert len(set(down) & set(sent)) >= 0.95 * len(set(sent))  # ... and came back to a phone
    print(f"eavesdropper: {len(rec.datagrams)} datagrams, {len(up)} media packets recorded")


def test_the_per_call_keys_decrypt_the_recording(rec: Recording) -> None:
    """Positive control: the recording is decryptable with the right keys, so a leak shows."""
    for user, other in (("alice", "bob"), ("bob", "alice")):
        tx, _ = keys_of(rec, user)
        _, other_rx = keys_of(rec, other)
        assert tx == other_rx
        packets = rtp_of(rec, user)
        assert len(packets) > 100
        assert all(plain is not None for plain in decrypt_stream(tx, packets))
        assert decrypts(keys_of(rec, other)[0], packets[0]) is None
    # And the leak detector finds a key planted anywhere in the server's records.
    key = keys_of(rec, "alice")[0]
    for planted in (b"x" + key + b"y", b'{"k":"' + key.hex().encode() + b'"}'):
        assert keys_that_decrypt(candidate_keys([planted]), rtp_of(rec, "alice")[:1]) == [key]


def probes(rec: Recording) -> list[bytes]:
    return rtp_of(rec, "alice")[:2] + rtp_of(rec, "bob")[:2]


def test_nothing_the_server_saw_decrypts_the_recording(rec: Recording) -> None:
    material = [*rec.server_seen, rec.logs.encode()]
    candidates = candidate_keys(material)
    assert len(candidates) > 10_000
    assert keys_that_decrypt(candidates, probes(rec)) == []
    print(f"server material: {len(candidates)} candidate keys tried, none decrypts")


def test_disclosed_identity_keys_do_not_decrypt_the_recording(rec: Recording) -> None:
    """Forward secrecy: the long-term keys, stolen after the call, open the set-up envelopes
    the server recorded (so the attacker learns both ephemeral *public* keys, the continuity
    fields and both descriptions: the whole transcript) but no SRTP key follows, and the
    envelopes sealed with the call's own keys (accept, hangup) stay closed (audit finding 10)."""
    ids = {u: Identity.from_seed(seed) for u, seed in rec.identity_seeds.items()}
    msgs: dict[str, m.Message] = {}
    plaintexts: list[bytes] = []
    closed = 0
    for e in rec.envelopes:
        try:
            opened = open_envelope(ids[e.to], e.body)
        except BadEnvelope:
            assert is_call_envelope(e.body)
            closed += 1
            continue
        if opened.header.call_id == rec.call_id:
            msgs.setdefault(m.decode(opened.payload).TYPE, m.decode(opened.payload))
            plaintexts.append(opened.payload)
    assert set(msgs) == {"offer", "ringing", "reveal"}  # the thief reads the set-up only
    assert closed >= 2  # accept and the hangup, at least
    # Control: the call's own keys (erased after the call; the test kept copies) open them.
    opened_late = [
        m.decode(open_call(rec.keys[e.to].envelope_rx[rec.call_id], e.body)[1]).TYPE
        for e in rec.envelopes
        if is_call_envelope(e.body)
    ]
    assert "accept" in opened_late and "hangup" in opened_late
    offer, ringing, reveal = msgs["offer"], msgs["ringing"], msgs["reveal"]
    assert isinstance(offer, m.Offer) and isinstance(ringing, m.Ringing)
    assert isinstance(reveal, m.Reveal)
    transcript = encode_transcript(
        call_id=rec.call_id,
        caller=rec.identity_public["alice"],
        callee=rec.identity_public["bob"],
        caller_name="alice",
        callee_name="bob",
        caller_versions=offer.versions,
        callee_versions=ringing.versions,
        version=ringing.version or 0,
        eph_a=reveal.eph_a,
        eph_b=ringing.eph_b,
        kem_key=offer.mlkem_ek,
        kem_ciphertext=ringing.mlkem_ct,
        continuity_a=reveal.continuity_a,
        continuity_b=ringing.continuity_b,
        caller_description=m.canonical_description(offer.description),
        callee_description=m.canonical_description(ringing.description),
    )
    th = sha256(transcript)
    # The attacker has the exact transcript: it reproduces the SAS the users saw.
    assert Sas.from_transcript_hash(th, rec.sas["alice"].bits) == rec.sas["alice"]
    sk = {u: bytes(i.x25519_private_key()) for u, i in ids.items()}
    pk = {u: x25519_public_of(k) for u, k in rec.identity_public.items()}
    shared = [
        crypto_scalarmult(sk["alice"], ringing.eph_b),  # identity x ephemeral, both ways
        crypto_scalarmult(sk["bob"], reveal.eph_a),
        crypto_scalarmult(sk["alice"], pk["bob"]),  # the static (envelope) DH
        reveal.eph_a,
        ringing.eph_b,
        th,
        b"",
    ]
    labels = (kdf.LABEL_GCM_CALLER_TO_CALLEE, kdf.LABEL_GCM_CALLEE_TO_CALLER)
    derived = {
        kdf.derive(ikm + rs, label, context, 44)
        for ikm in shared
        for rs in (b"", *rec.identity_seeds.values())
        for label in labels
        for context in (th, b"")
        if ikm + rs
    }
    candidates = derived | candidate_keys([*plaintexts, *rec.identity_seeds.values()])
    assert keys_that_decrypt(candidates, probes(rec)) == []
    print(f"forward secrecy: {len(candidates)} keys from the disclosed identities, none decrypts")


# ---- 3. constant bitrate --------------------------------------------------------------------


def test_every_audio_packet_has_the_same_size_through_speech_and_silence(rec: Recording) -> None:
    sizes: set[int] = set()
    for user in ("alice", "bob"):
        tx, _ = keys_of(rec, user)
        decoder = OpusDecoder()
        loud = quiet = 0
        plain = decrypt_stream(tx, rtp_of(rec, user))
        packets = sorted((RtpPacket.parse(p) for p in plain if p), key=lambda r: r.sequence_number)
        for srtp, rtp in zip(rtp_of(rec, user), packets, strict=False):
            sizes.add(len(srtp))
            level = float(abs(pcm_to_array(decoder.decode(rtp.payload)).astype(int)).mean())
            loud += level > 200
            quiet += level < 5
        decoder.close()
        print(f"{user}: {loud} packets of sound, {quiet} of silence")
        assert loud >= 40 and quiet >= 40
    assert len(sizes) == 1, f"audio SRTP packet sizes vary: {sorted(sizes)}"
    rtcp = [p for p in media_packets(rec.datagrams) if is_rtcp(p)]
    assert rtcp  # RTCP exists, is told apart by packet type, and is not counted as audio
    print(f"constant bitrate: every audio packet is {sizes.pop()} bytes; {len(rtcp)} RTCP")


# ---- 4. secrets hygiene ---------------------------------------------------------------------


def log_haystack(logs: str) -> bytes:
    raw = logs.encode()
    return raw + b"\n" + b"\n".join(decoded_runs(raw))


def test_no_secret_or_audio_in_the_debug_logs(rec: Recording) -> None:
    assert "voice.phone" in rec.logs and "websockets" in rec.logs  # DEBUG really was captured
    secrets: dict[str, bytes] = {}
    for user in ("alice", "bob"):
        secrets[f"{user} identity seed"] = rec.identity_seeds[user]
        tx, rx = keys_of(rec, user)
        for name, key in (("tx", tx), ("rx", rx)):
            secrets[f"{user} srtp {name} key"] = key[:32]
            secrets[f"{user} srtp {name} salt"] = key[32:]
        for i, other in enumerate(rec.keys[user].other_secrets):
            secrets[f"{user} secret {i}"] = other
    ids = {u: Identity.from_seed(s) for u, s in rec.identity_seeds.items()}
    for e in rec.envelopes:
        if is_call_envelope(e.body):
            continue  # sealed with a call key: none of the messages with secrets in them
        msg = m.decode(open_envelope(ids[e.to], e.body).payload)
        if isinstance(msg, m.Reveal):
            secrets["eph_a"], secrets["continuity_a"] = msg.eph_a, msg.continuity_a
        if isinstance(msg, m.Ringing):
            secrets["eph_b"], secrets["continuity_b"] = msg.eph_b, msg.continuity_b
        if isinstance(msg, m.Offer):
            secrets["commitment"] = msg.commitment
    assert {"eph_a", "eph_b"} <= set(secrets)
    haystack = log_haystack(rec.logs)
    assert find_any(haystack, leak_needles(secrets)) == set()
    # The SAS, in every rendering.
    sas = rec.sas["alice"]
    assert " ".join(sas.words) not in rec.logs and "".join(sas.emoji) not in rec.logs
    assert not re.search(rf"(?<!\d){sas.digits}(?!\d)", rec.logs)
    # Audio: 32-byte windows of the PCM sent and of the Opus payloads on the wire.
    audio: dict[bytes, str] = {}
    for user, frames in rec.pcm_sent.items():
        for w in windows(b"".join(frames), 32, 16):
            if varied(w):
                audio[w] = f"{user} pcm"
        tx, _ = keys_of(rec, user)
        for plain in decrypt_stream(tx, rtp_of(rec, user)):
            assert plain is not None
            for w in windows(RtpPacket.parse(plain).payload, 32, 8):
                audio[w] = f"{user} opus"
    assert len(audio) > 10_000
    assert find_any(haystack, audio) == set()
    # The scanner does find a planted leak in each encoding.
    some_pcm = next(w for w, name in audio.items() if name == "alice pcm")
    forms = encoded_forms(secrets["eph_a"]) | {some_pcm.hex().encode()}
    for form in (f for f in forms if f.isascii()):  # logs are text: raw bytes show as repr
        planted = log_haystack(rec.logs + " " + form.decode())
        assert find_any(planted, {**leak_needles(secrets), **audio})
    print(
        f"log hygiene: {len(rec.logs)} chars of DEBUG logs; {len(secrets)} secrets, "
        f"{len(audio)} audio windows: none found"
    )


def test_key_and_contact_files_after_the_call_are_0600(rec: Recording) -> None:
    for person in rec.people.values():
        for path in (person.contacts.path, Path(person.contacts.path).parent / "identity.key"):
            assert path.stat().st_mode & 0o777 == 0o600, path
