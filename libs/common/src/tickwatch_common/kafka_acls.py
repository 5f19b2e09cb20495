"""Add ACLs to a broker through the admin client, without Java: aiokafka's admin client has no
ACL call, but its protocol has CreateAcls (API 30, v1: pattern types), sent here with every
rule at once. The broker's answer for each is checked: a refused rule raises. Used by the tests to
give their broker the same rules as the prod overlay's ``kafka-acls.sh``
(:mod:`tickwatch_common.bus_access`); an operator uses that script and Kafka's own tool."""

from __future__ import annotations

from collections.abc import Sequence

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError, for_code
from aiokafka.protocol.admin import CreateAclsRequest_v1
from aiokafka.protocol.api import Request

from tickwatch_common.bus_access import AclBinding
from tickwatch_common.kafka import client_options
from tickwatch_common.settings import KafkaSettings

# The Kafka protocol's codes (org.apache.kafka.common.acl / resource).
RESOURCE_TYPES = {"Topic": 2, "Group": 3}
PATTERN_TYPES = {"LITERAL": 3, "PREFIXED": 4}
OPERATIONS = {
    "Read": 3,
    "Write": 4,
    "Create": 5,
    "Alter": 7,
    "Describe": 8,
    "DescribeConfigs": 10,
    "AlterConfigs": 11,
}
ALLOW = 3
ANY_HOST = "*"


class CreateAcls(Request[CreateAclsRequest_v1]):  # type: ignore[misc]
    """Many rules in one request (aiokafka's own CreateAclsRequest carries one): each rule is
    a write to the metadata log, and one request commits them together."""

    API_KEY = 30

    def __init__(self, bindings: Sequence[AclBinding]) -> None:
        self.bindings = bindings

    def build(self, request_struct_class: type[CreateAclsRequest_v1]) -> CreateAclsRequest_v1:
        return request_struct_class(
            [
                (
                    RESOURCE_TYPES[b.resource],
                    b.name,
                    PATTERN_TYPES[b.pattern],
                    b.principal,
                    ANY_HOST,
                    OPERATIONS[b.operation],
                    ALLOW,
                )
                for b in self.bindings
            ]
        )


async def create_acls(
    kafka: KafkaSettings | str, bindings: Sequence[AclBinding], timeout_ms: int = 15000
) -> int:
    """Add every ALLOW rule of ``bindings`` (an existing one is kept as it is); the count added.
    ``kafka`` must be a principal allowed to alter the cluster's ACLs (a super user)."""
    admin = AIOKafkaAdminClient(**client_options(kafka), request_timeout_ms=timeout_ms)
    await admin.start()
    try:
        response = await admin._send_request(CreateAcls(bindings))
    finally:
        await admin.close()
    for b, (error_code, message) in zip(bindings, response.creation_responses, strict=True):
        if error_code != 0:
            error: type[KafkaError] = for_code(error_code)
            raise error(f"ACL {b} refused: {message}")
    return len(bindings)
