"""The stack's busy-port check: a real listener is busy, TIME-WAIT leftovers are not.

A stopped `refunds dev` leaves its accepted connections in TIME-WAIT for about a minute;
`refunds demo` (or a new `refunds dev`) on the same ports must start anyway, as the servers it
starts bind with ``SO_REUSEADDR`` and do not mind them.
"""

from __future__ import annotations

import socket

from devstack.stack import HOST, port_in_use


def time_wait_port() -> int:
    """A port whose listener has gone, with the server's side of a connection in TIME-WAIT
    (the server closes first, as a stopping server does)."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((HOST, 0))
        listener.listen()
        port = int(listener.getsockname()[1])
        client = socket.create_connection((HOST, port))
        accepted, _ = listener.accept()
        accepted.close()  # the server's side closes first: it goes to TIME-WAIT
        client.recv(1)  # sees the FIN
        client.close()
    return port


def plain_bind_fails(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return True
    return False


def test_a_port_left_in_time_wait_is_free() -> None:
    port = time_wait_port()
    # The TIME-WAIT socket is there: a bind without SO_REUSEADDR is refused...
    assert plain_bind_fails(port)
    # ...but a server would start on the port, so the stack's check lets it.
    assert not port_in_use(port)


def test_a_listening_port_is_busy() -> None:
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((HOST, 0))
        listener.listen()
        assert port_in_use(int(listener.getsockname()[1]))


def test_a_bound_port_is_busy_even_before_it_listens() -> None:
    with socket.socket() as bound:
        bound.bind((HOST, 0))
        assert port_in_use(int(bound.getsockname()[1]))
