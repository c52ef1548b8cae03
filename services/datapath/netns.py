"""The datapath's view of network namespaces: `shared.netns` (also used by the CNI
plugin), with its error base named as the datapath's own."""
from shared.netns import (NETNS_RUN_DIR, BadRequest, Conflict, Namespace, NetnsError, NotFound,  # noqa: F401
                          named_namespaces, open_namespace, using_namespace)

DatapathError = NetnsError
"""Base of the datapath's errors; `code` says whose move it is."""
