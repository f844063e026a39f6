# The gunicorn peer: the smallest WSGI app that answers GET / with "hello", like the demo.
BODY = b"hello"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]


def app(environ, start_response):
    start_response("200 OK", HEADERS)
    return [BODY]
