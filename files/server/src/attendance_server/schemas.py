"""The API's request bodies (pydantic) and the patterns its ids follow. Named schemas, not models: in this
project a model is an embedding model (the `[models]` setting, a model's sha256)."""
import base64
import binascii
import contextlib
import ipaddress
import re
import struct
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

EMPLOYEE_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
SHA256 = r"^[0-9a-f]{64}$"


class AttendanceEvent(BaseModel):
    """The deployment guide's message; extra fields are refused (a typo must not pass silently)."""
    model_config = {"extra": "forbid"}
    E1: str = Field(pattern=EMPLOYEE_ID, description="employee id")
    S1: str = Field(min_length=1, max_length=16, description="status, e.g. IN")
    TS1: AwareDatetime = Field(description="when, ISO 8601 with its UTC offset")
    TS1_estimated: bool = Field(default=False, description=(
        "TS1 is only the kiosk's estimate: its clock was never synchronised in the boot the event was "
        "recorded in (a Raspberry Pi has no clock of its own), and may be off by hours or days"))


class Enrollment(BaseModel):
    model_config = {"extra": "forbid"}
    model: str = Field(pattern=SHA256, description="sha256 of the embedding model's ONNX file")
    embeddings: list[list[float]] = Field(min_length=1, max_length=100)
    name: str = Field(default="", max_length=200)
    replace: bool = Field(default=False, description="replace this person's earlier embeddings of this model")


class Heartbeat(BaseModel):
    """A kiosk's heartbeat (pi-kiosk's heartbeat.py): how it is, every `heartbeat.interval_seconds`. Which kiosk
    sent it is its token's, never the body's. Fields this server does not know are ignored, not refused, and not
    stored: a newer kiosk's heartbeat must still tell the server it is alive. Bounded like every body."""
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)
    status: str = Field(max_length=32, description="as /healthz: ok, degraded, camera_missing, stale")
    reason: str = Field(default="", max_length=4000, description="what is wrong, in words ('' when ok)")
    release: str | None = Field(default=None, max_length=200, description="the deployed release's id")
    version: str = Field(default="", max_length=64, description="the pi-kiosk package's version")
    model_sha256: str = Field(default="", pattern=r"^([0-9a-f]{64})?$", description="the embedding model")
    camera: str = Field(default="", max_length=32, description="ok or missing")
    camera_problem: str = Field(default="", max_length=1000, description="what opening a missing camera found")
    clock_synchronized: bool | None = None
    clock_waiting_events: int | None = Field(default=None, ge=0, le=10**9,
                                             description="events waiting for the clock to be synchronised")
    outbox_depth: int | None = Field(default=None, ge=0, le=10**9, description="events not yet delivered")
    outbox_rejected: int | None = Field(default=None, ge=0, le=10**9, description="events the server refused")
    seconds_since_last_frame: float | None = Field(default=None, ge=0, le=10**9)
    temperature_celsius: float | None = Field(default=None, ge=-100, le=200, description="the SoC's")
    throttled: int | None = Field(default=None, ge=0, le=0xFFFFFFFF, description="the firmware's get_throttled bits")
    sent_at: AwareDatetime | None = Field(default=None, description="the kiosk's clock, maybe not synchronised")
    boot_id: str = Field(default="", max_length=64)
    boot_seconds: float | None = Field(default=None, ge=0, le=10**10, description="seconds since the kiosk booted")


# Each checked as ASCII before it is lower-cased: str.lower() makes ASCII of some other letters (the Kelvin sign's
# "k"), which must not pass as a name.
SERIAL = re.compile(r"[0-9A-Fa-f]{8,16}")
HOST_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
REVISION = re.compile(r"[0-9A-Fa-f]{4,8}")
# The key types of an OpenSSH server's host keys (DSA's are gone since OpenSSH 9.8; sk- keys are users', not hosts').
HOST_KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa")
HOST_KEY = re.compile(rf"({'|'.join(HOST_KEY_TYPES)}) ([A-Za-z0-9+/]+={{0,2}})( [ -~]*)?")
MAX_HOST_KEY = 1000
MAX_MODEL = 100


