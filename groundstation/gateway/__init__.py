"""The OpenAI-compatible HTTP gateway of the ground station (``groundstation serve``).

Many users over one link: every HTTP request becomes a request of one shared
:class:`~groundstation.station.GroundStation`; answers stream back as server-sent
events.  :mod:`~groundstation.gateway.schema` maps OpenAI's request and response
objects, :mod:`~groundstation.gateway.auth` holds the API keys and the rate limit,
:mod:`~groundstation.gateway.app` is the ASGI application (with the operator page)
and :mod:`~groundstation.gateway.server` runs it under uvicorn beside the link.
docs/gateway.md describes the endpoints.
"""
