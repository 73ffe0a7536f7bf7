"""The API's request bodies (pydantic) and the patterns its ids follow. Named schemas, not models: in this
project a model is an embedding model (the `[models]` setting, a model's sha256)."""
from pydantic import AwareDatetime, BaseModel, Field

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
