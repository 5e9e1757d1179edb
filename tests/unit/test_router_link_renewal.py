"""A link whose HELLO goes unanswered gets a new connection (a new socket), driven with
``now``: the connection may be dead without either side knowing (a half-open TCP
connection), and HELLOs said on it would never get there."""

from __future__ import annotations

from tests.unit.test_router_core import CLUSTER, make, welcome
from zq.protocol import codec
from zq.protocol import frames as f
from zq.router.core import RouterCore
from zq.router.state import DOWN, HELLO_SENT, UP

EP1 = CLUSTER.brokers[0].endpoint


def _silent_until(core: RouterCore, t_end: float) -> None:
    """Ticks each second from 1 to ``t_end``, b1 silent, b2 heartbeating."""
    t = 1.0
    while t <= t_end:
        core.from_broker("b2", codec.encode(f.Heartbeat()), t)
        core.tick(t)
        t += 1.0


def test_a_link_silent_past_its_limit_with_hello_unanswered_is_dialed_again() -> None:
    core = make("b1", "b2")
    _silent_until(core, 4.0)  # lost at 4 (silent 4 s > 3 s), HELLO said on the old socket
    link = core.links["b1"]
    assert link.state == HELLO_SENT
    assert core.link_actions == []  # its HELLO was said just now: not yet
    _silent_until(core, 5.0)  # silent since 0, dialed at 0: 5 s without an answer
    assert core.link_actions == [("close", "b1", ""), ("open", "b1", EP1)]
    assert (link.state, link.connected, link.renewals) == (DOWN, False, 1)
    assert core.counters["links_renewed"] == 1
    assert core.links["b2"].state == UP  # the others are not touched
    core.take()
    core.link_connected("b1", 5.0)  # the shell's new socket: a HELLO, and no BYE first
    assert [type(codec.decode(p)) for b, p in core.take()[1] if b == "b1"] == [f.Hello]
    core.link_actions.clear()
    for t in (6.0, 7.0, 8.0):
        core.tick(t)
    assert core.link_actions == []  # 3 s since it was dialed: not yet
    core.tick(9.0)
    assert core.link_actions == [("close", "b1", ""), ("open", "b1", EP1)]
    assert link.renewals == 2


def test_a_broker_that_answers_is_not_dialed_again() -> None:
    core = make("b1")
    _silent_until(core, 4.0)
    core.from_broker("b1", welcome("b1"), 4.5)  # the HELLO on the old socket got there
    core.tick(5.0)
    core.tick(6.0)
    assert core.link_actions == []
    assert core.links["b1"].state == UP
    assert core.links["b1"].renewals == 0


def test_a_link_refused_by_its_broker_is_not_dialed_again() -> None:
    core = make("b2")
    refused = codec.encode(f.Error(25, "CLUSTER_MISMATCH", "no", f.HELLO))
    core.from_broker("b1", refused, 0.0)
    for t in (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0):
        core.from_broker("b2", codec.encode(f.Heartbeat()), t)
        core.tick(t)
        _, brokers = core.take()
        if any(b == "b1" and type(codec.decode(p)) is f.Hello for b, p in brokers):
            core.from_broker("b1", refused, t)  # each HELLO is answered, and refused
    assert core.link_actions == []  # it answers: the connection works
    assert core.links["b1"].errors >= 3
