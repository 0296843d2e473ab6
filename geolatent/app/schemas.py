"""Pydantic schemas: everything that crosses the HTTP edge is validated here."""

from __future__ import annotations

import re
from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Role = Literal["viewer", "annotator", "reviewer", "admin"]
TaskStatus = Literal["pending", "in_progress", "completed", "to_be_reviewed", "reviewed",
                     "cancelled"]
_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")
_USERNAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class Login(BaseModel):
    username: str = Field(max_length=64)
    password: str = Field(max_length=256)


class UserCreate(BaseModel):
    username: str
    password: str = Field(min_length=8, max_length=256)
    is_admin: bool = False

    @field_validator("username")
    @classmethod
    def _username(cls, v: str) -> str:
        if not _USERNAME.match(v):
            raise ValueError("username: 1-64 letters, digits, '_', '.', '-'")
        return v


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    username: str
    is_admin: bool


class TokenCreate(BaseModel):
    name: str = Field(min_length=1, max_length=128)


class ClassDef(BaseModel):
    value: str = Field(min_length=1, max_length=128)
    name: str = Field(min_length=1, max_length=128)
    color: str

    @field_validator("color")
    @classmethod
    def _color(cls, v: str) -> str:
        if not _COLOR.match(v):
            raise ValueError("color: a hex colour like #1f78b4")
        return v.lower()


class LabelSchema(BaseModel):
    """Classes with colours (``kind="class"``) or a numeric target with a range."""

    kind: Literal["class", "value"] = "class"
    classes: list[ClassDef] = Field(default_factory=list, max_length=256)
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _check(self) -> LabelSchema:
        if self.kind == "class":
            values = [c.value for c in self.classes]
            if len(set(values)) != len(values):
                raise ValueError("label_schema.classes: class values must be unique")
        elif self.min is not None and self.max is not None and self.min >= self.max:
            raise ValueError("label_schema: min must be below max")
        return self


class ImagerySource(BaseModel):
    """Where the project's imagery comes from.

    - ``sample``: the built-in sample scene;
    - ``local``: GeoTIFF/COG files uploaded into the project's ``path`` folder (default
      ``imagery``);
    - ``preset``: a STAC API preset of ``geolatent imagery`` (``earth-search``,
      ``planetary-computer``) with its ``collections`` (default: the preset's Sentinel-2 L2A),
      ``max_cloud`` and ``url``: the preset's API at another address (a mirror, a proxy, a
      local STAC server; assets, signing and band mapping stay the preset's);
    - ``stac``: an on-disk STAC catalog (catalog / collection JSON) at ``path`` inside the
      project folder, of ``modality``, with ``collections`` to keep and ``assets`` (band ->
      asset key; an ``scl`` entry is used as the Sentinel-2 cloud mask).

    ``preset`` and ``stac`` imagery is fetched into the project as monthly composites (COGs)
    by an ``imagery`` job (``POST /api/projects/{id}/jobs {"kind": "imagery"}``), with the
    same library code as ``geolatent imagery fetch``.
    """

    type: Literal["sample", "local", "stac", "preset"] = "sample"
    path: str | None = Field(default=None, max_length=256)
    preset: str | None = Field(default=None, max_length=128)
    collections: list[str] | None = Field(default=None, max_length=8)
    url: str | None = Field(default=None, max_length=512,
                            description="preset only: the preset's STAC API at this URL")
    max_cloud: float | None = Field(default=None, ge=0, le=100)
    modality: str | None = Field(default=None, max_length=64)
    assets: dict[str, str] | None = None

    @model_validator(mode="after")
    def _check(self) -> ImagerySource:
        if self.path is not None:
            p = self.path.replace("\\", "/")
            if p.startswith("/") or ".." in p.split("/") or ":" in p:
                raise ValueError("imagery.path: a folder relative to the project folder, "
                                 "without '..'")
        if self.type != "preset" and (self.preset or self.url):
            raise ValueError("imagery.preset and imagery.url apply to type 'preset' only")
        if self.type == "preset":
            if not self.preset:
                raise ValueError("imagery.preset: name the STAC preset")
            if self.url is not None and not re.match(r"^https?://", self.url):
                raise ValueError(f"imagery.url: an http(s) STAC API URL, got {self.url!r}")
            from geolatent.data.stac_presets import preset_source

            for c in self.collections or [None]:
                preset_source({"preset": self.preset, "collection": c})  # ValueError says why
        if self.type == "stac":
            if not self.path:
                raise ValueError("imagery.path: the STAC catalog JSON inside the project "
                                 "folder, e.g. catalog/catalog.json")
            from geolatent.modalities import MODALITIES

            if (self.modality or "sentinel2_l2a") not in MODALITIES:
                raise ValueError(f"imagery.modality: one of {list(MODALITIES)}")
        elif self.modality or self.assets:
            raise ValueError("imagery.modality and imagery.assets apply to type 'stac' only")
        return self


