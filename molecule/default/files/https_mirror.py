"""Serve a directory over HTTPS on the loopback: the stand-in of GitHub's release downloads.

Usage: python3 https_mirror.py DIRECTORY CERT KEY PORT
"""

import functools
import http.server
import ssl
import sys


def main() -> None:
    directory, cert, key, port = sys.argv[1:5]
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=directory)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", int(port)), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
