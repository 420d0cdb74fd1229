"""Ray names in one place: the namespace, the named actors and the Serve application.

Actors are always looked up by these names, never by a handle passed around.
"""

NAMESPACE = "neo"
BRIDGE = "bridge"
HISTORY = "history"
STORE = "store"
FRONT = "front"
WORKER_PREFIX = "worker-"
SERVE_APP = "control"
