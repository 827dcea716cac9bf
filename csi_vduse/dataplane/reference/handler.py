"""virtio-blk request handling: header, data and status byte of each chain.

A request is a 16-byte header {type, ioprio, sector} in the device-readable
part, data in either part, and a status byte as the last device-writable byte.
Malformed requests get IOERR (or UNSUPP for unknown types) whenever a status
byte can be found; a chain too broken to carry one is returned with nothing
written, so the driver never waits forever.
"""

from __future__ import annotations

import errno
import logging
import struct
from collections.abc import Sequence

from csi_vduse.dataplane.blk.backend import FileBackend
from csi_vduse.dataplane.blk.profile import MAX_ZERO_RANGES
from csi_vduse.dataplane.reference.split_ring import Chain
from csi_vduse.virtio.blk import ID_BYTES, REQUEST_HEADER, SECTOR_SIZE, BlkStatus, RequestType

log = logging.getLogger(__name__)

RANGE = struct.Struct("<QII")  # DISCARD / WRITE_ZEROES: sector, sectors, flags
WRITE_ZEROES_UNMAP = 1


class RequestError(Exception):
    """A request the device must fail with IOERR."""


def _total(views: Sequence[memoryview]) -> int:
    return sum(len(v) for v in views)


def _gather(views: Sequence[memoryview], length: int) -> bytes:
    out = bytearray()
    for view in views:
        if len(out) >= length:
            break
        out += view[: length - len(out)]
    return bytes(out)


def _split(views: Sequence[memoryview], at: int) -> tuple[list[memoryview], list[memoryview]]:
    """Views before byte ``at`` and from it on."""
    head: list[memoryview] = []
    tail: list[memoryview] = []
    for view in views:
        if at >= len(view):
            head.append(view)
            at -= len(view)
        elif at > 0:
            head.append(view[:at])
            tail.append(view[at:])
            at = 0
        else:
            tail.append(view)
    return head, tail


class BlkHandler:
    """Serves requests against one backend; ``serial`` answers GET_ID."""

    def __init__(
        self, backend: FileBackend, *, serial: bytes, readonly: bool, can_flush: bool = True,
        can_discard: bool = True,
    ) -> None:  # fmt: skip
        self.backend = backend
        self.serial = serial[:ID_BYTES]
        self.readonly = readonly
        self.can_flush = can_flush
        self.can_discard = can_discard
        self.capacity = backend.size // SECTOR_SIZE * SECTOR_SIZE

    def handle(self, chain: Chain) -> int:
        """Serve ``chain``; returns how many bytes were written into it."""
        if not chain.status_mapped:
            log.error("request %d is malformed: %s", chain.head, chain.error or "no status byte")
            return 0  # nowhere to put a status: hand the buffers back untouched
        status_view = chain.writable[-1]  # the status byte is the last writable byte
        if chain.error is not None:
            log.error("request %d is malformed: %s", chain.head, chain.error)
            status_view[-1] = BlkStatus.IOERR
            return 1
        data_in, _ = _split(chain.writable, _total(chain.writable) - 1)
        written = 0
        try:
            status, written = self._serve(chain.readable, data_in)
        except RequestError as exc:
            log.warning("request %d failed: %s", chain.head, exc)
            status = BlkStatus.IOERR
        except OSError as exc:
            log.error("request %d: backend I/O error: %s", chain.head, exc)
            status = BlkStatus.IOERR
        status_view[-1] = status
        return written + 1

    def _serve(
        self, readable: list[memoryview], data_in: list[memoryview]
    ) -> tuple[BlkStatus, int]:
        if _total(readable) < REQUEST_HEADER.size:
            raise RequestError("header shorter than 16 bytes")
        kind, _ioprio, sector = REQUEST_HEADER.unpack(_gather(readable, REQUEST_HEADER.size))
        _, data_out = _split(readable, REQUEST_HEADER.size)
        if kind == RequestType.IN:
            length = _total(data_in)
            self._check_range(sector, length)
            self.backend.read_into(data_in, sector * SECTOR_SIZE)
            return BlkStatus.OK, length
        if kind == RequestType.OUT:
            if self.readonly:
                raise RequestError("write to a read-only device")
            self._check_range(sector, _total(data_out))
            self.backend.write_from(data_out, sector * SECTOR_SIZE)
            return BlkStatus.OK, 0
        if kind == RequestType.FLUSH:
            if not self.can_flush:
                return BlkStatus.UNSUPP, 0
            self.backend.flush()
            return BlkStatus.OK, 0
        if kind in (RequestType.DISCARD, RequestType.WRITE_ZEROES):
            return self._zero_ranges(kind, _gather(data_out, _total(data_out))), 0
        if kind == RequestType.GET_ID:
            ident = self.serial.ljust(ID_BYTES, b"\0")[: _total(data_in)]
            offset = 0
            for view in data_in:
                piece = ident[offset : offset + len(view)]
                view[: len(piece)] = piece
                offset += len(piece)
            return BlkStatus.OK, len(ident)
        log.info("unsupported request type %d", kind)
        return BlkStatus.UNSUPP, 0

    def _zero_ranges(self, kind: int, raw: bytes) -> BlkStatus:
        """All ranges are checked before any is acted on."""
        if not self.can_discard:
            return BlkStatus.UNSUPP
        count = len(raw) // RANGE.size
        if self.readonly or not raw or len(raw) % RANGE.size or count > MAX_ZERO_RANGES:
            raise RequestError(f"{len(raw)} bytes of discard/write-zeroes ranges")
        ranges = [RANGE.unpack_from(raw, RANGE.size * i) for i in range(count)]
        for sector, sectors, flags in ranges:
            if flags & ~WRITE_ZEROES_UNMAP or (kind == RequestType.DISCARD and flags):
                return BlkStatus.UNSUPP
            self._check_range(sector, sectors * SECTOR_SIZE)
        for sector, sectors, flags in ranges:
            if not sectors:
                continue
            unmap = kind == RequestType.DISCARD or bool(flags & WRITE_ZEROES_UNMAP)
            try:
                self.backend.zero(sector * SECTOR_SIZE, sectors * SECTOR_SIZE, unmap=unmap)
            except OSError as exc:
                # Discard is only advice: a backing that cannot punch holes keeps the data.
                if kind != RequestType.DISCARD or exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                    raise
        return BlkStatus.OK

    def _check_range(self, sector: int, length: int) -> None:
        if length % SECTOR_SIZE:
            raise RequestError(f"data length {length} is not a multiple of {SECTOR_SIZE}")
        end = sector * SECTOR_SIZE + length
        if end > self.capacity:
            raise RequestError(f"sectors {sector}+{length // SECTOR_SIZE} beyond the capacity")
