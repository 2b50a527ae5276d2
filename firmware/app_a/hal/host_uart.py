# A UART on the host: a serial device path (a pty in the tests, opened in raw mode by whoever
# made it), read without blocking.
import select

UART_CHUNK = 64  # most bytes one read() returns


class HostUart:
    # A serial device path (opened in raw mode by whoever made it), read without blocking: a
    # file's read(n) waits for all n bytes, so bytes are taken one at a time while poll() says
    # there is one. read() returns at most UART_CHUNK bytes, or None.
    def __init__(self, path):
        import select
        self.f = open(path, "rb")
        self.poll = select.poll()
        self.poll.register(self.f, select.POLLIN)

    def read(self):
        out = None
        while len(out or b"") < UART_CHUNK and self.poll.poll(0):
            b = self.f.read(1)
            if not b:
                break
            out = out + b if out else b
        return out
