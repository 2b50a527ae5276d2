"""People's roles and what each may do. Every endpoint names the permission it needs."""

from enum import StrEnum


class Role(StrEnum):
    ADMIN = "admin"
    OPS = "ops"
    IOC_OPERATOR = "ioc_operator"
    TECHNICIAN = "technician"
    READ_ONLY = "read_only"


class Permission(StrEnum):
    READ = "read"  # devices, presence, health, telemetry, events, ingest counters
    DEVICE_WRITE = "device_write"  # register and edit devices
    DEVICE_DECOMMISSION = "device_decommission"
    COMMAND = "command"  # send commands to devices
    DESIRED_STATE = "desired_state"  # light programs, schedules, config documents
    CREDENTIALS = "credentials"  # issue, rotate and revoke device credentials
    ENROLLMENT = "enrollment"  # create and revoke enrollment tokens
    USERS = "users"  # manage people
    AUDIT = "audit"  # read the audit log
    RELEASES = "releases"  # publish OTA releases
    RELEASE_DELETE = "release_delete"  # delete a published release (admin only)
    ROLLOUTS = "rollouts"  # start, pause, resume, abort and roll back OTA rollouts
    BROADCAST = "broadcast"  # the audio library and the loudspeaker broadcasts (docs/broadcasts.md)
    ALERTS = "alerts"  # acknowledge, silence and resolve alerts; edit alert rules and channels (docs/ops.md)
    SNAPSHOTS = "snapshots"  # see events' snapshots (they show citizens; each view audited; docs/relay.md)
    RELAY = "relay"  # relay endpoints, routes, their secrets, dead letters and replays (docs/relay.md)


ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(Permission),
    Role.OPS: frozenset({Permission.READ, Permission.DEVICE_WRITE, Permission.DEVICE_DECOMMISSION,
                         Permission.COMMAND, Permission.DESIRED_STATE, Permission.CREDENTIALS,
                         Permission.ENROLLMENT, Permission.RELEASES, Permission.ROLLOUTS, Permission.ALERTS}),
    Role.IOC_OPERATOR: frozenset({Permission.READ, Permission.DESIRED_STATE, Permission.BROADCAST,
                                 Permission.SNAPSHOTS}),
    Role.TECHNICIAN: frozenset({Permission.READ, Permission.DEVICE_WRITE, Permission.CREDENTIALS}),
    Role.READ_ONLY: frozenset({Permission.READ}),
}


def allows(role: Role, permission: Permission) -> bool:
    return permission in ROLE_PERMISSIONS[role]
