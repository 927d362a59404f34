"""A Promela model of two phones calling each other, generated from the call machine's table.

spin (a Debian package) checks it: ``tests/voice/call/test_call_model.py`` runs it, and
docs/call-states.md ("Model checking") says what is modelled and how to run spin by hand.
Every ``(state, event)`` of :data:`voice.call.table.TABLE` becomes Promela through the handler
semantics of :mod:`voice.call.promela_rules`: each guarded outcome ends in its own line
``st[m] = S_TARGET``, which :attr:`Model.transitions` records, so a test can ask spin whether
the model reaches every transition of the table and nothing else. A handler without semantics
stops the generation (:class:`~voice.call.promela_rules.ModelError`): the model cannot fall
behind the machine unnoticed.

Layout: four machines, ``m = 2 * call + role``: call ``c`` is dialed by phone ``c`` (role 0,
caller) and answered by phone ``1 - c`` (role 1, callee). Each phone is one process that takes
one input per atomic step: a message from its inbox (routed as :mod:`voice.call.routing` says),
a dial, or a local event of either of its machines; then it hands what its machines sent to the
network (``put``, which may lose, replay or forge) and checks the safety properties.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Final

from voice.call import events as ev
from voice.call.events import State
from voice.call.machine import SENT_BY
from voice.call.promela_rules import (
    CALL,
    GLARE,
    GLARE_HOSTILE,
    SCENARIOS,
    Branch,
    Config,
    ModelError,
    branches,
    dial_allowed,
    fault,
    gate,
    offer_routes,
)

__all__ = ["CALL", "GLARE", "GLARE_HOSTILE", "SCENARIOS", "Config", "Model", "generate"]

_OFFER: Final = next(k for k in SENT_BY if k.__name__ == "Offer")
_ROUTED: Final = (ev.UserDial, ev.GlareLost)  # local events that come through the phone
_ROUTE_ACTIONS: Final = {
    "Answer": "ans = 1",
    "AnswerBusy": "out!1 - p,c,M_Busy,0",  # the phone answers, no machine
    "LoseGlare": "m = OUT(p); glare_lost(); m = IN(p); autoacc[m] = 1; ans = 1",
    "IgnoreOffer": "skip",
    "Reject": "skip",
}


@dataclass(frozen=True)
class Model:
    text: str
    transitions: dict[int, tuple[str, str, str]]  # line of ``st[m] = S_X`` -> (from, event, X)


class _Writer:
    """Emits lines and records where each transition's ``st[m] = S_TARGET`` line is."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.lines: list[str] = []
        self.macros: list[str] = []
        self.transitions: dict[int, tuple[str, str, str]] = {}

    def emit(self, *lines: str) -> None:
        self.lines += lines

    def rules(self, event: type[Any]) -> list[tuple[State, list[Branch]]]:
        found = []
        for (state, kind), rule in self.cfg.table.items():
            if kind is event:
                outcomes = branches(rule.handler, state, event, self.cfg)
                if {b.target for b in outcomes} != rule.targets:
                    raise ModelError(f"{rule.handler} in {state.name}: targets differ")
                found.append((state, outcomes))
        return found

    def outcome(self, state: State, event: type[Any], b: Branch) -> None:
        self.emit(*(f"      {stmt};" for stmt in b.body), f"      st[m] = S_{b.target.name}")
        self.transitions[len(self.lines)] = (state.name, event.__name__, b.target.name)

    def guard(self, event: type[Any], state: State, b: Branch) -> str:
        terms = [f"st[m] == S_{state.name}", gate(event, state, self.cfg), b.guard]
        return " && ".join(filter(None, terms))

    def dispatch(self, event: type[Any], otherwise: str = "skip /* refused */") -> None:
        """Apply a received message (or a routed event) to machine ``m``, whatever its state."""
        self.emit("   if")
        for state, outcomes in self.rules(event):
            for b in outcomes:
                self.emit(f"   :: {self.guard(event, state, b)} ->")
                self.outcome(state, event, b)
        self.emit(f"   :: else -> {otherwise}", "   fi")

    def local(self, event: type[Any]) -> None:
        """One option per outcome of a local event, on either of phone p's machines."""
        for state, outcomes in self.rules(event):
            for b in outcomes:
                name = f"G{len(self.macros)}"
                self.macros.append(
                    f"#define {name}(m) ({self.guard(event, state, b)})"
                    f"  /* {state.name} {event.__name__} -> {b.target.name} */"
                )
                on = [f"{name}(OUT(p))", f"{name}(IN(p))"]
                outer = f"{b.outer} && " if b.outer else ""
                self.emit(f"   :: {outer}({on[0]} || {on[1]}) ->")
                self.emit(f"      if :: {on[0]} -> m = OUT(p) :: {on[1]} -> m = IN(p) fi;")
                if fault(event):
                    self.emit("      faults = 0;")  # the run's one fault
                self.outcome(state, event, b)


