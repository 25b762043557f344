"""Server-rendered pages served by the api app: the customer portal and the operator's clients.

`pages.install(app)` adds the routes and the static files. The browser authenticates once
through the login form; see `login` for why the key lives in an HttpOnly cookie.
"""
