"""The group security code, with commit-before-reveal (docs/group-calls.md, "The group
security code"). A protocol: this docstring is enough to reimplement it.

Numbers are big-endian: an epoch ``e`` is 8 bytes, a member index ``i`` 1 byte (0..255).
``lp(x)`` is x's length as 4 bytes, then x (voice.crypto._bytes). Per epoch, every member:

1. picks a 32-byte nonce ``n_i`` and sends ``C_i`` to every other member::

       C_i = SHA-256("voice group commit v1" || e || i || n_i)

2. once it holds the commit of every member of the roster, sends ``n_i`` to everyone. A reveal
   that does not match its commit, or arrives before every commit, fails the code (the call
   goes on, unverified); so does a member changing its commit or its nonce.
3. with every nonce in hand, computes::

       transcript = "voice group code v1" || e
                    || for each member, in increasing index order:
                       lp(UTF-8 username) || identity_pk (32) || i || F_i_pk (32)
                       || SHA-256("voice group sender key v1" || K_i) || C_i || n_i
       okm        = HKDF-SHA256(salt="voice-e2e-v1", ikm=transcript,
                                info=lp("group code") || lp(""), length=8)
       code       = the top 24 bits of okm (big-endian), shown as voice.crypto.sas shows a
                    24-bit SAS: three words (8 bits each) and four emoji (6 bits each)

``identity_pk`` is the member's Ed25519 identity public key (voice.crypto.identity), ``F_i_pk``
its frame signing public key (voice.group.frameauth), ``K_i`` its sender base key as received
for this epoch (voice.group.keys.SenderKey.commitment). Every field but the username has a
fixed length, so the transcript parses one way only.

Never logged: nonces before they are revealed, the code.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import NoReturn

from voice.crypto._bytes import constant_time_equal, lp, sha256
from voice.crypto.kdf import derive
from voice.crypto.sas import DEFAULT_SAS_BITS, Sas
from voice.errors import GroupCodeError
from voice.group.keys import MAX_INDEX

__all__ = [
    "CODE_LABEL",
    "COMMIT_LABEL",
    "NONCE_BYTES",
    "CodeMember",
    "CodeRound",
    "GroupCodeInputs",
    "commit",
    "group_code",
    "transcript",
]

COMMIT_LABEL = b"voice group commit v1"
CODE_LABEL = b"voice group code v1"
HKDF_LABEL = b"group code"
NONCE_BYTES = 32
_KEY_BYTES = 32
_OKM_BYTES = 8
MAX_EPOCH = 2**64 - 1

RandBytes = Callable[[int], bytes]


def _check_epoch(epoch: int) -> None:
    if not isinstance(epoch, int) or isinstance(epoch, bool) or not 0 <= epoch <= MAX_EPOCH:
        raise ValueError("an epoch is an integer from 0 to 2**64 - 1")


def _check_index(index: int) -> None:
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index <= MAX_INDEX:
        raise ValueError(f"a member index is an integer from 0 to {MAX_INDEX}")


def _check_bytes(name: str, value: bytes, size: int) -> None:
    if not isinstance(value, bytes) or len(value) != size:
        raise ValueError(f"the {name} is {size} bytes")


def commit(epoch: int, index: int, nonce: bytes) -> bytes:
    """``C_i``: member ``index``'s commitment to its ``nonce`` for ``epoch``."""
    _check_epoch(epoch)
    _check_index(index)
    _check_bytes("nonce", nonce, NONCE_BYTES)
    return sha256(COMMIT_LABEL + epoch.to_bytes(8, "big") + bytes([index]) + nonce)


@dataclass(frozen=True)
class CodeMember:
    """What the roster and the sender keys say about one member, before commits and reveals."""

    username: str
    identity_key: bytes
    index: int
    frame_key: bytes
    sender_key_commitment: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.username, str) or not self.username:
            raise ValueError("a username is a non-empty string")
        _check_index(self.index)
        _check_bytes("identity public key", self.identity_key, _KEY_BYTES)
        _check_bytes("frame signing public key", self.frame_key, _KEY_BYTES)
        _check_bytes("sender key commitment", self.sender_key_commitment, _KEY_BYTES)