def _receive(w: _Writer) -> None:
    """Take a message (the network may hand over the second first), route it, apply it."""
    w.emit("   :: nempty(inbox[p]) ->", "      if :: inbox[p]?c,t,v")
    w.emit("      :: len(inbox[p]) > 1 -> inbox[p]?c,t,v; inbox[p]!c,t,v; inbox[p]?c,t,v")
    w.emit("      fi;", "      if :: c == p -> m = OUT(p) :: else -> m = IN(p) fi;", "   if")
    w.emit("   :: t == M_Offer && offer_seen[p] -> skip /* a call id we know: dropped */")
    w.emit("   :: t == M_Offer && !offer_seen[p] -> offer_seen[p] = 1;", "   if")
    for kind, conds in sorted(offer_routes(w.cfg.decide_offer).items()):
        w.emit(f"   :: {' || '.join(conds)} -> {_ROUTE_ACTIONS[kind]}")
    w.emit("   fi;", "   if", "   :: ans -> m = IN(p);")
    w.dispatch(_OFFER)
    w.emit("   :: else -> skip", "   fi")
    w.emit("   :: t != M_Offer && st[m] == S_IDLE -> skip /* unknown call id */")
    w.emit("   :: t != M_Offer && st[m] != S_IDLE ->", "   if")
    for message in SENT_BY:
        if message is not _OFFER:
            w.emit(f"   :: t == M_{message.__name__} ->")
            w.dispatch(message)
    w.emit("   fi", "   fi")


def _phone(w: _Writer) -> None:
    """The phone process: one input per atomic step, or stop once every call is over."""
    cfg = w.cfg
    w.emit("proctype phone(byte p) {", "byte m, c, t, v, q, ans;")
    if cfg.glare:  # both users dial before either phone reads a message
        w.emit("atomic { m = OUT(p);")
        w.dispatch(ev.UserDial, "assert(false)")
        w.emit("   ; flush(); forget() };")
    w.emit("do", ":: atomic {", "   if")
    _receive(w)
    if not cfg.glare:  # phone 0's user dials when they like
        w.emit(f"   :: p == 0 && present && st[OUT(p)] == S_IDLE && {dial_allowed()} ->")
        w.emit("      m = OUT(p);")
        w.dispatch(ev.UserDial, "assert(false)")
    if cfg.users:
        w.emit("   :: present -> present = 0  /* the users walk away */")
    for event in sorted({k for _, k in cfg.table} - set(SENT_BY) - set(_ROUTED), key=str):
        w.local(event)
    w.emit("   fi;", "   flush(); check(); forget() }")
    w.emit(":: timeout && QUIET -> break  /* stuck otherwise: an invalid end state */", "od", "}")


def generate(cfg: Config = CALL) -> Model:
    """The model of one scenario (see :class:`Config`)."""
    body, inline = _Writer(cfg), _Writer(cfg)
    _phone(body)
    inline.emit("inline glare_lost() {")
    inline.dispatch(ev.GlareLost, "assert(false)")
    inline.emit("}")
    values = {
        "hostile": int(cfg.hostile),
        "attacks": int(cfg.attacks),
        "users": int(cfg.users),
        "glare": int(cfg.glare),
        "qn": 3 - cfg.hostile,
    }
    head = [
        f"/* generated by voice/call/promela.py from voice.call.table.TABLE: {cfg.name} */",
        *(f"#define S_{s.name} {i}" for i, s in enumerate(State)),
        *(f"#define M_{k.__name__} {i + 1}" for i, k in enumerate(SENT_BY)),
        *_PRELUDE.format(**values).split("\n"),
        *body.macros,
    ]
    lines = [*head, *inline.lines, *body.lines, *_INIT]
    transitions = {len(head) + n: t for n, t in inline.transitions.items()}
    start = len(head) + len(inline.lines)
    transitions.update({start + n: t for n, t in body.transitions.items()})
    for line, (_, _, target) in transitions.items():
        if lines[line - 1].strip() != f"st[m] = S_{target}":
            raise ModelError(f"line {line} is not the transition to {target}")
    return Model("\n".join(lines) + "\n", transitions)


