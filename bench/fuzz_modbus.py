"""Fuzz: a flood of malformed Modbus/TCP frames against the rig's server.

    python -m bench.fuzz_modbus [--frames 100000] [--clients 4] [--batch 50] [--seed 1]
                                [--log-level INFO] [--json]

`rig.protocols.modbus.server.ModbusServer` serves the reference site on a free loopback
port on this process's asyncio loop (as in the live rig). ``--clients`` raw-socket
clients on the same loop send ``--frames`` frames between them, pipelined ``--batch``
to a segment: bad protocol ids, impossible MBAP lengths, function codes not served,
bad quantities, byte counts, coil values and PDU lengths, unit ids not served, random
read PDUs, and valid reads among them. Every logger (pymodbus's too) writes to one file
at ``--log-level``. Reported: frames/s; answers expected, received, in order and right;
the server's protocol error counts against the kinds sent; the log's size, lines and
tracebacks; whether every register and bit read afterwards is right.

Clean (exit 0) means: no answer missing, out of order or wrong; the counts agree; the
log is under 10 bytes a frame (1 MB for 100,000 frames; at least 100 kB allowed) with no
traceback; every read afterwards is right.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shlex
import struct
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SITE = "reference-1mw"
SERVED = (1, 2, 3, 4, 5, 6, 15, 16, 22, 23)
READ_LIMITS = {1: 2000, 2: 2000, 3: 125, 4: 125}
LOG_BYTES_PER_FRAME = 10
LOG_MIN_LIMIT = 100_000
# kind of frame: weight in the mix
MIX = {"bad_protocol_id": 2.0, "bad_length": 0.3, "illegal_function": 1.0,
       "bad_quantity": 2.0, "bad_byte_count": 1.0, "bad_coil_value": 1.0,
       "malformed_pdu": 2.0, "unknown_unit": 1.0, "random_read": 1.0, "valid_read": 1.0}
EXCEPTION_OF = {"illegal_function": 1, "bad_quantity": 3, "bad_byte_count": 3,
                "bad_coil_value": 3, "malformed_pdu": 3, "unknown_unit": 0x0B}


@dataclass(slots=True)
class Frame:
    data: bytes
    kind: str  # of MIX
    counts_as: str | None  # the protocol error the server must count, if any
    answered: bool = True
    closes: bool = False
    expect: bytes | None = None  # the exact answer PDU, when known


class Maker:
    """Frames of each kind for a map; expected answers from the snapshot's values."""

    def __init__(self, rng: np.random.Generator, units: list[int],
                 blocks: dict[tuple[int, int], bytes], sizes: dict[tuple[int, int], int]) -> None:
        self.rng = rng
        self.units = units
        self.blocks = blocks  # (unit, read fc) -> the whole block as a read answers it
        self.sizes = sizes  # (unit, read fc) -> registers or bits
        self.absent = [u for u in range(256) if u not in units]

    def _int(self, lo: int, hi: int) -> int:
        """An integer in [lo, hi]."""
        return int(self.rng.integers(lo, hi + 1))

    def _bytes(self, n: int) -> bytes:
        return self.rng.integers(0, 256, n, dtype=np.uint8).tobytes()

    def _quantity_outside(self, most: int) -> int:
        return 0 if self.rng.random() < 0.3 else self._int(most + 1, 0xFFFF)

    def make(self, kind: str, tid: int) -> Frame:
        unit = self.units[self._int(0, len(self.units) - 1)]
        pdu: bytes
        if kind == "bad_protocol_id":
            return Frame(struct.pack(">HHHBBHH", tid, self._int(1, 0xFFFF), 6, unit, 3, 0, 1),
                         kind, kind, answered=False)
        if kind == "bad_length":
            length = self._int(0, 1) if self.rng.random() < 0.3 else self._int(255, 0xFFFF)
            return Frame(struct.pack(">HHHB", tid, 0, length, unit) + self._bytes(5), kind,
                         kind, answered=False, closes=True)
        if kind == "unknown_unit":
            unit = self.absent[self._int(0, len(self.absent) - 1)]
            pdu = struct.pack(">BHH", self._int(1, 4), 0, 1)
            return self._frame(tid, unit, pdu, kind, kind)
        if kind == "illegal_function":
            fc = self._int(0, 255)
            while fc in SERVED:
                fc = self._int(0, 255)
            return self._frame(tid, unit, bytes([fc]) + self._bytes(self._int(0, 8)), kind,
                               kind)
        if kind == "bad_quantity":
            return self._frame(tid, unit, self._bad_quantity(), kind, kind)
        if kind == "bad_byte_count":
            return self._frame(tid, unit, self._bad_byte_count(), kind, kind)
        if kind == "bad_coil_value":
            value = self._int(1, 0xFFFF)
            while value == 0xFF00:
                value = self._int(1, 0xFFFF)
            return self._frame(tid, unit, struct.pack(">BHH", 5, self._int(0, 9), value),
                               kind, kind)
        if kind == "malformed_pdu":
            return self._frame(tid, unit, self._malformed(), kind, kind)
        if kind == "random_read":
            fc = self._int(1, 4)
            body = self._bytes(self._int(0, 8))
            counts_as = None
            if len(body) != 4:
                counts_as = "malformed_pdu"
            elif not 1 <= struct.unpack(">H", body[2:])[0] <= READ_LIMITS[fc]:
                counts_as = "bad_quantity"
            return self._frame(tid, unit, bytes([fc]) + body, kind, counts_as)
        if kind == "valid_read":
            choices = [k for k in self.sizes if k[0] == unit] or list(self.sizes)
            unit, fc = choices[self._int(0, len(choices) - 1)]
            size = self.sizes[(unit, fc)]
            count = self._int(1, min(size, READ_LIMITS[fc]))
            address = self._int(0, size - count)
            return self._frame(tid, unit, struct.pack(">BHH", fc, address, count), kind, None,
                               self._read_answer(unit, fc, address, count))
        raise ValueError(f"unknown kind {kind!r}")

    def _frame(self, tid: int, unit: int, pdu: bytes, kind: str, counts_as: str | None,
               expect: bytes | None = None) -> Frame:
        if expect is None and counts_as is not None:
            expect = bytes([pdu[0] | 0x80, EXCEPTION_OF[counts_as]])
        return Frame(struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu, kind, counts_as,
                     expect=expect)

    def _read_answer(self, unit: int, fc: int, address: int, count: int) -> bytes:
        block = self.blocks[(unit, fc)]
        if fc <= 2:
            bits = np.unpackbits(np.frombuffer(block, dtype=np.uint8), bitorder="little")
            data = np.packbits(bits[address:address + count], bitorder="little").tobytes()
        else:
            data = block[2 * address:2 * (address + count)]
        return bytes([fc, len(data)]) + data

    def _bad_quantity(self) -> bytes:
        fc = (1, 2, 3, 4, 15, 16, 23)[self._int(0, 6)]
        if fc <= 4:
            return struct.pack(">BHH", fc, 0, self._quantity_outside(READ_LIMITS[fc]))
        if fc == 15:
            return struct.pack(">BHHB", 15, 0, self._quantity_outside(1968), 2) + b"\0\0"
        if fc == 16:
            return struct.pack(">BHHB", 16, 0, self._quantity_outside(123), 2) + b"\0\0"
        if self.rng.random() < 0.5:
            return struct.pack(">BHHHHBH", 23, 0, self._quantity_outside(125), 0, 1, 2, 0)
        return struct.pack(">BHHHHBH", 23, 0, 1, 0, self._quantity_outside(121), 2, 0)

    def _bad_byte_count(self) -> bytes:
        fc = (15, 16, 23)[self._int(0, 2)]
        count = self._int(1, {15: 1968, 16: 123, 23: 121}[fc])
        want = (count + 7) // 8 if fc == 15 else 2 * count
        byte_count = self._int(0, 255)
        while byte_count == want:
            byte_count = self._int(0, 255)
        data = self._bytes(self._int(0, 16))
        if fc == 23:
            return struct.pack(">BHHHHB", 23, 0, 1, 0, count, byte_count) + data
        return struct.pack(">BHHB", fc, 0, count, byte_count) + data

    def _malformed(self) -> bytes:
        fc = (1, 2, 3, 4, 5, 6, 15, 16, 22, 23)[self._int(0, 9)]
        fixed = {1: 4, 2: 4, 3: 4, 4: 4, 5: 4, 6: 4, 22: 6}
        if fc in fixed:
            n = self._int(0, 12)
            while n == fixed[fc]:
                n = self._int(0, 12)
            return bytes([fc]) + self._bytes(n)
        if fc in (15, 16):
            if self.rng.random() < 0.4:
                return bytes([fc]) + self._bytes(self._int(0, 4))
            count = self._int(1, 100)
            byte_count = (count + 7) // 8 if fc == 15 else 2 * count
            n = byte_count + (self._int(1, 3) if self.rng.random() < 0.5 else -self._int(
                1, byte_count))
            return struct.pack(">BHHB", fc, 0, count, byte_count) + self._bytes(n)
        if self.rng.random() < 0.4:
            return bytes([23]) + self._bytes(self._int(0, 8))
        count = self._int(1, 100)
        n = 2 * count + (self._int(1, 3) if self.rng.random() < 0.5 else -self._int(
            1, 2 * count))
        return struct.pack(">BHHHHB", 23, 0, 1, 0, count, 2 * count) + self._bytes(n)