@dataclass(frozen=True)
class GroupCodeInputs(CodeMember):
    """One member's part of the transcript: :class:`CodeMember` plus its commit and nonce."""

    commit: bytes
    nonce: bytes = field(repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_bytes("commit", self.commit, _KEY_BYTES)
        _check_bytes("nonce", self.nonce, NONCE_BYTES)


def transcript(epoch: int, members: Sequence[GroupCodeInputs]) -> bytes:
    """The transcript of the module docstring, members sorted by index whatever their order.

    Raises GroupCodeError if a nonce does not match its commit; ValueError for no members or
    two with one index.
    """
    _check_epoch(epoch)
    ordered = sorted(members, key=lambda m: m.index)
    if not ordered:
        raise ValueError("a group code needs at least one member")
    if len({m.index for m in ordered}) != len(ordered):
        raise ValueError("two members with one index")
    out = [CODE_LABEL, epoch.to_bytes(8, "big")]
    for m in ordered:
        if not constant_time_equal(commit(epoch, m.index, m.nonce), m.commit):
            raise GroupCodeError(f"the nonce of member {m.index} does not match its commit")
        out += [
            lp(m.username.encode("utf-8")),
            m.identity_key,
            bytes([m.index]),
            m.frame_key,
            m.sender_key_commitment,
            m.commit,
            m.nonce,
        ]
    return b"".join(out)


def group_code(epoch: int, members: Sequence[GroupCodeInputs]) -> Sas:
    """The group security code of ``epoch``: equal on every screen iff equal transcripts."""
    okm = derive(transcript(epoch, members), HKDF_LABEL, b"", _OKM_BYTES)
    bits = DEFAULT_SAS_BITS
    return Sas(int.from_bytes(okm, "big") >> (8 * _OKM_BYTES - bits), bits)


class CodeRound:
    """One member's commit-and-reveal for one epoch. Pure: messages in, values out.

    The round makes its own nonce: send :attr:`own_commit` at once, :meth:`own_reveal` once
    :attr:`ready_to_reveal`, feed the others' commits and reveals in, and take :meth:`code`
    once :attr:`complete`. Any protocol breach moves it to its terminal failed state
    (:attr:`failure` says why), and every later call raises GroupCodeError.
    """

    def __init__(
        self,
        epoch: int,
        indices: Iterable[int],
        own_index: int,
        *,
        randbytes: RandBytes = os.urandom,
    ) -> None:
        _check_epoch(epoch)
        self._indices = frozenset(indices)
        for index in self._indices:
            _check_index(index)
        if own_index not in self._indices:
            raise ValueError(f"member {own_index} is not in the roster of epoch {epoch}")
        self.epoch = epoch
        self.own_index = own_index
        nonce = randbytes(NONCE_BYTES)
        self._commits: dict[int, bytes] = {own_index: commit(epoch, own_index, nonce)}
        self._nonces: dict[int, bytes] = {own_index: nonce}
        self._early: dict[int, bytes] = {}  # reveals that overtook their member's commit
        self.failure: str | None = None

    def __repr__(self) -> str:
        state = self.failure or f"{len(self._commits)} commits, {len(self._nonces)} nonces"
        return f"<CodeRound epoch {self.epoch} of {len(self._indices)} members: {state}>"

    @property
    def own_commit(self) -> bytes:
        return self._commits[self.own_index]

    @property
    def ready_to_reveal(self) -> bool:
        """Every member of the roster has committed (and the round has not failed)."""
        return self.failure is None and self._commits.keys() == self._indices

    @property
    def complete(self) -> bool:
        """Every member has revealed a nonce matching its commit."""
        return self.ready_to_reveal and self._nonces.keys() == self._indices

    def own_reveal(self) -> bytes:
        """Our nonce, to send to everyone; only once every commit is in."""
        self._check_live()
        if not self.ready_to_reveal:
            raise GroupCodeError("our nonce is revealed only once every member has committed")
        return self._nonces[self.own_index]

    def add_commit(self, index: int, c: bytes) -> None:
        """Member ``index``'s commit. The same commit again is ignored; another one fails. A
        reveal of that member held back (it overtook this commit) is checked now."""
        self._check_live()
        self._check_member(index)
        _check_bytes("commit", c, _KEY_BYTES)
        held = self._commits.get(index)
        if held is None:
            self._commits[index] = c
        elif not constant_time_equal(held, c):
            self._fail(f"member {index} changed its commit")
        early = self._early.pop(index, None)
        if early is not None:
            self.add_reveal(index, early)

    def add_reveal(self, index: int, nonce: bytes) -> None:
        """Member ``index``'s nonce. Fails the round if it does not match the member's commit
        or differs from a nonce it revealed before.

        A reveal that arrives before that member's own commit is held back until the commit
        comes: messages from different members can overtake each other on the way. Accepting
        other members' reveals before every commit is in gives nobody a choice over the code:
        an honest member reveals only once it holds every commit (so every commit was made
        before its nonce was known), and ours waits for every commit too (own_reveal)."""
        self._check_live()
        self._check_member(index)
        _check_bytes("nonce", nonce, NONCE_BYTES)
        held = self._commits.get(index)
        if held is None:
            self._early[index] = nonce
            return
        if not constant_time_equal(commit(self.epoch, index, nonce), held):
            self._fail(f"the nonce of member {index} does not match its commit")
        self._nonces[index] = nonce  # equal to any earlier one: it matches the same commit

    def code(self, members: Sequence[CodeMember]) -> Sas:
        """The group code, from every roster member's :class:`CodeMember`, once complete."""
        self._check_live()
        if not self.complete:
            raise GroupCodeError("the group code needs every member's reveal")
        if sorted(m.index for m in members) != sorted(self._indices):
            raise ValueError("the members given are not the roster of this round")
        inputs = [
            GroupCodeInputs(
                m.username,
                m.identity_key,
                m.index,
                m.frame_key,
                m.sender_key_commitment,
                commit=self._commits[m.index],
                nonce=self._nonces[m.index],
            )
            for m in members
        ]
        return group_code(self.epoch, inputs)

    def _check_live(self) -> None:
        if self.failure is not None:
            raise GroupCodeError(f"the group code failed: {self.failure}")

    def _check_member(self, index: int) -> None:
        if index not in self._indices:
            raise GroupCodeError(f"member {index} is not in the roster of epoch {self.epoch}")

    def _fail(self, reason: str) -> NoReturn:
        self.failure = reason
        raise GroupCodeError(f"the group code failed: {reason}")
