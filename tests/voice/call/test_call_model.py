"""spin model-checks the Promela model generated from the call machine's table.

Each scenario of voice/call/promela_rules.py is generated, compiled by spin and gcc into a
verifier (pan) and searched exhaustively: no assertion fails (no media keys without a checked
reveal, never two connected calls), every run ends with every call over (no invalid end state,
and the LTL ``ends`` in every scenario) and, for glare, one call connects on both ends.
The verifier's report of unreached code shows that together they take every transition of the
table. Mutation controls break the model in three ways and expect spin to say so: otherwise a
green run could mean a vacuous model.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from voice.call import events as ev
from voice.call import routing
from voice.call.events import State
from voice.call.promela import CALL, GLARE, GLARE_HOSTILE, SCENARIOS, Config, Model, generate
from voice.call.table import TABLE, transitions

MAX_DEPTH = 100_000  # the deepest run is a few hundred steps


@dataclass(frozen=True)
class Verdict:
    errors: int
    report: str
    states: int
    unreached: frozenset[int]  # lines of the phone process that no run reached


@dataclass(frozen=True)
class Check:
    config: Config
    claims: tuple[str, ...]  # LTL claims to verify, or () for a safety search

    @property
    def model(self) -> Model:
        return generate(self.config)


def verify(check: Check, workdir: Path) -> dict[str, Verdict]:
    """Generate, compile and run pan: one Verdict per claim ("safety" without one)."""
    for tool in ("spin", "gcc"):
        assert shutil.which(tool), f"{tool} is missing: scripts/setup.sh installs it"
    workdir.mkdir(parents=True)
    (workdir / "call.pml").write_text(check.model.text, encoding="utf-8")
    # -o3: no statement merging, so pan reports each unreached ``st[m] = S_X`` line
    subprocess.run(["spin", "-a", "-o3", "call.pml"], cwd=workdir, check=True, capture_output=True)
    flags = [] if check.claims else ["-DSAFETY", "-DNOCLAIM"]
    subprocess.run(["gcc", "-O0", "-w", *flags, "-o", "pan", "pan.c"], cwd=workdir, check=True)
    verdicts = {}
    for claim in check.claims or ("safety",):
        args = ["-a", "-N", claim] if check.claims else []
        pan = subprocess.run(
            ["./pan", f"-m{MAX_DEPTH}", *args], cwd=workdir, capture_output=True, text=True
        )
        report = pan.stdout + pan.stderr
        assert "max search depth too small" not in report, report
        errors = re.search(r"errors: (\d+)", report)
        states = re.search(r"(\d+) states, stored", report)
        assert errors is not None and states is not None, report
        assert "unreached in proctype phone" in report or errors.group(1) != "0", report
        phone = report.split("unreached in proctype phone", 1)[-1].split("unreached in", 1)[0]
        unreached = frozenset(int(n) for n in re.findall(r"call\.pml:(\d+), state", phone))
        verdicts[claim] = Verdict(int(errors.group(1)), report, int(states.group(1)), unreached)
    return verdicts


def _no_glare(calls: list[routing.CallInfo], *, peer: str, call_id: bytes) -> routing.OfferDecision:
    """Mutation: glare resolution removed; an offer while we dial is answered busy."""
    decision = routing.decide_offer(calls, peer=peer, call_id=call_id)
    glare = isinstance(decision, routing.IgnoreOffer | routing.LoseGlare)
    return routing.AnswerBusy() if glare else decision


NO_CONNECT_DEADLINE = {k: v for k, v in TABLE.items() if k != (State.CONNECTING, ev.Tick)}
CHECKS = {
    "call": Check(CALL, ("ends",)),
    "glare": Check(GLARE, ("ends", "glare_one_call")),
    "glare-hostile": Check(GLARE_HOSTILE, ("ends",)),
    "mutant-unchecked-reveal": Check(dataclasses.replace(CALL, check_commitment=False), ()),
    "mutant-no-glare": Check(
        dataclasses.replace(GLARE, decide_offer=_no_glare), ("glare_one_call",)
    ),
    "mutant-no-connecting-deadline": Check(
        dataclasses.replace(GLARE_HOSTILE, table=NO_CONNECT_DEADLINE), ("ends",)
    ),
}


@pytest.fixture(scope="module")
def verdicts(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Future[dict[str, Verdict]]]]:
    """Every check, two at a time (compiling pan takes most of the time)."""
    root = tmp_path_factory.mktemp("spin")
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield {name: pool.submit(verify, check, root / name) for name, check in CHECKS.items()}


def result(verdicts: dict[str, Future[dict[str, Verdict]]], name: str) -> dict[str, Verdict]:
    return verdicts[name].result()


def test_every_scenario_models_exactly_the_table() -> None:
    for config in SCENARIOS:
        assert set(generate(config).transitions.values()) == transitions(), config.name


def test_model_follows_the_table_not_a_copy() -> None:
    shrunk = generate(dataclasses.replace(CALL, table=NO_CONNECT_DEADLINE))
    assert ("CONNECTING", "Tick", "FAILED") not in set(shrunk.transitions.values())
    assert ("CONNECTING", "Tick", "CONNECTING") not in set(shrunk.transitions.values())


@pytest.mark.parametrize("name", ["call", "glare", "glare-hostile"])
def test_spin_finds_no_violation(
    verdicts: dict[str, Future[dict[str, Verdict]]], name: str
) -> None:
    for claim, verdict in result(verdicts, name).items():
        assert verdict.errors == 0, f"{name} {claim}:\n{verdict.report}"
        assert "Search not completed" not in verdict.report  # exhaustive
        if claim == "safety":
            assert re.search(r"invalid end states\s+\+", verdict.report)  # deadlocks checked


# A caller sends ``hangup`` only once connected, after the callee's accept: a callee that has
# not connected never gets one from an honest caller. These rows guard against a dishonest one.
DEFENSIVE = {(s, "Hangup", "ENDED") for s in ("OFFERED", "RINGING_IN", "CONNECTING")}


def test_spin_reaches_every_table_transition_but_the_defensive_ones(
    verdicts: dict[str, Future[dict[str, Verdict]]],
) -> None:
    reached: set[tuple[str, str, str]] = set()
    for name in ("call", "glare", "glare-hostile"):
        model = CHECKS[name].model
        for verdict in result(verdicts, name).values():
            reached |= {t for line, t in model.transitions.items() if line not in verdict.unreached}
    assert reached == transitions() - DEFENSIVE


def test_mutant_that_grants_keys_without_the_reveal_check_is_refuted(
    verdicts: dict[str, Future[dict[str, Verdict]]],
) -> None:
    verdict = result(verdicts, "mutant-unchecked-reveal")["safety"]
    assert verdict.errors > 0
    assert "assertion violated" in verdict.report and "checked[" in verdict.report


def test_mutant_without_glare_resolution_is_refuted(
    verdicts: dict[str, Future[dict[str, Verdict]]],
) -> None:
    verdict = result(verdicts, "mutant-no-glare")["glare_one_call"]
    assert verdict.errors > 0 and "acceptance cycle" in verdict.report


def test_mutant_whose_connecting_state_has_no_deadline_is_refuted(
    verdicts: dict[str, Future[dict[str, Verdict]]],
) -> None:
    verdict = result(verdicts, "mutant-no-connecting-deadline")["ends"]
    assert verdict.errors > 0 and "acceptance cycle" in verdict.report