@dataclass
class Tally:
    sent: Counter[str] = field(default_factory=Counter)
    counts_as: Counter[str] = field(default_factory=Counter)
    answers_expected: int = 0
    answers_received: int = 0
    out_of_order: int = 0
    wrong: int = 0
    missing: int = 0
    connections: int = 0


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await asyncio.wait_for(reader.readexactly(7), 5.0)
    tid, _, length, _ = struct.unpack(">HHHB", head)
    return tid, await asyncio.wait_for(reader.readexactly(length - 1), 5.0)


async def _read_answers(reader: asyncio.StreamReader, n: int,
                        into: list[tuple[int, bytes]]) -> None:
    """Append ``n`` answers (transaction id, PDU) to ``into``."""
    for _ in range(n):
        head = await reader.readexactly(7)
        tid, _, length, _ = struct.unpack(">HHHB", head)
        into.append((tid, await reader.readexactly(length - 1)))


async def _client(port: int, maker: Maker, frames: int, batch: int, tally: Tally) -> None:
    kinds = list(MIX)
    weights = np.array([MIX[k] for k in kinds])
    weights /= weights.sum()
    reader = writer = None
    tid = 0
    left = frames
    while left > 0:
        if writer is None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            tally.connections += 1
        assert reader is not None
        n = min(batch, left)
        picks = [kinds[i] for i in maker.rng.choice(len(kinds), n, p=weights)]
        picks.sort(key=lambda k: k == "bad_length")  # a closing frame last
        if "bad_length" in picks:
            picks = picks[:picks.index("bad_length") + 1]
        out: list[tuple[int, Frame]] = []
        for kind in picks:
            tid = (tid + 1) % 65536
            frame = maker.make(kind, tid)
            out.append((tid, frame))
            tally.sent[kind] += 1
            if frame.counts_as:
                tally.counts_as[frame.counts_as] += 1
        left -= len(out)
        writer.write(b"".join(f.data for _, f in out))
        expected = [(t, f) for t, f in out if f.answered]
        tally.answers_expected += len(expected)
        answers: list[tuple[int, bytes]] = []
        try:
            await asyncio.wait_for(_read_answers(reader, len(expected), answers), 5.0)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            tally.missing += len(expected) - len(answers)
            writer.close()
            writer = None
        tally.answers_received += len(answers)
        for (want_tid, frame), (got_tid, pdu) in zip(expected, answers, strict=False):
            if got_tid != want_tid:
                tally.out_of_order += 1
            if frame.expect is not None and pdu != frame.expect:
                tally.wrong += 1
            elif frame.expect is None and pdu[0] & 0x80 and pdu[1] != 2:
                tally.wrong += 1  # a random read is answered, or refused with 02
        if writer is not None and out[-1][1].closes:
            try:
                closed = await asyncio.wait_for(reader.read(1), 5.0) == b""
            except ConnectionError:
                closed = True
            except TimeoutError:
                closed = False
            if not closed:
                tally.wrong += 1
            writer.close()
            writer = None
    if writer is not None:
        writer.close()


