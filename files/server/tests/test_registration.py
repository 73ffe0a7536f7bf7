"""A fresh Pi registers itself at first boot (POST /api/register, the registration token); the operator lists the
registrations (what the Ansible inventory reads) and deletes them (admin token). On both databases."""
from __future__ import annotations

import base64
import re
import struct
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from threading import Barrier
from typing import Any

import pytest
from conftest import ADMIN, DOOR, LOBBY, MODEL_A, bearer
from fastapi.testclient import TestClient

from attendance_server.app import create_app
from attendance_server.config import ConfigError, Settings, parse
from attendance_server.store import Conflict, Store

REGISTRAR = "registrar-token-0123456789"
SERIAL = "10000000abcdef01"
OTHER_SERIAL = "10000000abcdef02"


def host_key(kind: str = "ssh-ed25519", comment: str = " root@kiosk-lobby-01") -> str:
    """A public key's line as ssh-keygen writes it: its base64 names its type first (OpenSSH's wire format)."""
    blob = struct.pack(">I", len(kind)) + kind.encode() + struct.pack(">I", 32) + bytes(range(32))
    return f"{kind} {base64.b64encode(blob).decode()}{comment}"


def pi(**fields: Any) -> dict[str, Any]:
    """What a Pi 4's first boot sends, with `fields` instead."""
    return {"serial": SERIAL, "hostname": "kiosk-lobby-01", "model": "Raspberry Pi 4 Model B Rev 1.5",
            "revision": "c03115", "address": "192.0.2.41", "host_key": host_key(), **fields}


@pytest.fixture
def server(database: Path | str) -> Iterator[TestClient]:
    """A server with a registration token (conftest's `client` has none)."""
    settings = Settings(database, ADMIN, {"lobby": LOBBY, "door": DOOR}, registration_token=REGISTRAR)
    client = TestClient(create_app(settings))
    yield client
    store: Store = client.app.state.store  # type: ignore[attr-defined]
    store.close()


def register(client: TestClient, body: dict[str, Any], token: str = REGISTRAR) -> Any:
    return client.post("/api/register", json=body, headers=bearer(token))


def listed(client: TestClient) -> list[dict[str, Any]]:
    answer = client.get("/api/registrations", headers=bearer(ADMIN))
    assert answer.status_code == 200, answer.text
    registrations: list[dict[str, Any]] = answer.json()["registrations"]
    return registrations


def test_a_new_pi_registers_and_is_listed(server: TestClient) -> None:
    r = register(server, pi())
    assert r.status_code == 201, r.text
    assert r.json() == {"registered": "new", "hostname": "kiosk-lobby-01", "serial": SERIAL}
    (got,) = listed(server)
    assert {k: v for k, v in got.items() if k not in ("first_seen", "last_seen")} == pi()
    seen = datetime.fromisoformat(got["first_seen"])
    assert seen.utcoffset() == timedelta(0)
    assert abs((datetime.now(UTC) - seen).total_seconds()) < 60 and got["last_seen"] == got["first_seen"]


def test_the_same_serial_again_updates_its_registration(server: TestClient) -> None:
    """A card flashed again, or the Pi at a new address: one registration per serial, first_seen kept."""
    assert register(server, pi()).status_code == 201
    (before,) = listed(server)
    again = pi(serial=SERIAL.upper(), hostname="kiosk-hall-01", address="2001:DB8::0:41", host_key=None,
               revision="d03115", model="Raspberry Pi 4 Model B Rev 1.6")
    r = register(server, again)
    assert r.status_code == 200, r.text
    assert r.json() == {"registered": "updated", "hostname": "kiosk-hall-01", "serial": SERIAL}
    (after,) = listed(server)
    assert after == {**before, "hostname": "kiosk-hall-01", "address": "2001:db8::41", "host_key": None,
                     "revision": "d03115", "model": "Raspberry Pi 4 Model B Rev 1.6", "last_seen": after["last_seen"]}
    assert after["last_seen"] >= before["last_seen"]
    assert register(server, pi(hostname="kiosk-hall-01")).status_code == 200  # its own hostname: no conflict


def test_a_hostname_another_serial_holds_is_refused_and_nothing_changes(server: TestClient) -> None:
    assert register(server, pi()).status_code == 201
    assert register(server, pi(serial=OTHER_SERIAL, hostname="kiosk-door-01", address="192.0.2.11")).status_code == 201
    before = listed(server)
    for body in (pi(serial="10000000abcdef03", address="192.0.2.99"),  # a new Pi flashed with a name in use
                 pi(serial=OTHER_SERIAL, address="192.0.2.99")):       # a registered Pi renamed to one in use
        r = register(server, body)
        assert r.status_code == 409, r.text
        assert r.json()["detail"] == (
            f"hostname kiosk-lobby-01 is registered to the Pi of serial {SERIAL}: if that Pi is gone, delete its "
            f"registration (DELETE /api/registrations/{SERIAL}); else flash this card with another hostname")
    assert listed(server) == before