_NAME = re.compile(r"^[^\x00-\x1f/\\]{1,128}$")


class ProjectBase(BaseModel):
    start_date: date | None = None
    end_date: date | None = None
    imagery: ImagerySource = Field(default_factory=ImagerySource)
    model: str | None = Field(default=None, max_length=512)
    label_schema: LabelSchema = Field(default_factory=LabelSchema)
    aoi: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _dates(self) -> ProjectBase:
        if self.start_date and self.end_date and self.start_date > self.end_date:
            raise ValueError("start_date must not be after end_date")
        return self


class ProjectCreate(ProjectBase):
    name: str

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        v = v.strip()
        if not _NAME.match(v) or v in (".", ".."):
            raise ValueError("name: 1-128 characters, no '/', '\\' or control characters")
        return v


class ProjectUpdate(BaseModel):
    start_date: date | None = None
    end_date: date | None = None
    imagery: ImagerySource | None = None
    model: str | None = Field(default=None, max_length=512)
    label_schema: LabelSchema | None = None
    aoi: dict[str, Any] | None = None


class ProjectOut(BaseModel):
    id: int
    name: str
    slug: str
    start_date: str | None
    end_date: str | None
    imagery: dict
    model: str | None
    label_schema: dict
    aoi: dict | None
    role: Role


class MemberSet(BaseModel):
    username: str
    role: Role


class FeatureIn(BaseModel):
    """A label feature (GeoJSON geometry in lon/lat). ``id`` (a UUID) may be chosen by the
    client so that a retried create never makes a duplicate. ``label``: a class value of the
    label schema, or for a numeric target a number inside its range (JSON number or text)."""

    id: str | None = Field(default=None, pattern=r"^[0-9a-fA-F-]{36}$")
    geometry: dict[str, Any]
    label: str | float | None = Field(default=None, union_mode="left_to_right")
    task_id: int | None = None
    start_date: date | None = None
    end_date: date | None = None


class FeatureUpdate(BaseModel):
    """An edit based on ``version``; applied only if that is still the current version."""

    version: int
    geometry: dict[str, Any] | None = None
    label: str | float | None = Field(default=None, union_mode="left_to_right")
    start_date: date | None = None
    end_date: date | None = None


class FeatureOut(BaseModel):
    id: str
    geometry: dict
    label: str | None
    task_id: int | None
    start_date: str | None
    end_date: str | None
    version: int
    updated_by: int | None


class TaskIn(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    geometry: dict[str, Any]
    start_date: date | None = None
    end_date: date | None = None
    assignee: str | None = None


class TaskUpdate(BaseModel):
    version: int
    status: TaskStatus | None = None
    assignee: str | None = None


class TaskReview(BaseModel):
    version: int
    accept: bool
    comment: str = Field(default="", max_length=4000)


class TaskOut(BaseModel):
    id: int
    name: str
    geometry: dict
    start_date: str | None
    end_date: str | None
    status: TaskStatus
    assignee: str | None
    review_comment: str | None
    version: int


class JobIn(BaseModel):
    kind: Literal["predict", "finetune", "imagery"]
    params: dict[str, Any] = Field(default_factory=dict)


class JobOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    kind: str
    status: str
    progress: float
    params: dict
    result: dict
    error: str | None
    log: str
