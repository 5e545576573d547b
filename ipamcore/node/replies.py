"""Error codes of :class:`~ipamcore.node.commands.Reply` (the plugin protocol's codes)."""

POOL_EMPTY = "pool_empty"
NOT_FOUND = "not_found"
DATAPATH_FAILED = "datapath_failed"
INTERNAL = "internal"
SHUTTING_DOWN = "shutting_down"
