"""The internal HTTP API the gateway calls, each call signed (``tickwatch_common.internal_auth``)."""
