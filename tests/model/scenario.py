"""Seeded scenarios: one seed -> one case (account, Zoom's behaviour, steps), all pure.

A case is drawn whole before anything runs, so its description can be printed on failure and
`MODEL_SEED=<seed>` replays it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from tests.model.behaviour import Behaviour, Faults

# (name, argument): pass (0 = run to the end, k = stopped after k requests), burst (n new
# messages, spread), burst_one (n new messages into one session), advance (seconds on the
# virtual clock), drop_state (the state cache deleted), delete (a session, upstream)
Step = tuple[str, int]


@dataclass(frozen=True)
class Case:
    seed: int
    sessions: int
    messages: int
    count: int
    workers: int
    lookback: int
    behaviour: Behaviour
    steps: tuple[Step, ...]

    def describe(self) -> str:
        b = self.behaviour
        faults = ",".join(f"{name}={p}" for name, p in b.faults.kinds()) or "none"
        knobs = (
            f"short={b.short_page} boundary={b.boundary} overlap={b.overlap} "
            f"dup={b.duplicate} order={b.order} "
            f"no_token={b.no_token} no_token_empty={b.no_token_empty} "
            f"token_lifetime={b.token_lifetime} list_page={b.list_page_size} "
            f"live={b.live_arrivals} short_isync={b.short_isync} skew={b.clock_skew} "
            f"lag={b.visible_lag} offset_paging={b.offset_paging} faults[{faults}]"
        )
        steps = ", ".join(_step_text(step) for step in self.steps)
        return (
            f"seed={self.seed}: {self.sessions} sessions, {self.messages} messages, "
            f"count={self.count}, workers={self.workers}, lookback={self.lookback}s; "
            f"{knobs}; steps: {steps}"
        )


def _step_text(step: Step) -> str:
    name, arg = step
    if name == "pass":
        return f"pass(stop after {arg} requests)" if arg else "pass"
    if name in ("burst", "burst_one", "advance"):
        return f"{name}({arg})"
    return name


def _maybe(rng: random.Random, values: tuple[float, ...], on: float = 0.5) -> float:
    return rng.choice(values) if rng.random() < on else 0.0


# One behaviour alone, so a failure of such a case names its cause. (field, value) pairs.
FOCUS: tuple[tuple[str, Any], ...] = (
    ("short_page", 0.5),
    ("boundary", 0.6),
    ("overlap", 0.6),
    ("duplicate", 0.3),
    ("order", "asc"),
    ("no_token", 0.15),
    ("no_token_empty", 1.0),
    ("token_lifetime", 10),
    ("faults.html_404", 0.08),
    ("faults.forbidden", 0.08),
    ("faults.bad_gateway", 0.08),
    ("faults.server_error", 0.08),
    ("faults.unauthorized", 0.05),
    ("faults.rate_limited", 0.05),
    ("faults.reset", 0.05),
    ("live_arrivals", 0.03),
    ("short_isync", 0.6),
    ("overlap", 1.0),  # an inclusive lower bound: every BSync repeats the covered message
    ("boundary", 1.0),  # every ISync page repeats the boundary (with count 1, its only slot)
    ("clock_skew", 30),
    ("clock_skew", -30),
    ("visible_lag", 4),
    ("offset_paging", True),
)
FOCUSED = 0.3  # share of cases with one behaviour alone


def make_case(seed: int) -> Case:
    rng = random.Random(seed)
    count = rng.randint(1, 5)
    if rng.random() < FOCUSED:
        name, value = rng.choice(FOCUS)
        behaviour = _focused(name, value)
        lifetime = behaviour.token_lifetime
    else:
        behaviour, lifetime = _mixed(rng)
    steps = _steps(rng, count, lifetime)
    return Case(
        seed=seed,
        sessions=rng.randint(1, 6),
        messages=rng.randint(0, 60),
        count=count,
        workers=rng.randint(1, 3),
        lookback=rng.choice((0, 30, 600)),
        behaviour=behaviour,
        steps=steps,
    )


def _focused(name: str, value: Any) -> Behaviour:
    if name.startswith("faults."):
        return Behaviour(faults=Faults(**{name.removeprefix("faults."): value}))
    if name == "offset_paging":
        # Sessions move while the list is paged only when messages arrive meanwhile, and
        # shift others only when pages are small.
        return Behaviour(offset_paging=value, live_arrivals=0.05, list_page_size=1)
    if name == "visible_lag":
        return Behaviour(visible_lag=value, live_arrivals=0.03)
    return Behaviour(**{name: value})


def _mixed(rng: random.Random) -> tuple[Behaviour, int | None]:
    lifetime = rng.choice((None, None, 10, 20, 40, 120))
    faults = Faults(
        html_404=_maybe(rng, (0.03, 0.08), 0.3),
        forbidden=_maybe(rng, (0.03, 0.08), 0.3),
        bad_gateway=_maybe(rng, (0.03, 0.08), 0.3),
        server_error=_maybe(rng, (0.03, 0.08), 0.3),
        unauthorized=_maybe(rng, (0.02, 0.05), 0.3),
        rate_limited=_maybe(rng, (0.02, 0.05), 0.2),
        reset=_maybe(rng, (0.02, 0.05), 0.2),
    )
    behaviour = Behaviour(
        short_page=_maybe(rng, (0.2, 0.5)),
        boundary=_maybe(rng, (0.3, 0.6)),
        overlap=_maybe(rng, (0.3, 0.6), 0.3),
        duplicate=_maybe(rng, (0.1, 0.3), 0.4),
        order=rng.choice(("desc", "desc", "asc", "mixed")),
        no_token=_maybe(rng, (0.05, 0.15), 0.3),
        no_token_empty=_maybe(rng, (0.5, 1.0)),
        token_lifetime=lifetime,
        list_page_size=rng.choice((1, 2, 3, 100)),
        live_arrivals=_maybe(rng, (0.01, 0.03), 0.3),
        faults=faults,
        short_isync=_maybe(rng, (0.3, 0.6), 0.4),
        clock_skew=int(_maybe(rng, (-120, -3, 3, 120), 0.3)),
        visible_lag=int(_maybe(rng, (1, 4), 0.3)),
        offset_paging=rng.random() < 0.4,
    )
    return behaviour, lifetime


def _steps(rng: random.Random, count: int, lifetime: int | None) -> tuple[Step, ...]:
    steps: list[Step] = [("pass", 0)]
    for _ in range(rng.randint(1, 5)):
        kind = rng.choices(
            ("burst", "advance", "pass", "stopped", "drop_state", "delete"),
            weights=(5, 2, 3, 1, 1, 0.4),
        )[0]
        if kind == "burst":
            # Around the page size: exactly full, one over (7035), one under, or more; into
            # one session (so ISync pages fill up and gaps span pages) or spread over many.
            sizes = (max(1, count - 1), count, count, count + 1, 3 * count + 1, rng.randint(1, 15))
            steps.append((rng.choice(("burst", "burst_one")), rng.choice(sizes)))
        elif kind == "advance":
            ticks = (1, 5, 30, 200) if lifetime is None else (1, lifetime - 1, lifetime + 1, 200)
            steps.append(("advance", rng.choice(ticks)))
        elif kind == "stopped":
            steps.append(("pass", rng.randint(1, 40)))
        elif kind == "pass":
            steps.append(("pass", 0))
        else:
            steps.append((kind, 0))
    return tuple(steps)


def _named(seed: int, behaviour: Behaviour, steps: tuple[Step, ...], **account: int) -> Case:
    shape = {"sessions": 1, "messages": 12, "count": 2, "workers": 1, "lookback": 600}
    shape.update(account)
    return Case(seed=seed, behaviour=behaviour, steps=steps, **shape)


_LATER: tuple[Step, ...] = (("pass", 0), ("advance", 10), ("burst_one", 2), ("advance", 10))
_GAP: tuple[Step, ...] = (("pass", 0), ("advance", 10), ("burst_one", 9), ("advance", 10))

# One case per defect of issue 14 that the random cases find only now and then: each names
# the behaviour alone, so a failure here says which rule broke.
NAMED: dict[str, Case] = {
    "full ISync page with the boundary message": _named(
        1, Behaviour(boundary=1.0), (*_LATER, ("pass", 0))
    ),
    "short page while older messages remain": _named(
        1, Behaviour(short_page=1.0), (("pass", 0),), messages=20, count=3
    ),
    "gap walk meets a page without token": _named(
        0, Behaviour(no_token=0.3), (*_GAP, ("pass", 0)), messages=5
    ),
    "sync tokens expire between backfill turns": _named(
        1, Behaviour(token_lifetime=10), (("pass", 0),), sessions=3, messages=60, count=1
    ),
    "a gateway's HTML 404 on sync": _named(
        3, Behaviour(faults=Faults(html_404=0.3)), _LATER, sessions=2
    ),
    "403 on one request": _named(1, Behaviour(faults=Faults(forbidden=0.3)), _LATER, sessions=2),
    "a short ISync page in the listed second": _named(
        1, Behaviour(short_isync=1.0), (*_LATER, ("burst_one", 3), ("pass", 0)), count=5
    ),
    "our clock runs ahead of Zoom's, messages visible late": _named(
        1,
        Behaviour(clock_skew=-30, visible_lag=4, live_arrivals=0.05),
        (("pass", 0), ("burst_one", 2), ("pass", 0), ("pass", 0)),
        count=5,
    ),
    "messages visible late, no lookback": _named(
        2,
        Behaviour(visible_lag=4),
        # Sent at t, visible at t + 4, the poll at t + 2 sees nothing: the next one must list t.
        (("pass", 0), ("burst_one", 2), ("advance", 2), ("pass", 0), ("advance", 10), ("pass", 0)),
        count=5,
        lookback=0,
    ),
    "every BSync repeats the covered message": _named(
        1, Behaviour(overlap=1.0), (*_GAP, ("pass", 0)), messages=7, count=3
    ),
    "every ISync repeats the boundary, count 1": _named(
        1,
        Behaviour(boundary=1.0),
        (("pass", 0), ("advance", 10), ("burst_one", 1), ("advance", 10), ("pass", 0)),
        count=1,
    ),
    "every BSync repeats the covered message, count 1": _named(
        1, Behaviour(overlap=1.0), (*_GAP, ("pass", 0)), messages=7, count=1
    ),
    "the list paged by offset while sessions move": _named(
        2,
        Behaviour(offset_paging=True, live_arrivals=0.1, list_page_size=1),
        (("pass", 0),),
        sessions=6,
        messages=30,
    ),
    "401 on an API call": _named(
        1, Behaviour(faults=Faults(unauthorized=0.3)), _LATER, sessions=2, messages=30
    ),
}
