"""A dataset spec: a plant's sensors declared once, and followed by every step.

`deployments/dataset.yaml` (EDGEWAVE_DATASET) names each column (and the header it has in the
source file), its kind (float, int, or category with its categories), unit and physical range;
the binary target and which of its two values means failure; derived features as arithmetic
over columns (tasks/release/expressions.py), which the ONNX graph computes in front of the
model so that a site receives only raw sensor values; and per-column drift thresholds. Loading,
training, the bundle's input schema, the site's validation, drift checks and the traffic
simulator all follow it. A bad spec fails at load with the field path, like the fleet file.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edgewave.serving.errors import Actionable, validated_yaml
from edgewave.tasks.data.expressions import Expression, ExpressionError

if TYPE_CHECKING:
    from edgewave.tasks.data.images import ImageSpec

Identifier = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class SpecError(ValueError, Actionable):
    """The dataset spec is invalid; the message names the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Column(_Strict):
    name: Identifier
    header: str | None = Field(default=None, description="The column's header in the source file (default: name).")
    kind: Literal["float", "int", "category"] = "float"
    categories: list[str] = Field(default_factory=list, description="For kind category: its values, coded 0, 1, …")
    unit: str = ""
    range: tuple[float, float] | None = Field(default=None, description="Physical range [min, max]: values outside are "
                                             "implausible readings, refused when loading.")
    max_missing_share: float = Field(default=0.05, ge=0, le=1)
    drift_threshold: float | None = Field(default=None, gt=0, description="This column's drift threshold (method units).")
    description: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> Column:
        if self.range is not None and self.range[0] > self.range[1]:
            raise ValueError(f"range: min {self.range[0]:g} > max {self.range[1]:g}")
        if self.kind == "category" and len(self.categories) < 2:
            raise ValueError("categories: a category column needs at least two categories")
        if self.kind != "category" and self.categories:
            raise ValueError(f"categories: only for kind category, not {self.kind}")
        return self

    @property
    def source(self) -> str:
        return self.header or self.name


class Target(_Strict):
    name: Identifier
    header: str | None = None
    values: tuple[str, str] = Field(default=("0", "1"), description="[negative, positive] as written in the file.")
    max_missing_share: float = Field(default=0.0, ge=0, le=1)

    @field_validator("values")
    @classmethod
    def _binary(cls, values: tuple[str, str]) -> tuple[str, str]:
        if values[0] == values[1]:
            raise ValueError(f"a binary target needs two different values, got {list(values)}")
        return values

    @property
    def source(self) -> str:
        return self.header or self.name


class Derived(_Strict):
    name: Identifier
    expression: str
    unit: str = ""
    description: str = ""


class DatasetSpec(_Strict):
    kind: Literal["table"] = Field(default="table", description="A table of readings; `images` for a camera (images.py).")
    name: str = Field(min_length=1)
    description: str = ""
    generator: str | None = Field(
        default=None, description="Which built-in simulated machine (tasks/release/machines.py) makes data of this shape "
                          "when no EDGEWAVE_DATA_PATH is set.")
    columns: list[Column] = Field(min_length=1)
    target: Target
    derived: list[Derived] = Field(default_factory=list)
    class_labels: tuple[str, str] = ("ok", "failure")

    @field_validator("generator")
    @classmethod
    def _known_machine(cls, name: str | None) -> str | None:
        from edgewave.tasks.data.machines import MACHINES

        if name is not None and name not in MACHINES:
            raise ValueError(f"no simulated machine {name!r}; known: {sorted(MACHINES)}")
        return name

    @model_validator(mode="after")
    def _names_and_expressions(self) -> DatasetSpec:
        names = [c.name for c in self.columns] + [d.name for d in self.derived]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"columns/derived: names must be unique: {repeated}")
        if self.target.name in names:
            raise ValueError(f"target.name: {self.target.name!r} is also a feature column")
        known = {c.name for c in self.columns}
        for index, derived in enumerate(self.derived):
            try:
                Expression.parse(derived.expression, known)
            except ExpressionError as exc:
                raise ValueError(f"derived.{index}.expression: {exc}") from None
        return self

    @property
    def features(self) -> tuple[str, ...]:
        """The raw inputs, in the order the ONNX graph takes them (what a site is sent)."""
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    def expressions(self) -> list[tuple[str, Expression]]:
        return [(d.name, Expression.parse(d.expression, set(self.features))) for d in self.derived]

    def physical_ranges(self) -> dict[str, tuple[float, float]]:
        """Each raw column's physical range, where the spec gives one (a category's: its codes): a site
        refuses values outside."""
        ranges = {c.name: (0.0, float(len(c.categories) - 1)) for c in self.columns if c.kind == "category"}
        return ranges | {c.name: c.range for c in self.columns if c.range is not None}

    def drift_thresholds(self) -> dict[str, float]:
        return {c.name: c.drift_threshold for c in self.columns if c.drift_threshold is not None}


def load_spec(path: str | Path) -> DatasetSpec:
    """Load and validate a table spec; SpecError names the file and the field (or says it is an image spec)."""
    spec = load_any_spec(path)
    if not isinstance(spec, DatasetSpec):
        raise SpecError(f"{path}: an image dataset spec (kind: images); this step takes a table of readings "
                        "(kind: table)")
    return spec


def load_any_spec(path: str | Path) -> DatasetSpec | ImageSpec:
    """A table spec or an image spec (`kind: images`), validated; SpecError names the file and the field."""
    import yaml

    from edgewave.tasks.data.images import ImageSpec

    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise SpecError(f"{path}: cannot read: {exc}") from None
    try:
        peek = yaml.safe_load(text)
    except yaml.YAMLError:
        peek = None  # validated_yaml says what is wrong with it
    images = isinstance(peek, dict) and peek.get("kind") == "images"
    return validated_yaml(text, str(path), ImageSpec if images else DatasetSpec, SpecError)
