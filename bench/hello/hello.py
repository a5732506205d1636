"""The floor of the HTTP benchmark: bare gunicorn serving a five-line WSGI hello (`hello:app`)."""


def app(environ, start_response):
    """Answer every request with the same small JSON body."""
    body = b'{"message":"Hello"}\n'
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