async def _check_reads(port: int, maker: Maker) -> tuple[int, int]:
    """Every block read in whole: (reads, wrong answers)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    reads = wrong = 0
    for (unit, fc), size in maker.sizes.items():
        step = READ_LIMITS[fc]
        for address in range(0, size, step):
            count = min(step, size - address)
            reads += 1
            writer.write(struct.pack(">HHHBBHH", reads, 0, 6, unit, fc, address, count))
            try:
                tid, pdu = await _read_answer(reader)
            except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                wrong += 1
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                continue
            if tid != reads or pdu != maker._read_answer(unit, fc, address, count):
                wrong += 1
    writer.close()
    return reads, wrong


async def fuzz(frames: int, clients: int, batch: int, seed: int) -> dict[str, Any]:
    """Serve the reference site, send the frames, check the reads; the figures."""
    from rig.protocols.modbus.registers import ModbusMap, Table
    from rig.protocols.modbus.server import ModbusConfig, ModbusServer
    from twin.plant import Twin
    from twin.site import Site

    twin = Twin(Site(name=SITE), seed=1)
    twin.run_until(30.0)
    modbus_map = ModbusMap.for_twin(twin)
    server = ModbusServer(modbus_map, ModbusConfig(port=0))
    await server.start()
    values = twin.measured_values()
    server.refresh(values, twin.now)
    read_fc = {Table.COILS: 1, Table.DISCRETE_INPUTS: 2, Table.HOLDING_REGISTERS: 3,
               Table.INPUT_REGISTERS: 4}
    blocks: dict[tuple[int, int], bytes] = {}
    sizes: dict[tuple[int, int], int] = {}
    for unit in modbus_map.devices:
        for table, image in modbus_map.encode_unit(values, unit).items():
            fc = read_fc[table]
            sizes[(unit, fc)] = len(image)
            blocks[(unit, fc)] = (np.packbits(image, bitorder="little").tobytes() if table.bits
                                  else image.astype(">u2").tobytes())
    rng = np.random.default_rng(seed)
    tallies = [Tally() for _ in range(clients)]
    makers = [Maker(np.random.default_rng(rng.integers(1 << 32)), sorted(modbus_map.devices),
                    blocks, sizes) for _ in range(clients)]
    share = [frames // clients + (1 if k < frames % clients else 0) for k in range(clients)]
    began = time.perf_counter()
    await asyncio.gather(*(_client(server.port, m, n, batch, t)
                           for m, n, t in zip(makers, share, tallies, strict=True)))
    seconds = time.perf_counter() - began
    reads, reads_wrong = await _check_reads(server.port, makers[0])
    stats = server.stats()
    await server.stop()
    total = Tally()
    for t in tallies:
        total.sent += t.sent
        total.counts_as += t.counts_as
        for name in ("answers_expected", "answers_received", "out_of_order", "wrong",
                     "missing", "connections"):
            setattr(total, name, getattr(total, name) + getattr(t, name))
    errors = {k: v for k, v in stats.get("protocol_errors", {}).items() if v}
    return {"frames": frames, "clients": clients, "batch": batch, "seed": seed,
            "seconds": seconds, "frames_per_s": frames / seconds,
            "sent": dict(total.sent), "protocol_errors": errors,
            "counts_agree": errors == dict(total.counts_as),
            "answers_expected": total.answers_expected,
            "answers_received": total.answers_received, "answers_missing": total.missing,
            "answers_out_of_order": total.out_of_order, "answers_wrong": total.wrong,
            "connections": total.connections, "reads_checked": reads,
            "reads_wrong": reads_wrong, "server_requests": stats["requests"],
            "server_exceptions": stats["exceptions"]}


def run(frames: int, clients: int, batch: int, seed: int, log_level: str) -> dict[str, Any]:
    """`fuzz` with every logger writing to a file; adds the log's figures and a verdict."""
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "fuzz.log"
        handler = logging.FileHandler(log_path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: "
                                               "%(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(log_level)
        try:
            result = asyncio.run(fuzz(frames, clients, batch, seed))
        finally:
            root.removeHandler(handler)
            handler.close()
        text = log_path.read_text(errors="replace")
    lines = text.splitlines()
    limit = max(LOG_MIN_LIMIT, LOG_BYTES_PER_FRAME * frames)
    result.update(log_level=log_level, log_bytes=len(text.encode()), log_lines=len(lines),
                  log_tracebacks=text.count("Traceback"), log_limit_bytes=limit,
                  log_head=lines[:40])
    result["clean"] = (result["answers_missing"] == 0 and result["answers_out_of_order"] == 0
                       and result["answers_wrong"] == 0 and result["counts_agree"]
                       and result["reads_wrong"] == 0 and result["log_tracebacks"] == 0
                       and result["log_bytes"] < limit)
    return result


def report(r: dict[str, Any], command: str) -> str:
    """The result table, then the start of the log."""
    rows = [
        ("frames / clients / per segment", f"{r['frames']:,} / {r['clients']} / {r['batch']}"),
        ("frames/s", f"{r['frames_per_s']:,.0f} ({r['seconds']:.1f} s)"),
        ("sent by kind", ", ".join(f"{k} {v:,}" for k, v in sorted(r["sent"].items()))),
        ("protocol errors counted", ", ".join(f"{k} {v:,}" for k, v in
                                              sorted(r["protocol_errors"].items()))),
        ("counts agree with the kinds sent", "yes" if r["counts_agree"] else "NO"),
        ("answers expected / received", f"{r['answers_expected']:,} / "
                                        f"{r['answers_received']:,}"),
        ("answers missing / out of order / wrong",
         f"{r['answers_missing']} / {r['answers_out_of_order']} / {r['answers_wrong']}"),
        ("connections opened", f"{r['connections']:,}"),
        ("reads afterwards: checked / wrong", f"{r['reads_checked']} / {r['reads_wrong']}"),
        (f"log at {r['log_level']}: bytes / lines / tracebacks",
         f"{r['log_bytes']:,} / {r['log_lines']:,} / {r['log_tracebacks']} "
         f"(limit {r['log_limit_bytes']:,} bytes)"),
        ("verdict", "clean" if r["clean"] else "NOT clean"),
    ]
    width = max(len(k) for k, _ in rows)
    out = [f"command: {command}", ""] + [f"{k:<{width}}  {v}" for k, v in rows]
    out += ["", f"log (first {len(r['log_head'])} of {r['log_lines']:,} lines):"]
    out += [f"  {line[:200]}" for line in r["log_head"]]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bench.fuzz_modbus``."""
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz_modbus",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=100_000, help="frames sent (100000)")
    parser.add_argument("--clients", type=int, default=4, help="connections at once (4)")
    parser.add_argument("--batch", type=int, default=50, help="frames a segment (50)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (1)")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="(INFO)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.frames < 1 or args.clients < 1 or not 1 <= args.batch <= 1000:
        parser.error("--frames and --clients must be >= 1, --batch 1..1000")
    command = "python -m bench.fuzz_modbus " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    result = run(args.frames, args.clients, args.batch, args.seed, args.log_level)
    print(json.dumps(result, indent=1) if args.json else report(result, command.strip()))
    return 0 if result["clean"] else 1


if __name__ == "__main__":
    sys.exit(main())
