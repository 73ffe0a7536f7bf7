"""The API's request bodies (pydantic) and the patterns its ids follow. Named schemas, not models: in this
project a model is an embedding model (the `[models]` setting, a model's sha256)."""
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

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
