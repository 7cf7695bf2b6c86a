"""Secrets only from the environment: a credential in a URL is refused without being
repeated, and no credential reaches a file of a run directory, its summary or the log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from servers import InfluxDB1, Mosquitto, unique_name

from rig.present.summary import Export
from rig.protocols.mqtt.config import parse_url
from rig.record.credentials import redact_url, url_credentials
from rig.record.influx import InfluxTarget, check_url
from rig.record.writer import scrub
from twin.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
SECRET = "Zq9-s3cr3t-VALUE"

INFLUX_REFUSED = [
    f"http://user:{SECRET}@127.0.0.1:8086?db=x",
    f"http://{SECRET}@127.0.0.1:8086",  # a token given as the user name
    f"http://:{SECRET}@127.0.0.1:8086/?db=x",
    f"http://127.0.0.1:8086?db=x&password={SECRET}",
    f"http://127.0.0.1:8086?password={SECRET}&token={SECRET}",
    f"http://127.0.0.1:8086?db=x&u=admin&p={SECRET}",  # InfluxDB 1.x query credentials
    f"influx2://127.0.0.1:8086/org/bucket?token={SECRET}",
    f"influx1://127.0.0.1:8086/rig?api_key={SECRET}",
    f"http://127.0.0.1:8086?db=x#secret={SECRET}",
    f"http://127.0.0.1:99999?db=x&password={SECRET}",  # also a bad port
    f"ftp://user:{SECRET}@127.0.0.1:8086",  # also a bad scheme
    f"http://[::1?token={SECRET}",  # not even parseable
]
MQTT_REFUSED = [
    f"mqtt://user:{SECRET}@127.0.0.1:1883",
    f"mqtts://{SECRET}@broker.example",
    f"mqtt://127.0.0.1:1883?password={SECRET}",
    f"mqtts://broker.example?token={SECRET}&key={SECRET}",
    f"mqtt://127.0.0.1:99999?password={SECRET}",
    f"http://user:{SECRET}@127.0.0.1:1883",
]


def heatrig(*args: str, env: dict[str, str] | None = None,
            timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rig.cli", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=timeout, check=False,
                          env={**os.environ, **(env or {})})


def files_holding(root: Path, secret: str) -> list[Path]:
    """Every file under ``root`` whose bytes contain ``secret``."""
    return [p for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("url", INFLUX_REFUSED)
def test_influx_url_with_credentials_is_refused_without_repeating_them(url: str) -> None:
    for call in (check_url, lambda u: InfluxTarget.from_url(u, env={})):
        with pytest.raises(ConfigError) as err:
            call(url)
        message = str(err.value)
        assert SECRET not in message and "\n" not in message
        assert "HEATRIG_INFLUX_PASSWORD" in message and "HEATRIG_INFLUX_TOKEN" in message


@pytest.mark.parametrize("url", MQTT_REFUSED)
def test_mqtt_url_with_credentials_is_refused_without_repeating_them(url: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_url(url)
    message = str(err.value)
    assert SECRET not in message and "\n" not in message
    assert "HEATRIG_MQTT_USERNAME" in message and "HEATRIG_MQTT_PASSWORD" in message


def test_urls_without_credentials_pass_and_errors_still_show_them() -> None:
    assert url_credentials("http://127.0.0.1:8086?db=x&rp=y&org=o&api=v1") == []
    assert check_url("influx2://127.0.0.1:8086/org/bucket") == (
        "influx2://127.0.0.1:8086/org/bucket")
    assert parse_url("mqtts://broker.example:8884").port == 8884
    with pytest.raises(ConfigError, match=r"'mqtt://127\.0\.0\.1:99999'"):
        parse_url("mqtt://127.0.0.1:99999")


def test_redaction_wherever_a_url_is_shown() -> None:
    assert redact_url(f"http://u:{SECRET}@h:8086?db=x&token={SECRET}") == (
        "http://***@h:8086?db=x&token=***")
    assert redact_url("http://h:8086?db=x") == "http://h:8086?db=x"
    summary = Export(influx=f"http://h:8086?db=x&password={SECRET}", error=None).as_dict()
    assert SECRET not in json.dumps(summary) and "db=x" in summary["influx"]
    manifest = scrub({"source": f"forwarded to http://u:{SECRET}@h:8086 and on",
                      "api_token": SECRET, "nested": [{"url": f"mqtt://h?key={SECRET}"}]})
    assert SECRET not in json.dumps(manifest)
    assert manifest["source"] == "forwarded to http://***@h:8086 and on"


# --------------------------------------------------------------------------- command line


@pytest.fixture(scope="module")
def recorded_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("secrets") / "run"
    done = heatrig("sim", "reference-1mw", "--duration", "10 min", "--out", str(run_dir),
                   "--quiet")
    assert done.returncode == 0, done.stderr
    return run_dir


def _assert_refused(done: subprocess.CompletedProcess[str], run_dir: Path) -> None:
    assert done.returncode == 2, done.stderr
    assert SECRET not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert "credentials in the URL" in done.stderr
    if run_dir.exists():
        assert files_holding(run_dir, SECRET) == []


@pytest.mark.parametrize("url", [u for u in INFLUX_REFUSED if "99999" not in u
                                 and "ftp" not in u and "[" not in u])
def test_cli_export_refuses_credentials_in_the_url(recorded_run: Path, url: str) -> None:
    _assert_refused(heatrig("export", str(recorded_run), "--influx", url), recorded_run)


@pytest.mark.parametrize("option, url", [("--mqtt", MQTT_REFUSED[0]), ("--mqtt", MQTT_REFUSED[2]),
                                         ("--influx", INFLUX_REFUSED[0]),
                                         ("--influx", INFLUX_REFUSED[5])])
def test_cli_run_refuses_credentials_in_the_url(tmp_path: Path, option: str, url: str) -> None:
    out = tmp_path / "run"
    done = heatrig("run", "reference-1mw", "--duration", "1 min", "--modbus", "127.0.0.1:0",
                   "--broker-port", "0", option, url, "--out", str(out), "--quiet")
    _assert_refused(done, out)
    assert not out.exists()  # refused before anything was made


@pytest.mark.slow
def test_credentials_from_the_environment_reach_no_file_and_no_log(
        influxdb_auth: InfluxDB1, mosquitto: Mosquitto, tmp_path: Path) -> None:
    db = unique_name("secrets")
    influxdb_auth.create_database(db)
    out = tmp_path / "run"
    mqtt_user, mqtt_password = "rig-user-9f3", "mqtt-pw-7Hq2x"
    env = {"HEATRIG_INFLUX_USERNAME": influxdb_auth.username,
           "HEATRIG_INFLUX_PASSWORD": influxdb_auth.password,
           "HEATRIG_MQTT_USERNAME": mqtt_user, "HEATRIG_MQTT_PASSWORD": mqtt_password}
    done = heatrig("--verbose", "run", "reference-1mw", "--duration", "2 min", "--speed", "60",
                   "--modbus", "127.0.0.1:0", "--mqtt", mosquitto.url, "--no-sut",
                   "--influx", f"influx1://127.0.0.1:{influxdb_auth.port}?db={db}",
                   "--out", str(out), "--quiet", env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["export"]["error"] is None, summary["export"]
    assert influxdb_auth.count("events", db) > 0  # the credentials were used
    assert "DEBUG" in done.stderr  # the log is the verbose one
    for secret in (influxdb_auth.password, mqtt_password):
        assert secret not in done.stdout + done.stderr
        assert files_holding(out, secret) == []
    assert sorted(p.name for p in out.iterdir())  # there were files to search
