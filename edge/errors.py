"""The edge agent's exceptions: one base class, one subclass per thing that can go wrong."""


class EdgeError(Exception):
    """Base of every error the edge agent raises on purpose."""


class ConfigError(EdgeError):
    """The configuration file (or the environment) is missing, unreadable or invalid.

    The message is one line a person can act on; the CLI prints it as `edge-agent: <message>`.
    """


class StateError(EdgeError):
    """The state folder cannot be used (not writable, locked by another agent, corrupt file)."""


class EmitError(EdgeError):
    """A message the agent was asked to send breaks the wire contract (a bug in a role)."""


class CommandError(EdgeError):
    """A command could not be carried out; the message goes back as the result's `detail`."""


class DesiredStateError(EdgeError):
    """A desired-state document was refused; the message goes back as `state/reported.error`."""
