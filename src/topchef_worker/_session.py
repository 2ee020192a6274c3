"""The requests.Session the library makes when the user does not give one."""

from __future__ import annotations

import os

import requests
import requests.adapters
import requests.utils

__all__ = ["make_session"]


def make_session(base_url: str, connections: int = 10) -> requests.Session:
    """A session for one TopChef server that reads the environment once.

    By default requests re-reads the proxy variables (and ``.netrc``) from the
    environment on every request, which costs more than the rest of a request to a
    local server.  The environment is read here, once: ``HTTP(S)_PROXY`` and
    ``NO_PROXY`` for *base_url*, and ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE``.
    TopChef has no authentication, so ``.netrc`` is not consulted.  The connection
    pool keeps *connections* connections, one for each thread that may send at once.
    """
    session = requests.Session()
    session.trust_env = False
    session.proxies.update(requests.utils.get_environ_proxies(base_url))
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        session.verify = bundle
    adapter = requests.adapters.HTTPAdapter(pool_connections=2, pool_maxsize=connections)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
