"""Act, the third arrow: the policy that turns evaluations and alerts into durable action runs,
the state store, the runner and its step workers, and the control API."""