@pytest.mark.parametrize(("fields", "message"), [
    ({"serial": "1234567"}, "serial '1234567' is not 8 to 16 hex digits"),
    ({"serial": "10000000abcdef0g"}, "serial '10000000abcdef0g' is not 8 to 16 hex digits"),
    ({"serial": "10000000abcdef0123"}, "is not 8 to 16 hex digits"),
    ({"hostname": "kiosk.lobby"}, "hostname 'kiosk.lobby' is not an RFC 1123 host label: 1 to 63 letters, "
                                  "digits or '-', not starting or ending with '-' (no dot or '_'"),
    ({"hostname": "kiosk_lobby"}, "hostname 'kiosk_lobby' is not an RFC 1123 host label"),
    ({"hostname": "-kiosk"}, "hostname '-kiosk' is not an RFC 1123 host label"),
    ({"hostname": "kiosk-"}, "hostname 'kiosk-' is not an RFC 1123 host label"),
    ({"hostname": ""}, "hostname '' is not an RFC 1123 host label"),
    ({"hostname": "k" * 64}, "is not an RFC 1123 host label: 1 to 63"),
    ({"hostname": "\u212aiosk"}, "is not an RFC 1123 host label"),  # the Kelvin sign, "k" once lower-cased
    ({"model": ""}, "model '' is not 1 to 100 printable characters"),
    ({"model": "Raspberry Pi 4 Model B Rev 1.5\x00"}, "is not 1 to 100 printable characters (the device tree's "
                                                       "model, without its trailing NUL)"),
    ({"model": "m" * 101}, "is not 1 to 100 printable characters"),
    ({"revision": "c03"}, "revision 'c03' is not 4 to 8 hex digits"),
    ({"revision": "0xc03115"}, "revision '0xc03115' is not 4 to 8 hex digits"),
    ({"address": "192.0.2"}, "address '192.0.2' is not an IPv4 or IPv6 address"),
    ({"address": "fe80::1%eth0"}, "address 'fe80::1%eth0' is not an IPv4 or IPv6 address (without a %zone)"),
    ({"address": "kiosk-lobby-01.example"}, "is not an IPv4 or IPv6 address"),
    ({"host_key": "ssh-dss " + host_key().split()[1]}, "host_key 'ssh-dss AAAA"),
    ({"host_key": "ssh-ed25519 not-base64"}, "of a type of ssh-ed25519, ecdsa-sha2-nistp256"),
    ({"host_key": "ssh-rsa " + host_key().split(" ", 1)[1]}, "is not an SSH host key's line"),  # an ed25519 key
    ({"host_key": host_key() + "\n" + host_key("ssh-rsa", " evil")}, "is not an SSH host key's line"),
    ({"host_key": host_key(comment=" " + "c" * 1000)}, "of at most 1000 characters"),
    ({"serial": 10000000}, "Input should be a valid string"),
])
def test_a_bad_registration_is_refused_naming_the_value(server: TestClient, fields: dict[str, Any],
                                                        message: str) -> None:
    r = register(server, pi(**fields))
    assert r.status_code == 422, r.text
    assert message in str(r.json()["detail"])
    assert listed(server) == []


@pytest.mark.parametrize("missing", ["serial", "hostname", "model", "revision", "address"])
def test_every_field_but_the_host_key_is_required(server: TestClient, missing: str) -> None:
    body = pi()
    del body[missing]
    assert register(server, body).status_code == 422
    del body["host_key"]
    assert register(server, {**body, missing: pi()[missing]}).status_code == 201


def test_names_are_lower_cased_and_unknown_fields_dropped(server: TestClient) -> None:
    """Host names are case-insensitive (a hostname in capitals is the same Pi's); a newer first-boot script may send
    more than this server knows: it still registers."""
    r = register(server, pi(serial=SERIAL.upper(), hostname="Kiosk-LOBBY-01", revision="C03115",
                            host_key=host_key() + "\n", wifi="lobby-ssid"))
    assert r.status_code == 201 and r.json() == {"registered": "new", "hostname": "kiosk-lobby-01", "serial": SERIAL}
    (got,) = listed(server)
    assert (got["hostname"], got["serial"], got["revision"], got["host_key"]) == (
        "kiosk-lobby-01", SERIAL, "c03115", host_key())
    assert "wifi" not in got
    assert register(server, pi(serial="10000000ABCDEF99", hostname="KIOSK-lobby-01")).status_code == 409


def test_the_registration_token_registers_and_nothing_else(server: TestClient) -> None:
    """Its token is on every card flashed for a new Pi: it may register, not read the registrations, delete one,
    open a gallery (biometric data) or speak for a kiosk."""
    for token in (LOBBY, ADMIN):
        r = register(server, pi(), token=token)
        assert r.status_code == 403 and r.json()["detail"] == "only the registration token may register a Pi"
    assert register(server, pi()).status_code == 201
    registrar = bearer(REGISTRAR)
    assert server.get("/api/registrations", headers=registrar).status_code == 403
    assert server.delete(f"/api/registrations/{SERIAL}", headers=registrar).status_code == 403
    for token, status in ((REGISTRAR, 403), (LOBBY, 200), (ADMIN, 200)):
        gallery = server.get("/api/employees/embeddings", params={"model": MODEL_A}, headers=bearer(token))
        assert gallery.status_code == status, gallery.text
    event = {"E1": "E001", "S1": "IN", "TS1": "2026-11-26T09:00:00+01:00"}
    attendance = server.post("/toon/attendance", json=event, headers={**registrar, "Idempotency-Key": "k1"})
    assert attendance.status_code == 403
    assert server.post("/api/kiosk/heartbeat", json={"status": "ok"}, headers=registrar).status_code == 403
    assert server.get("/api/employees", headers=registrar).status_code == 403
    assert server.get("/api/registrations", headers=bearer(LOBBY)).status_code == 403
    assert len(listed(server)) == 1


