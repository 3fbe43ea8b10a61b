"""A static file server for cairn-bench model-delta: HTTP/1.1 keep-alive and Range requests
(single and multipart/byteranges, which zsync uses), on 127.0.0.1.

  static_server.py DIR PORT_FILE     serves DIR; writes the chosen port to PORT_FILE
"""
import http.server
import os
import re
import sys


class Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        rng = self.headers.get("Range")
        path = self.translate_path(self.path)
        if not rng or not os.path.isfile(path):
            return super().do_GET()
        size = os.path.getsize(path)
        ranges = []
        for part in re.sub(r"^bytes=", "", rng).split(","):
            start, _, end = part.strip().partition("-")
            if start == "":
                first, last = size - int(end), size - 1
            else:
                first, last = int(start), (int(end) if end else size - 1)
            ranges.append((first, min(last, size - 1)))
        with open(path, "rb") as f:
            def read(first, last):
                f.seek(first)
                return f.read(last - first + 1)
            if len(ranges) == 1:
                first, last = ranges[0]
                body = read(first, last)
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
                self.send_header("Content-Type", "application/octet-stream")
            else:
                boundary = "cairnbenchboundary"
                parts = []
                # Every delimiter, the first included, is CRLF "--" boundary (RFC 2046): zsync
                # reads the line before each boundary and takes a part that does not start so
                # as the end of the answer, then asks for the same ranges again, for ever.
                for first, last in ranges:
                    parts.append((f"\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n"
                                  f"Content-Range: bytes {first}-{last}/{size}\r\n\r\n").encode() +
                                 read(first, last))
                body = b"".join(parts) + f"\r\n--{boundary}--\r\n".encode()
                self.send_response(206)
                self.send_header("Content-Type", f"multipart/byteranges; boundary={boundary}")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)


def main():
    root, port_file = sys.argv[1], sys.argv[2]
    os.chdir(root)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(httpd.server_address[1]))
    os.rename(port_file + ".tmp", port_file)
    httpd.serve_forever()


if __name__ == "__main__":
    main()
