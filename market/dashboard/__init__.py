"""The web dashboard served next to the API under ``/dashboard``.

Server-rendered HTML with inline CSS and SVG: no JavaScript library and no CDN, so it works offline.
Sign-in takes the same API keys as the API and every page re-checks the key, so scopes and
visibility are the API's own.
"""
