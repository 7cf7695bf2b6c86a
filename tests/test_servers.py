"""Tests of the real-server harness: round trips via Mosquitto, InfluxDB 1.x, VictoriaMetrics."""

from __future__ import annotations

import os
import queue
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import paho.mqtt.client as mqtt
import pytest
from influxdb_client import InfluxDBClient, Point, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS
from servers import (
    LOOPBACK,
    InfluxDB1,
    Mosquitto,
    ServerHTTPError,
    ServerProcess,
    ServerStartError,
    VictoriaMetrics,
    free_port,
    free_ports,
    unique_name,
)

TIMEOUT = 5.0

# --------------------------------------------------------------------------- harness basics


def test_free_ports_are_distinct_and_bindable_on_loopback() -> None:
    ports = free_ports(3)
    assert len(set(ports)) == 3
    for port in [*ports, free_port()]:
        with socket.socket() as sock:
            sock.bind((LOOPBACK, port))


@pytest.mark.parametrize("fixture", ["fresh_mosquitto", "fresh_influxdb", "fresh_victoria_metrics"])
def test_kill_and_restart_on_same_port(fixture: str, request: pytest.FixtureRequest) -> None:
    server: ServerProcess = request.getfixturevalue(fixture)
    port, pid, url = server.port, server.pid, server.url
    assert server.kill() == -9
    assert not server.running
    server.start()
    assert server.running and server.pid != pid
    assert (server.port, server.url) == (port, url)


def test_close_leaves_no_process_and_no_files() -> None:
    server = Mosquitto().start()
    pid, workdir = server.pid, server.workdir
    assert pid is not None
    server.close()
    assert not workdir.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_start_failure_reports_the_server_log() -> None:
    server = Mosquitto(startup_timeout=5)
    try:
        with socket.socket() as squatter:  # take the broker's port first
            squatter.bind((LOOPBACK, server.port))
            squatter.listen()
            with pytest.raises(ServerStartError, match=r"(?s)exited with code.*in use"):
                server.start()
        assert not server.running
    finally:
        server.close()


# --------------------------------------------------------------------------- Mosquitto


@contextmanager
def mqtt_client(broker: Mosquitto, name: str) -> Iterator[tuple[mqtt.Client, queue.Queue]]:
    """A connected paho client with its network loop running; yields (client, messages)."""
    messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    connected = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=unique_name(name))
    client.on_connect = lambda c, u, flags, rc, props: connected.set()
    client.on_message = lambda c, u, msg: messages.put(msg)
    client.connect(broker.host, broker.port, keepalive=10)
    client.loop_start()
    try:
        assert connected.wait(TIMEOUT), "no CONNACK from mosquitto"
        yield client, messages
    finally:
        client.disconnect()
        client.loop_stop()


def test_mosquitto_retained_and_qos1_round_trip(mosquitto: Mosquitto) -> None:
    topic = f"heatrig/test/{unique_name('mqtt')}"
    with mqtt_client(mosquitto, "pub") as (pub, _):
        pub.publish(f"{topic}/setpoint", b"18.5", qos=1, retain=True).wait_for_publish(TIMEOUT)

        with mqtt_client(mosquitto, "sub") as (sub, inbox):
            subscribed = threading.Event()
            sub.on_subscribe = lambda c, u, mid, codes, props: subscribed.set()
            sub.subscribe(f"{topic}/#", qos=1)
            assert subscribed.wait(TIMEOUT)

            retained = inbox.get(timeout=TIMEOUT)  # published before we subscribed
            assert (retained.topic, retained.payload, retained.retain) == (
                f"{topic}/setpoint",
                b"18.5",
                True,
            )

            info = pub.publish(f"{topic}/alarm", b"pump trip", qos=1)
            info.wait_for_publish(TIMEOUT)
            assert info.is_published()
            live = inbox.get(timeout=TIMEOUT)
            assert (live.topic, live.payload, live.qos, live.retain) == (
                f"{topic}/alarm",
                b"pump trip",
                1,
                False,
            )

        # clear the retained message on the shared broker
        pub.publish(f"{topic}/setpoint", b"", qos=1, retain=True).wait_for_publish(TIMEOUT)


# --------------------------------------------------------------------------- InfluxDB 1.x


def test_influxdb_line_protocol_write_and_query(influxdb: InfluxDB1) -> None:
    db = unique_name("rig")
    influxdb.create_database(db)
    influxdb.write(
        [
            "cooling,loop=primary t_supply=18.5,t_return=27.25,pump_on=true 1700000000",
            "cooling,loop=primary t_supply=18.75,t_return=27.5,pump_on=true 1700000010",
            'cooling,loop=secondary t_supply=45.0,mode="recovery" 1700000000',
        ],
        db=db,
        precision="s",
    )
    res = influxdb.query(
        "SELECT t_supply, t_return FROM cooling WHERE loop = 'primary'", db=db, epoch="s"
    )
    series = res["results"][0]["series"][0]
    assert series["columns"] == ["time", "t_supply", "t_return"]
    assert series["values"] == [[1700000000, 18.5, 27.25], [1700000010, 18.75, 27.5]]
    assert influxdb.count("cooling", db) == 3


