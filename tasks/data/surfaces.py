"""A product to inspect: synthetic images of machined and cast metal surfaces, a few percent defective.

The default data of the inspection loop, as the AI4I generator is for the milling machine. Each
part is a grayscale camera shot of a surface: brushed machining marks along one direction, the
grain of a casting, sensor noise, a lamp that lights it unevenly (a gradient and a vignette) and
a part-to-part spread of reflectance. A defective part carries one defect: a scratch (a thin
specular line), pits (small dark craters with a bright rim), a crack (a dark jagged path that
may branch) or a stain (a soft, irregular darker patch). Defects are small against the part,
vary in contrast, and sit under the same uneven light, so a threshold on brightness does not
find them.

The drift scenarios are what a plant meets after a model ships: the lamp replaced (`lighting`:
brighter, another gradient), the lens knocked out of focus (`defocus`), the camera moved
(`shifted`: a few pixels and degrees), and a defect type nobody trained on (`new_defect`: dents,
a smooth bump that shades bright on one side and dark on the other).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

DEFECTS = ("scratch", "pit", "crack", "stain")
NEW_DEFECT = "dent"  # in no training set: the `new_defect` scenario's defects
OK = "good"


@dataclass(frozen=True)
class Scenario:
    """How the camera sees a part at a site; the default is the line the model was trained on."""

    gain: float = 1.0  # lamp brightness
    gradient: float = 0.0  # an extra left-to-right light gradient (share of brightness across the image)
    blur_sigma: float = 0.0  # defocus, in pixels
    shift_px: float = 0.0  # camera moved
    rotate_deg: float = 0.0
    new_defect_share: float = 0.0  # share of defective parts that are dents
    description: str = "the line as trained"


SCENARIOS: dict[str, Scenario] = {
    "none": Scenario(),
    "lighting": Scenario(gain=1.45, gradient=0.35, description="the lamp replaced: 45 % brighter, lit from one side"),
    "defocus": Scenario(blur_sigma=1.8, description="the lens knocked out of focus (blur of 1.8 px)"),
    "shifted": Scenario(shift_px=5.0, rotate_deg=9.0, description="the camera moved: 5 px and 9 degrees"),
    "new_defect": Scenario(new_defect_share=0.6, description="a defect nobody trained on: dents"),
}


def generate(n: int, seed: int, size: tuple[int, int] = (64, 64), defect_rate: float = 0.06,
             scenario: str | Scenario = "none", defects: tuple[str, ...] = DEFECTS) -> tuple[np.ndarray, list[str]]:
    """`n` parts as uint8 [n, height, width, 1] and their class names (`good` or a defect type).

    Every part is defective with probability `defect_rate`, its defect drawn evenly from `defects`
    (or a dent, at the scenario's `new_defect_share`). Same seed, same parts.
    """
    if isinstance(scenario, str):
        if scenario not in SCENARIOS:
            raise ValueError(f"no image scenario {scenario!r}; known: {sorted(SCENARIOS)}")
        scenario = SCENARIOS[scenario]
    rng = np.random.default_rng(seed)
    height, width = size
    images = np.empty((n, height, width, 1), dtype=np.uint8)
    labels: list[str] = []
    for i in range(n):
        label = OK
        if rng.random() < defect_rate:
            label = NEW_DEFECT if rng.random() < scenario.new_defect_share else str(rng.choice(defects))
        images[i, :, :, 0] = _part(rng, height, width, label, scenario)
        labels.append(label)
    return images, labels


def _part(rng: np.random.Generator, height: int, width: int, label: str, scenario: Scenario) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    y, x = y / (height - 1) - 0.5, x / (width - 1) - 0.5
    reflectance = rng.uniform(0.42, 0.58)
    brushed = ndimage.gaussian_filter(rng.normal(size=(height, width)), sigma=(0.5, rng.uniform(2.5, 5.0)))
    grain = ndimage.gaussian_filter(rng.normal(size=(height, width)), sigma=1.3)
    surface = (reflectance + 0.045 * brushed / (brushed.std() + 1e-9) + 0.025 * grain / (grain.std() + 1e-9))
    if label != OK:
        surface = surface + DRAW[label](rng, height, width)
    slope = rng.normal(0, 0.06, size=2)
    light = (1 + slope[0] * x + slope[1] * y - 0.35 * (x**2 + y**2)) * rng.uniform(0.93, 1.07)
    light = light * scenario.gain * (1 + scenario.gradient * x)
    image = surface * light
    if scenario.rotate_deg or scenario.shift_px:
        image = ndimage.rotate(image, scenario.rotate_deg, reshape=False, mode="reflect", order=1)
        image = ndimage.shift(image, (scenario.shift_px * 0.6, scenario.shift_px), mode="reflect", order=1)
    if scenario.blur_sigma:
        image = ndimage.gaussian_filter(image, scenario.blur_sigma)
    image = image + rng.normal(0, 0.012, size=image.shape)  # sensor noise, after the optics
    return np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)


def _canvas(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    return y, x


def _segment_distance(y: np.ndarray, x: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Each pixel's distance to the segment a→b (points as (y, x))."""
    d = b - a
    t = np.clip(((y - a[0]) * d[0] + (x - a[1]) * d[1]) / max(float(d @ d), 1e-9), 0, 1)
    return np.hypot(y - (a[0] + t * d[0]), x - (a[1] + t * d[1]))


def _scratch(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    y, x = _canvas(height, width)
    length = rng.uniform(0.25, 0.6) * min(height, width)
    angle = rng.uniform(0, np.pi)
    centre = rng.uniform(0.25, 0.75, size=2) * (height, width)
    half = 0.5 * length * np.array([np.sin(angle), np.cos(angle)])
    distance = _segment_distance(y, x, centre - half, centre + half)
    line = np.exp(-(distance / rng.uniform(0.5, 0.9)) ** 2)
    return line * rng.uniform(0.12, 0.25) * rng.choice([1.0, -0.7])  # specular, sometimes a dark groove


def _pits(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    y, x = _canvas(height, width)
    out = np.zeros((height, width))
    for _ in range(rng.integers(1, 4)):
        cy, cx = rng.uniform(0.15, 0.85, size=2) * (height, width)
        radius = rng.uniform(1.3, 2.6)
        r = np.hypot(y - cy, x - cx) / radius
        out += -rng.uniform(0.22, 0.38) * np.exp(-r**2) + 0.08 * np.exp(-((r - 1.3) / 0.4) ** 2)
    return out


def _crack(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    y, x = _canvas(height, width)
    distance = np.full((height, width), np.inf)
    point = rng.uniform(0.25, 0.75, size=2) * (height, width)
    heading = rng.uniform(0, 2 * np.pi)
    steps = int(rng.integers(10, 22))
    for step in range(steps):
        heading += rng.normal(0, 0.55)
        nxt = point + 1.8 * np.array([np.sin(heading), np.cos(heading)])
        distance = np.minimum(distance, _segment_distance(y, x, point, nxt))
        if step == steps // 2 and rng.random() < 0.5:  # a branch
            branch = point + 1.8 * rng.integers(3, 7) * np.array([np.sin(heading + 0.9), np.cos(heading + 0.9)])
            distance = np.minimum(distance, _segment_distance(y, x, point, branch))
        point = nxt
    return -rng.uniform(0.2, 0.32) * np.exp(-(distance / 0.6) ** 2)


def _stain(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    y, x = _canvas(height, width)
    cy, cx = rng.uniform(0.25, 0.75, size=2) * (height, width)
    radius = rng.uniform(5.0, 11.0)
    edge = ndimage.gaussian_filter(rng.normal(size=(height, width)), 2.5)
    r = np.hypot(y - cy, x - cx) / radius + 0.6 * edge / (edge.std() + 1e-9) * 0.25
    return -rng.uniform(0.09, 0.16) / (1 + np.exp((r - 1) / 0.12))


def _dent(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    y, x = _canvas(height, width)
    cy, cx = rng.uniform(0.3, 0.7, size=2) * (height, width)
    radius = rng.uniform(5.0, 9.0)
    bump = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * radius**2))
    gy, gx = np.gradient(bump)
    angle = rng.uniform(0, 2 * np.pi)
    shade = np.cos(angle) * gx + np.sin(angle) * gy
    return rng.uniform(0.1, 0.18) * shade / (np.abs(shade).max() + 1e-9)


DRAW = {"scratch": _scratch, "pit": _pits, "crack": _crack, "stain": _stain, NEW_DEFECT: _dent}