def test_without_a_registration_token_no_one_registers(client: TestClient) -> None:
    """conftest's server has no registration_token: any would-be registrar's token is unknown."""
    for headers in (bearer(REGISTRAR), {}, bearer("")):
        r = client.post("/api/register", json=pi(), headers=headers)
        assert r.status_code == 401, r.text
    assert client.get("/api/registrations", headers=bearer(ADMIN)).json() == {"registrations": []}


def test_the_list_is_sorted_by_hostname(server: TestClient) -> None:
    for n, name in enumerate(["kiosk-lobby-01", "kiosk-door-02", "kiosk-10", "kiosk-door-01"]):
        assert register(server, pi(serial=f"1000000{n}", hostname=name)).status_code == 201
    assert [r["hostname"] for r in listed(server)] == ["kiosk-10", "kiosk-door-01", "kiosk-door-02", "kiosk-lobby-01"]


def test_a_deleted_registration_frees_its_hostname(server: TestClient) -> None:
    assert register(server, pi()).status_code == 201
    assert server.delete(f"/api/registrations/{SERIAL.upper()}", headers=bearer(ADMIN)).status_code == 204
    assert listed(server) == []
    again = server.delete(f"/api/registrations/{SERIAL}", headers=bearer(ADMIN))
    assert again.status_code == 404
    assert again.json()["detail"] == (f"no Pi of serial {SERIAL} is registered "
                                      "(GET /api/registrations lists them)")
    bad = server.delete("/api/registrations/not-a-serial", headers=bearer(ADMIN))
    assert bad.status_code == 422 and "serial 'not-a-serial' is not 8 to 16 hex digits" in bad.text
    r = register(server, pi(serial=OTHER_SERIAL))  # the Pi that replaces it, flashed with the same name
    assert r.status_code == 201 and r.json()["registered"] == "new"


def test_several_processes_registering_at_once_agree(database: Path | str) -> None:
    """Each store is a process of its own (its own connections), all at the same time: of several Pis flashed with
    one name one is registered, the others refused; one Pi registering in every process is registered once."""
    processes = 6
    stores = [Store(database) for _ in range(processes)]
    try:
        start = Barrier(processes)

        def attempt(n: int) -> tuple[str, str]:
            start.wait()
            try:
                taken = stores[n].register(f"1000000{n}", "kiosk-lobby-01", "Raspberry Pi 5", "d04170", "192.0.2.1",
                                           None)
            except Conflict as exc:
                taken = str(exc)
            start.wait()
            return taken, stores[n].register(SERIAL, "kiosk-door-01", "Raspberry Pi 5", "d04170", f"192.0.2.{n}",
                                             None)

        with ThreadPoolExecutor(processes) as pool:
            results = list(pool.map(attempt, range(processes)))
        taken = [t for t, _ in results]
        assert taken.count("new") == 1
        assert all(re.fullmatch(r"hostname kiosk-lobby-01 is registered to the Pi of serial 1000000\d: .*", t)
                   for t in taken if t != "new")
        assert sorted(same for _, same in results) == ["new"] + ["updated"] * (processes - 1)
        assert [r.hostname for r in stores[0].registrations()] == ["kiosk-door-01", "kiosk-lobby-01"]
    finally:
        for db in stores:
            db.close()


@pytest.mark.parametrize(("setting", "message"), [
    ({"registration_token": "short"}, "server.toml: registration_token must be a string of at least 16 characters"),
    ({"registration_token": 1234}, "registration_token must be a string of at least 16 characters"),
    ({"registration_token": LOBBY}, "server.toml: registration_token and kiosks.a have the same token: every "
                                    "kiosk, the admin and the registrar need a token of their own"),
    ({"registration_token": ADMIN}, "admin_token and registration_token have the same token"),
    ({"kiosks": {"a": LOBBY, "b": LOBBY}}, "kiosks.a and kiosks.b have the same token"),
])
def test_bad_registration_tokens_are_named(setting: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse({"database": "x.db", "admin_token": ADMIN, "kiosks": {"a": LOBBY}, **setting}, "server.toml")


def test_the_registration_token_is_read_and_optional() -> None:
    base = {"database": "x.db", "admin_token": ADMIN, "kiosks": {"a": LOBBY}}
    assert parse(base, "server.toml").registration_token is None
    settings = parse({**base, "registration_token": REGISTRAR}, "server.toml")
    assert settings.registration_token == REGISTRAR
    assert (settings.principal(REGISTRAR), settings.principal(LOBBY)) == ("registrar", "kiosk:a")