def test_influxdb_auth_rejects_wrong_credentials(influxdb_auth: InfluxDB1) -> None:
    db = unique_name("auth")
    influxdb_auth.create_database(db)  # as admin
    influxdb_auth.write("m v=1 1", db=db)
    for creds in [(influxdb_auth.username, "wrong"), False]:
        with pytest.raises(ServerHTTPError) as err:
            influxdb_auth.write("m v=2 2", db=db, credentials=creds)
        assert err.value.status == 401
        with pytest.raises(ServerHTTPError) as err:
            influxdb_auth.query("SELECT * FROM m", db=db, credentials=creds)
        assert err.value.status == 401
    assert influxdb_auth.count("m", db) == 1


def test_influxdb_keeps_acknowledged_writes_across_kill_9(fresh_influxdb: InfluxDB1) -> None:
    influx, db = fresh_influxdb, "durable"
    influx.create_database(db)
    base = 1_700_000_000
    lines = [f"heat,unit=hp{i % 3} q_kw={i * 1.5} {base + i}" for i in range(500)]
    for start in range(0, len(lines), 100):  # several acknowledged (204) writes
        influx.write(lines[start : start + 100], db=db, precision="s")
    assert influx.count("heat", db) == 500

    port = influx.port
    assert influx.kill() == -9  # no shutdown, no WAL snapshot: only what was fsynced
    influx.start()
    assert influx.port == port

    assert influx.count("heat", db) == 500
    res = influx.query("SELECT SUM(q_kw) FROM heat", db=db)
    assert res["results"][0]["series"][0]["values"][0][1] == pytest.approx(1.5 * 499 * 500 / 2)
    influx.write(f"heat,unit=hp0 q_kw=1 {base + 1000}", db=db, precision="s")
    assert influx.count("heat", db) == 501


# --------------------------------------------------------------------------- VictoriaMetrics


def test_victoria_metrics_influxdb_client_v2_write(victoria_metrics: VictoriaMetrics) -> None:
    meas = unique_name("cooling")
    now_ns = time.time_ns()
    points = [
        Point(meas)
        .tag("rack", f"r{rack}")
        .field("t_inlet", 22.0 + rack + step / 10)
        .field("fan_pct", 40 + step)
        .time(now_ns - (10 - step) * 10**9, WritePrecision.NS)
        for rack in range(3)
        for step in range(10)
    ]
    with (
        InfluxDBClient(url=victoria_metrics.url, token="unused", org="heatrig") as client,
        client.write_api(write_options=SYNCHRONOUS) as write_api,
    ):
        write_api.write(bucket="rig", record=points)  # POST /api/v2/write?precision=ns

    assert victoria_metrics.export_count(f'{{__name__=~"{meas}_.*"}}') == 60
    assert victoria_metrics.series_count(f'{{__name__=~"{meas}_.*"}}') == 6
    series = victoria_metrics.export(f'{{__name__="{meas}_t_inlet",rack="r2"}}')
    assert len(series) == 1
    assert series[0]["values"][0] == pytest.approx(24.0)
    assert series[0]["timestamps"][0] == (now_ns - 10 * 10**9) // 10**6  # stored in ms
    assert "db" not in series[0]["metric"]  # 1.79 ignores the v2 bucket (v1 ?db= is a label)


def test_victoria_metrics_v1_write_names_and_db_label(victoria_metrics: VictoriaMetrics) -> None:
    meas = unique_name("pump")
    victoria_metrics.write(f"{meas},id=p1 speed=1450i,power_kw=7.5", db="site1")
    names = {
        s["metric"]["__name__"]: s["metric"]
        for s in victoria_metrics.export(f'{{__name__=~"{meas}_.*"}}')
    }
    assert set(names) == {f"{meas}_speed", f"{meas}_power_kw"}
    assert names[f"{meas}_speed"] == {"__name__": f"{meas}_speed", "id": "p1", "db": "site1"}


def test_victoria_metrics_drops_bad_lines_but_answers_204(
    victoria_metrics: VictoriaMetrics,
) -> None:
    meas = unique_name("bad")
    before = victoria_metrics.rejected_rows()
    far_future_ns = time.time_ns() + 5 * 86400 * 10**9
    victoria_metrics.write(  # no exception: every line gets 204
        [f"{meas},tag v=1", f"{meas} v=", f"{meas} v=2 {far_future_ns}", f"{meas} v=3"]
    )
    assert victoria_metrics.export_count(f'{{__name__="{meas}_v"}}') == 1
    assert victoria_metrics.rejected_rows() - before == 3