_PRELUDE: Final = """\
#define HOSTILE {hostile}
#define GLARE {glare}
#define USERS {users}
#define ATTACKS {attacks}
#define HONEST 1  /* key tokens: the key committed to, */
#define LOW 2     /* one the key agreement refuses, */
#define FORGED 3  /* another one */
#define QN {qn}
#define CALL(m) ((m) / 2)
#define ROLE(m) ((m) % 2)
#define PEER(m) ((m) ^ 1)
#define PHONE(m) (CALL(m) ^ ROLE(m))
#define OUT(p) (2 * (p))
#define IN(p) (2 * (1 - (p)) + 1)
#define DONE(m) (st[m] == S_IDLE || st[m] == S_ENDED || st[m] == S_FAILED)
#define QUIET (DONE(0) && DONE(1) && DONE(2) && DONE(3))
#define LIVE(m) (!DONE(m))
#define CONN(c) (st[2 * (c)] == S_CONNECTED || st[2 * (c) + 1] == S_CONNECTED)
#define EVER(c) (seen[2 * (c)] || seen[2 * (c) + 1])
#define ONE_CALL (!(CONN(0) && CONN(1)) && !(EVER(0) && EVER(1)) && \
                  !(LIVE(0) && LIVE(3)) && !(LIVE(1) && LIVE(2)))
#define SAFE_KEYS(m) ((ROLE(m) == 0 || !keys[m] || checked[CALL(m)]) && \\
                      (st[m] != S_CONNECTED || checked[CALL(m)]))
#define KEYS_CHECKED (SAFE_KEYS(0) && SAFE_KEYS(1) && SAFE_KEYS(2) && SAFE_KEYS(3))
#define BOTH_ENDS(c) (seen[2 * (c)] && seen[2 * (c) + 1])

chan inbox[2] = [QN] of {{ byte, byte, byte }};  /* per phone: call, message, key token */
chan out = [2] of {{ byte, byte, byte, byte }};  /* this step's sends: phone, call, message, key */
byte st[4];
bit asked[4];    /* DeriveKeys emitted */
bit keys[4];     /* KeysReady taken */
byte val[4];     /* the peer's key given to DeriveKeys */
byte commit[4];  /* caller: the key it committed to; callee: the offer's commitment */
bit flowing[4];  /* MediaFlowing taken: no more deadline */
bit holding[4];
bit autoacc[4];  /* glare: accept when it rings */
bit checked[2];  /* ghost: call c's callee derived keys from the key committed to */
bit seen[4];     /* ghost (glare scenarios): machine m was CONNECTED */
bit offer_seen[2];
bit elsewhere[2];  /* the phone's user is in a call with someone else */
bit present = {users};  /* the users act; once they walk away, only timers and messages do */
bit stutter = 1;  /* one input that changes nothing (a tick before the deadline, ...) per run */
byte faults;      /* at most one fault (key changed, ICE failed, ...), chosen at the start */
byte dups = HOSTILE;    /* one message delivered twice */
byte forges = ATTACKS;  /* one key forged */

inline put(q_, c_, t_, v_) {{  /* the network: it may lose, replay or forge */
   if
   :: full(inbox[q_]) -> assert(HOSTILE)  /* lost: only a hostile network loses */
   :: nfull(inbox[q_]) ->
      if
      :: inbox[q_]!c_,t_,v_
      :: HOSTILE -> skip  /* lost */
      :: dups > 0 -> dups--; inbox[q_]!c_,t_,v_;  /* ... and replayed later */
         if :: nfull(inbox[q_]) -> inbox[q_]!c_,t_,v_ :: full(inbox[q_]) -> skip fi
      :: forges > 0 && t_ == M_Reveal -> forges--; inbox[q_]!c_,t_,FORGED  /* not committed */
      :: forges > 0 && t_ == M_Ringing -> forges--; inbox[q_]!c_,t_,LOW  /* to be refused */
      fi
   fi
}}
inline snd(m_, t_, v_) {{ out!PHONE(PEER(m_)),CALL(m_),t_,v_ }}
inline flush() {{ do :: out?q,c,t,v -> put(q, c, t, v) :: empty(out) -> break od }}
inline check() {{ assert(KEYS_CHECKED); assert(ONE_CALL) }}
inline forget() {{ m = 0; c = 0; t = 0; v = 0; q = 0; ans = 0 }}
"""

_INIT: Final = (
    "init { atomic {",
    "   if :: faults = ATTACKS :: faults = 0 fi;",
    "   if :: elsewhere[1] = USERS :: elsewhere[1] = 0 fi;",
    "   run phone(0); run phone(1) } }",
    "ltl ends { <>[] QUIET }",
    "ltl glare_one_call { <> (BOTH_ENDS(0) || BOTH_ENDS(1)) }",
)


if __name__ == "__main__":  # python -m voice.call.promela [call|glare|glare-hostile] > call.pml
    chosen = [c for c in SCENARIOS if c.name in sys.argv[1:]] or [CALL]
    sys.stdout.write(generate(chosen[0]).text)
