"""The ClientApp's side of :mod:`strategies.packing`: a Flower mod that unpacks each
instruction before the handlers see it and packs the reply, so a message crosses every hop
as one array instead of one object per tensor."""
from __future__ import annotations

from flwr.app import Context, Message
from flwr.clientapp.typing import ClientAppCallable

from strategies.packing import is_packed, pack_content, unpack_content


def packing_mod(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Unpack ``message``, run the rest of the app, pack the reply; an instruction that came
    unpacked (a server that does not pack) is answered unpacked.

    Raises
    ------
    ValueError
        The instruction's packed arrays do not match their layout (Flower then answers the
        server with an error reply naming it).
    """
    packed = message.has_content() and is_packed(message.content)
    if packed:
        message.content = unpack_content(message.content)
    reply = call_next(message, context)
    if packed and reply.has_content():
        reply.content = pack_content(reply.content)
    return reply
