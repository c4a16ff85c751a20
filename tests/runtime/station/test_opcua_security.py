"""The OPC UA server's bounds on their own: per-user call rate, the subscription cap, who may do what at all
(the server-level tests drive them over the wire; these check the numbers)."""

from __future__ import annotations

import pytest

asyncua = pytest.importorskip("asyncua")
from asyncua import ua  # noqa: E402
from asyncua.crypto.permission_rules import User, UserRole  # noqa: E402

from runtime.station.opcua.security import StationRules  # noqa: E402

CALL = ua.NodeId(ua.ObjectIds.CallRequest_Encoding_DefaultBinary)
WRITE = ua.NodeId(ua.ObjectIds.WriteRequest_Encoding_DefaultBinary)
READ = ua.NodeId(ua.ObjectIds.ReadRequest_Encoding_DefaultBinary)
SUBSCRIBE = ua.NodeId(ua.ObjectIds.CreateSubscriptionRequest_Encoding_DefaultBinary)
ADD_NODES = ua.NodeId(ua.ObjectIds.AddNodesRequest_Encoding_DefaultBinary)


def test_calls_and_writes_beyond_the_rate_are_refused_per_user_and_reads_are_not_counted():
    rules = StationRules(max_calls_per_s=5, max_subscriptions=10, subscriptions=lambda: 0)
    plc, mes = User(UserRole.User, "plc"), User(UserRole.User, "mes")
    for n in range(5):
        assert rules.check_validity(plc, CALL if n % 2 else WRITE, None)
    with pytest.raises(ua.UaStatusCodeError, match="BadTooManyOperations"):
        rules.check_validity(plc, CALL, None)
    assert rules.check_validity(mes, CALL, None)  # another user has a rate of its own
    assert all(rules.check_validity(plc, READ, None) for _ in range(50))


def test_subscriptions_are_capped_and_nobody_may_change_the_address_space():
    count = {"now": 3}
    rules = StationRules(max_calls_per_s=50, max_subscriptions=3, subscriptions=lambda: count["now"])
    plc = User(UserRole.User, "plc")
    with pytest.raises(ua.UaStatusCodeError, match="BadTooManySubscriptions"):
        rules.check_validity(plc, SUBSCRIBE, None)
    count["now"] = 2
    assert rules.check_validity(plc, SUBSCRIBE, None)
    assert rules.check_validity(plc, ADD_NODES, None) is False
    assert rules.check_validity(User(UserRole.Anonymous), READ, None) is False
