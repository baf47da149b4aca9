"""`maskc explore`: compose a pattern in a browser and watch its mask, numbers, reach and model change.

A local web server (maskc.explore.server, standard library only) serves one static page
(static/index.html, no build step, no network) and a JSON API (maskc.explore.api) that computes
everything with maskc itself.
"""