def _serial(value: str) -> str:
    if not SERIAL.fullmatch(value):
        raise ValueError(f"serial {value!r:.40} is not 8 to 16 hex digits (the Pi's serial number, as "
                         "/proc/cpuinfo or /proc/device-tree/serial-number has it)")
    return value.lower()


def _hostname(value: str) -> str:
    if not HOST_LABEL.fullmatch(value):
        raise ValueError(f"hostname {value!r:.80} is not an RFC 1123 host label: 1 to 63 letters, digits or '-', "
                         "not starting or ending with '-' (no dot or '_': the Pi's own name, not a domain)")
    return value.lower()


def _device_model(value: str) -> str:
    if not 1 <= len(value) <= MAX_MODEL or not value.isprintable():
        raise ValueError(f"model {value!r:.120} is not 1 to {MAX_MODEL} printable characters (the device tree's "
                         "model, without its trailing NUL)")
    return value


def _revision(value: str) -> str:
    if not REVISION.fullmatch(value):
        raise ValueError(f"revision {value!r:.40} is not 4 to 8 hex digits (the Revision of /proc/cpuinfo)")
    return value.lower()


def _address(value: str) -> str:
    """The address as ipaddress writes it (IPv6 compressed, lower case): one address, one spelling. Without a
    %zone: it would name an interface of the Pi's, not one the controller reaches it by."""
    with contextlib.suppress(ValueError):  # not an address
        if "%" not in value:
            return str(ipaddress.ip_address(value))
    raise ValueError(f"address {value!r:.60} is not an IPv4 or IPv6 address (without a %zone)")


def _host_key(value: str) -> str:
    """An OpenSSH public key's line, "<type> <base64> [comment]": one printable line (inventories write it into
    known_hosts files, where a second line would vouch for another host), its key of the type it names."""
    line = value.strip()  # a .pub file's line ends with a newline
    match = HOST_KEY.fullmatch(line) if len(line) <= MAX_HOST_KEY else None
    if match is None or _key_type(match[2]) != match[1]:
        raise ValueError(f"host_key {value!r:.80} is not an SSH host key's line of at most {MAX_HOST_KEY} "
                         "characters, '<type> <base64> [comment]' as in /etc/ssh/ssh_host_ed25519_key.pub, of a "
                         f"type of {', '.join(HOST_KEY_TYPES)}")
    return line


def _key_type(blob: str) -> str | None:
    """The key type an OpenSSH key's base64 names first (a length-prefixed string); None: it names none."""
    try:
        key = base64.b64decode(blob, validate=True)
        (length,) = struct.unpack(">I", key[:4])
        return key[4:4 + length].decode("ascii")
    except (binascii.Error, struct.error, UnicodeDecodeError):
        return None


# Each field's check names the value and what is allowed (FastAPI's 422 shows it).
Serial = Annotated[str, AfterValidator(_serial)]
HostLabel = Annotated[str, AfterValidator(_hostname)]
DeviceModel = Annotated[str, AfterValidator(_device_model)]
Revision = Annotated[str, AfterValidator(_revision)]
Address = Annotated[str, AfterValidator(_address)]
HostKey = Annotated[str, AfterValidator(_host_key)]


class Registration(BaseModel):
    """A fresh Pi's identity, sent by its first boot (POST /api/register). As in a heartbeat, fields this server
    does not know are ignored, not refused, and not stored: a newer first-boot script must still register."""
    model_config = ConfigDict(extra="ignore")
    serial: Serial = Field(description="the Pi's serial number, 8 to 16 hex digits (lower-cased)")
    hostname: HostLabel = Field(description="the name its card was flashed with, an RFC 1123 host label "
                                            "(lower-cased)")
    model: DeviceModel = Field(description="the device tree's model, e.g. Raspberry Pi 4 Model B Rev 1.5")
    revision: Revision = Field(description="the Revision of /proc/cpuinfo, 4 to 8 hex digits (lower-cased)")
    address: Address = Field(description="its IPv4 or IPv6 address, which Ansible reaches it at")
    host_key: HostKey | None = Field(default=None, description=(
        "its SSH host key, the line of its .pub file: ssh-ed25519 AAAA... [comment]; null: none sent"))
