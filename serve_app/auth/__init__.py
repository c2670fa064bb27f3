"""Authentication: JWT bearer tokens and API keys, turned into the request's ``Principal``.

``config`` holds the typed settings, ``jwt`` and ``api_keys`` the two kinds of
credential, ``deps`` the FastAPI security dependencies the routes ask for.
"""
