"""A network written by hand: every weight set by readable code, no training (Zoom In, part 3).

``handmade_net()`` tells circles from squares on ConceptWorld with a small conv net whose units
are designed, the "clean-room" reimplementation of the claim that circuits can be read and
written (Olah et al. 2020, "Zoom In"):

* ``conv1`` (13x13, stride 2): colour-opponent units (red-green, blue-yellow, light-dark) and
  oriented edge units (0, 45, 90, 135 degrees, both polarities) in the luminance, red-green and
  blue-yellow channels: derivatives of an elongated Gaussian (wide enough to blur textures away);
* ``conv2`` (15x15): side units (a straight edge: three edges of one orientation in a row; six
  orientations, 0 and 90 degrees turned by -15, 0, +15, as a ConceptWorld square is turned by
  up to 20 degrees), curve units (two tangent edges on an arc, eight places on a ring), corner
  units (a square's four vertices at the three turns: the two sides' edges on short arms, less
  the same edges beyond the vertex, where a straight line would go on, and less a diagonal
  edge across the bisector, where a circle's arc cuts a corner off) and hole units (for each
  circle radius, an opponent channel at the centre against the same channel three quarters of
  the radius away, both signs). Edges of the red-green and blue-yellow channels weigh 0.3,
  luminance edges 1 (``EDGE_CHANNELS``), so saturated colours do not outweigh the rest;
* ``conv3`` (21x21): circle units (the eight curves on a ring, five radii) and square units (each
  side read at three places along four sides, and the four corners at the vertices, 15 % of
  the weight; four sizes x three turns). A round boundary gives the side units of its square
  little (it leaves their line and turns away), a square gives the ring's diagonal curves
  nothing (it has no diagonal boundary); the positive weights sum to 1, so both kinds answer
  on one contrast scale. Both are inhibited by the hole units at their centre: a disc or a
  square has one colour at its centre and inside its outline, a ConceptWorld ring (its hole
  0.6 x its radius) shows the background at its centre;
* ``fill`` (after ``relu3``): the same circle and square units, each spread over the shape it
  found, like a segmentation: where the strongest circle unit beats the strongest square unit
  the circle units are kept (else the square units), then each unit's map is grey-dilated by
  its disc (circle units, their radius) or box (square units, their half side and turn). The
  footprints hold their centre and an image's strongest answer is kept, so the predicted class
  is exactly conv3's (same accuracy; the losing kind's logit can be lower). Network Dissection
  reads ``fill``, not ``conv3``, whose units answer only at an object's centre (a small blob).
  On ``fill`` (``ConceptWorld("val", length=200)``) all 5 circle units are labelled circle (IoU
  0.05-0.15, rings 0-0.02) and 8 of the 12 square units square (IoU 0.10-0.14; the other four
  have square second or third). Without the hole units no circle unit was labelled circle
  (they answered rings as strongly); with colour edges weighing as much as luminance edges,
  4-5 of 12 square units were square (their strongest answers were objects of a few saturated
  colours);
* ``pool`` (global max), ``shapes`` (strongest circle unit, strongest square unit) and ``fc``:
  circle logit = circle - square (no fitted number).

``DESIGN`` lists every hand-set unit: ``{layer: [(unit, concept, description), ...]}``.
``PartsProbe`` is a concept dataset of edges (by orientation), sides, corners and curves, for
dissecting conv1 and conv2 (ConceptWorld has no such concepts): it labels all 24 edge units
with their orientation and all 12 corner units corner (IoU 0.055-0.070).

Accuracy: 0.930 on the 427 circle and square images among ``ConceptWorld("val")[:1600]``
(``ACCURACY``), where the numbers were chosen; 0.907 on the 378 among ``ConceptWorld("test")
[:1600]``, never used for choosing. The sizes come from ConceptWorld's stated radii; the side
sampling (``SIDE_POINTS``, ``SIDE_STEP``, ``SIDE_AT``) was chosen among four tries on the val
images (one 16 px side unit per side: 0.77; three 4 px ones: 0.92), the corner share and gain
(``SQUARE_CORNERS``, ``CORNER_GAIN``) among nine (0.88-0.93: corners alone cannot tell a square
from a circle, whose arc answers a corner unit 0.65-0.75 x as much as a square's vertex), the
colour edge weight among four (0.3, 0.35, 0.4, 0.5: 0.92-0.94; the smallest gave the most
shape labels).

Example:
    >>> import torch
    >>> model = handmade_net()
    >>> model(torch.rand(2, 3, 64, 64)).shape, model.class_names
    (torch.Size([2, 2]), ['circle', 'square'])
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import ClassVar

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from seethrough.data.conceptworld import ConceptWorld, shape_mask

#: measured accuracy and image count (see the module docstring)
ACCURACY = (0.93, 427)

#: line orientations of the edge units, in degrees (0 = horizontal, 90 = vertical; y points down)
ORIENTATIONS = (0, 45, 90, 135)
#: the colour-opponent channels every conv1 unit reads: name -> weights on (R, G, B)
OPPONENT = {
    "luminance": (1 / 3, 1 / 3, 1 / 3),
    "red-green": (1.0, -1.0, 0.0),
    "blue-yellow": (-0.5, -0.5, 1.0),
}
#: conv1 colour units: (concept, opponent channel, sign, bias)
COLOUR_UNITS = (
    ("red", "red-green", 1.0, 0.0),
    ("green", "red-green", -1.0, 0.0),
    ("blue", "blue-yellow", 1.0, 0.0),
    ("yellow", "blue-yellow", -1.0, 0.0),
    ("white", "luminance", 1.0, -0.5),
    ("black", "luminance", -1.0, 0.5),
)
K1, K2, K3 = 13, 15, 21  # kernel sizes (conv2 and conv3 work on conv1's 32 x 32 grid of 2 px cells)
SIGMA_ACROSS, SIGMA_ALONG = 1.5, 4.0  # edge kernels, in pixels
#: side units: line orientations (a square is turned by up to 20 degrees: three turns, two sides)
TURNS = (-15, 0, 15)
SIDES = tuple(turn + side for side in (0, 90) for turn in TURNS)
SIDE_POINTS, SIDE_STEP = 3, 1.1  # a side unit: 3 edges 1.1 cells apart, a straight 9 px line
SIDE_AT = (-0.6, 0.0, 0.6)  # a square unit reads a side unit at 3 places along each side
#: curve units: where their middle sits on a round boundary (degrees counter-clockwise from +x,
#: y up), each two tangent edges 22.5 degrees apart on a ring of ARC_RADIUS cells
ARCS = (0, 45, 90, 135, 180, 225, 270, 315)
ARC_RADIUS, ARC_SPAN = 7.0, 22.5
#: corner units: a square's four vertices (degrees counter-clockwise from +x, y up, before the
#: turn) at the three turns. Each arm adds edges of its side's orientation CORNER_ARM cells from
#: the vertex (1/2 each); edges CORNER_STOP cells beyond the vertex, where a straight line would
#: go on, take as much away (end-stopping: a side passing by gives 0), and a diagonal edge across
#: the bisector (1 cell inside, on, and outside the vertex), where a round boundary cuts off a
#: corner, CORNER_DIAGONAL; all scaled by CORNER_GAIN, so a clean corner answers about as a side
CORNERS = (45, 135, 225, 315)
CORNER_ARM, CORNER_STOP, CORNER_DIAGONAL, CORNER_GAIN = 1.5, 3.5, 0.25, 1.75
CORNER_DIAGONAL_AT = (-1.0, 0.0, 1.0)
#: hole units, one per circle radius R, opponent channel and sign: the channel's mean over five
#: points 1 cell apart at the centre less its mean over eight points HOLE_RIM x R away, less
#: HOLE_BIAS (a margin for textures). A disc has one colour at its centre and inside its rim; a
#: ConceptWorld ring (its hole 0.6 x its radius) shows the background at its centre. Circle
#: units, and square units (with the hole units of the nearest radius), subtract HOLE_WEIGHT x
#: the six hole units at their centre
HOLE_RIM, HOLE_BIAS, HOLE_WEIGHT = 0.75, 0.1, 1.0
#: the share of a square unit's weight on its four corners (the rest on its sides)
SQUARE_CORNERS = 0.15
#: the weight of each opponent channel's edges in conv2: saturated colours (red-green and
#: blue-yellow contrasts up to 1.5) would otherwise outweigh luminance edges (up to 1), and the
#: strongest answers of the shape units (those Network Dissection reads) would be of a few colours
EDGE_CHANNELS = {"luminance": 1.0, "red-green": 0.3, "blue-yellow": 0.3}
#: conv3 sizes, in cells (2 px): circle radii (0.92 x 13-19 px) and square half sides (0.71 x 13-19 px)
RADII = (5.0, 6.0, 7.0, 8.0, 9.0)
HALF_SIDES = (4.5, 5.25, 6.0, 6.75)
#: conv2: side, curve, corner and hole units
CONV2_UNITS = len(SIDES) + len(ARCS) + len(CORNERS) * len(TURNS) + 2 * len(OPPONENT) * len(RADII)


def edge_unit(channel: str, orientation: int, polarity: int) -> int:
    """conv1 index of the edge unit of an opponent channel, orientation and polarity (+1/-1)."""
    return (len(COLOUR_UNITS) + 8 * list(OPPONENT).index(channel)
            + 2 * ORIENTATIONS.index(orientation) + (polarity < 0))


def side_unit(orientation: int) -> int:
    """conv2 index of the side unit (a long straight edge) of a line orientation in ``SIDES``."""
    return SIDES.index(orientation)


def curve_unit(middle: int) -> int:
    """conv2 index of the curve unit whose middle sits at ``middle`` degrees on a ring."""
    return len(SIDES) + ARCS.index(middle)


def hole_unit(radius: float, channel: str, sign: int) -> int:
    """conv2 index of the hole unit of a circle radius (cells) in ``RADII``, an opponent channel
    and a sign (+1: the centre is more of the channel than the rim, -1: less)."""
    return (len(SIDES) + len(ARCS) + len(CORNERS) * len(TURNS)
            + 2 * (len(OPPONENT) * RADII.index(radius) + list(OPPONENT).index(channel)) + (sign < 0))


def corner_unit(at: int, turn: int) -> int:
    """conv2 index of the corner unit of a square's vertex ``at`` degrees (45, 135, 225, 315:
    counter-clockwise from +x, y up, before the turn) at a turn in ``TURNS``."""
    return len(SIDES) + len(ARCS) + len(TURNS) * CORNERS.index(at) + TURNS.index(turn)


def _corner_signs(at: int) -> tuple[int, int]:
    """(s1, s2): the vertex at ``at`` degrees is a * (s1 * normal(turn) + s2 * normal(turn + 90))."""
    return {45: (-1, 1), 135: (-1, -1), 225: (1, -1), 315: (1, 1)}[at]


def circle_unit(radius: float) -> int:
    """conv3 index of the circle unit of a radius (cells) in ``RADII``."""
    return RADII.index(radius)


def square_unit(half_side: float, turn: int) -> int:
    """conv3 index of the square unit of a half side (cells) and a turn in ``TURNS``."""
    return len(RADII) + len(TURNS) * HALF_SIDES.index(half_side) + TURNS.index(turn)


def _grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, x) offsets from the centre of a size x size kernel."""
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    return torch.meshgrid(r, r, indexing="ij")


def _normal(orientation: float) -> tuple[float, float]:
    """(dy, dx) unit normal of a line of ``orientation`` degrees (its "+" side)."""
    a = math.radians(orientation)
    return math.cos(a), math.sin(a)


def edge_kernel(orientation: float, size: int = K1, stride: int = 2) -> torch.Tensor:
    """(size, size) derivative of an elongated Gaussian across a line of ``orientation``:
    a unit step, brighter on the "+" side, gives 1 (on the stride grid of pixels)."""
    y, x = _grid(size)
    ny, nx = _normal(orientation)
    across, along = y * ny + x * nx, x * ny - y * nx
    k = across * torch.exp(-across**2 / (2 * SIGMA_ACROSS**2) - along**2 / (2 * SIGMA_ALONG**2))
    return k / k[across > 0].sum()


def blob(size: int, sigma: float = 1.0) -> torch.Tensor:
    """(size, size) Gaussian summing to 1."""
    y, x = _grid(size)
    g = torch.exp(-(x**2 + y**2) / (2 * sigma**2))
    return g / g.sum()


def splat(kernel: torch.Tensor, y: float, x: float, weight: float) -> None:
    """Add ``weight`` at the (y, x) offset from the kernel's centre, bilinearly spread."""
    cy, cx = y + (kernel.shape[-2] - 1) / 2, x + (kernel.shape[-1] - 1) / 2
    y0, x0 = math.floor(cy), math.floor(cx)
    for yy, wy in ((y0, 1 - (cy - y0)), (y0 + 1, cy - y0)):
        for xx, wx in ((x0, 1 - (cx - x0)), (x0 + 1, cx - x0)):
            if 0 <= yy < kernel.shape[-2] and 0 <= xx < kernel.shape[-1]:
                kernel[..., yy, xx] += weight * wy * wx


def add_edge(kernel: torch.Tensor, orientation: float, y: float, x: float, weight: float) -> None:
    """In a conv2 kernel (conv1 units, h, w): ``weight`` on edge energy of ``orientation``
    (any channel, either polarity) at (y, x), shared between the two nearest orientations."""
    orientation %= 180
    for o in ORIENTATIONS + (180,):
        share = 1 - abs(orientation - o) / 45
        if share <= 0:
            continue
        for channel in OPPONENT:
            for polarity in (1, -1):
                splat(kernel[edge_unit(channel, o % 180, polarity)], y, x,
                      weight * share * EDGE_CHANNELS[channel])


def conv1_weights() -> tuple[torch.Tensor, torch.Tensor]:
    """conv1 (units, 3, K1, K1) and bias: colour-opponent units, then oriented edges."""
    units = len(COLOUR_UNITS) + 8 * len(OPPONENT)
    w, b = torch.zeros(units, 3, K1, K1, dtype=torch.float64), torch.zeros(units, dtype=torch.float64)
    for unit, (_, channel, sign, bias) in enumerate(COLOUR_UNITS):
        w[unit] = sign * torch.tensor(OPPONENT[channel])[:, None, None] * blob(K1)
        b[unit] = bias
    for channel, rgb in OPPONENT.items():
        for o in ORIENTATIONS:
            for polarity in (1, -1):
                w[edge_unit(channel, o, polarity)] = (polarity * torch.tensor(rgb)[:, None, None]
                                                      * edge_kernel(o))
    return w, b


def _ring(radius: float, angle: float) -> tuple[float, float]:
    """(y, x) offset of the point ``angle`` degrees (counter-clockwise from +x) on a ring."""
    a = math.radians(angle)
    return -radius * math.sin(a), radius * math.cos(a)


def _line(orientation: float) -> tuple[float, float]:
    """(dy, dx) unit direction along a line of ``orientation`` degrees."""
    ny, nx = _normal(orientation)
    return -nx, ny


def conv2_weights(in_units: int) -> torch.Tensor:
    """conv2 (units, in_units, K2, K2): side, curve, corner and hole units (see ``DESIGN``).

    A side unit adds up edge energy of one orientation at ``SIDE_POINTS`` points along its line:
    a straight 16 px edge gives it its full response, a round boundary (which leaves the line by
    2-3 px and turns by 25-35 degrees at its ends) far less. A curve unit adds two tangent edges
    ``ARC_SPAN`` degrees apart on a ring. Their weights are positive and sum to 1 per opponent
    channel and polarity (times ``EDGE_CHANNELS``), so a clean step edge along their path gives
    about 1. A corner unit adds its two arms and subtracts their continuations and a diagonal
    across its bisector (``CORNERS``); a hole unit compares a colour channel at its centre and
    on a ring (``HOLE_RIM``).
    """
    w = torch.zeros(CONV2_UNITS, in_units, K2, K2, dtype=torch.float64)
    for orientation in SIDES:
        dy, dx = _line(orientation)
        for j in range(SIDE_POINTS):
            t = SIDE_STEP * (j - (SIDE_POINTS - 1) / 2)
            add_edge(w[side_unit(orientation)], orientation, t * dy, t * dx, 1 / SIDE_POINTS)
    for middle in ARCS:
        my, mx = _ring(ARC_RADIUS, middle)
        for turn in (-ARC_SPAN / 2, ARC_SPAN / 2):
            y, x = _ring(ARC_RADIUS, middle + turn)
            add_edge(w[curve_unit(middle)], middle + turn + 90, y - my, x - mx, 1 / 2)  # tangent
    for at in CORNERS:
        s1, s2 = _corner_signs(at)
        for turn in TURNS:
            unit = w[corner_unit(at, turn)]
            n1, n2 = _normal(turn), _normal(turn + 90)
            # the side of orientation `turn` runs from the vertex along -s2 * n2, the other
            # (orientation turn + 90) along -s1 * n1; beyond the vertex a straight line goes on
            for orientation, (dy, dx) in ((turn, (-s2 * n2[0], -s2 * n2[1])),
                                          (turn + 90, (-s1 * n1[0], -s1 * n1[1]))):
                add_edge(unit, orientation, CORNER_ARM * dy, CORNER_ARM * dx, 1 / 2)
                add_edge(unit, orientation, -CORNER_STOP * dy, -CORNER_STOP * dx, -1 / 2)
            # a rounded corner (a circle's arc) crosses the bisector with a diagonal tangent
            vy, vx = s1 * n1[0] + s2 * n2[0], s1 * n1[1] + s2 * n2[1]
            norm = math.hypot(vy, vx)
            diagonal = math.degrees(math.atan2(vx, vy))  # the line whose normal is the bisector
            diagonal = 45 + 90 * round((diagonal % 180 - 45) / 90)  # the nearest diagonal unit
            for d in CORNER_DIAGONAL_AT:
                add_edge(unit, diagonal, -d * vy / norm, -d * vx / norm,
                         -CORNER_DIAGONAL / len(CORNER_DIAGONAL_AT))
    w[corner_unit(CORNERS[0], TURNS[0]):corner_unit(CORNERS[-1], TURNS[-1]) + 1] *= CORNER_GAIN
    for radius in RADII:
        for channel in OPPONENT:
            # the colour units of a channel's two signs: their difference is its value (less 0.5)
            plus, minus = (next(unit for unit, (_, c, sign, _) in enumerate(COLOUR_UNITS)
                                if c == channel and sign == s) for s in (1.0, -1.0))
            for sign in (1, -1):
                unit = w[hole_unit(radius, channel, sign)]
                for colour, weight in ((plus, sign), (minus, -sign)):
                    for y, x in ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)):
                        splat(unit[colour], y, x, weight / 5)
                    for k in range(8):
                        splat(unit[colour], *_ring(HOLE_RIM * radius, 45 * k), -weight / 8)
    return w


def conv2_bias() -> torch.Tensor:
    """conv2 bias: ``-HOLE_BIAS`` for hole units, 0 for the others."""
    b = torch.zeros(CONV2_UNITS, dtype=torch.float64)
    b[hole_unit(RADII[0], "luminance", 1):] = -HOLE_BIAS
    return b


def conv3_weights() -> torch.Tensor:
    """conv3 (units, conv2 units, K3, K3): circle units, then square units (see ``DESIGN``).

    A circle unit of radius R adds the eight curve units where they sit on a ring of radius R
    around it; a square unit of half side a, turned by ``turn``, adds the side units of its
    orientations a away from its centre (three places a side) and its four corner units at its
    vertices (``SQUARE_CORNERS`` of its weight). The positive weights sum to 1, so circle and
    square units answer on one scale, each about 1 x the object's edge contrast when it fits;
    both subtract ``HOLE_WEIGHT`` x the hole units at their centre (a filled interior).
    """
    w = torch.zeros(len(RADII) + len(HALF_SIDES) * len(TURNS),
                    CONV2_UNITS, K3, K3, dtype=torch.float64)
    for radius in RADII:
        for middle in ARCS:
            splat(w[circle_unit(radius), curve_unit(middle)], *_ring(radius, middle), 1 / len(ARCS))
        for channel in OPPONENT:
            for sign in (1, -1):
                w[circle_unit(radius), hole_unit(radius, channel, sign), K3 // 2,
                  K3 // 2] = -HOLE_WEIGHT
    for half_side in HALF_SIDES:
        for turn in TURNS:
            for orientation in (turn, turn + 90):
                ny, nx = _normal(orientation)
                dy, dx = _line(orientation)
                for sign in (1, -1):
                    for at in SIDE_AT:  # along the side, as a fraction of the half side
                        y, x = half_side * (sign * ny + at * dy), half_side * (sign * nx + at * dx)
                        splat(w[square_unit(half_side, turn), side_unit(orientation)], y, x,
                              (1 - SQUARE_CORNERS) / (4 * len(SIDE_AT)))
            n1, n2 = _normal(turn), _normal(turn + 90)
            for at in CORNERS:
                s1, s2 = _corner_signs(at)
                y, x = half_side * (s1 * n1[0] + s2 * n2[0]), half_side * (s1 * n1[1] + s2 * n2[1])
                splat(w[square_unit(half_side, turn), corner_unit(at, turn)], y, x,
                      SQUARE_CORNERS / len(CORNERS))
            nearest = min(RADII, key=lambda r: abs(r - half_side))
            for channel in OPPONENT:
                for sign in (1, -1):
                    w[square_unit(half_side, turn), hole_unit(nearest, channel, sign),
                      K3 // 2, K3 // 2] = -HOLE_WEIGHT
    return w


class ShapeMax(nn.Module):
    """(N, units) -> (N, 2): the strongest circle unit and the strongest square unit."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        circles, squares = x[:, :len(RADII)], x[:, len(RADII):]
        return torch.stack([circles.amax(1), squares.amax(1)], 1)


def fill_footprints() -> torch.Tensor:
    """(units, K3, K3) boolean footprints of ``fill``: each circle unit's disc (its radius),
    each square unit's box (its half side, at its turn), in cells around the detected centre."""
    y, x = _grid(K3)
    feet = torch.zeros(len(RADII) + len(HALF_SIDES) * len(TURNS), K3, K3, dtype=torch.bool)
    for radius in RADII:
        feet[circle_unit(radius)] = x**2 + y**2 <= radius**2
    for half_side in HALF_SIDES:
        for turn in TURNS:
            ny, nx = _normal(turn)
            dy, dx = _line(turn)
            across, along = (y * ny + x * nx).abs(), (y * dy + x * dx).abs()
            feet[square_unit(half_side, turn)] = torch.maximum(across, along) <= half_side
    return feet


class Fill(nn.Module):
    """Each shape unit's answer spread over the shape it found, where its kind wins.

    At each place the stronger kind keeps its units (circle units where the strongest circle
    unit answers at least as much as the strongest square unit, square units elsewhere) and the
    other kind is set to 0; then ``out[u, p]`` is the largest kept ``x[u, p + d]`` over the
    offsets ``d`` in unit ``u``'s footprint (a grey dilation by its disc or turned box, see
    ``fill_footprints``). The footprints hold their centre and the strongest answer of an image
    is kept, so the predicted class (the kind that answers most, anywhere) is unchanged.
    """

    def __init__(self, footprints: torch.Tensor):
        super().__init__()
        self.register_buffer("footprints", footprints.bool())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        circles, squares = x[:, :len(RADII)], x[:, len(RADII):]
        circle_wins = circles.amax(1, keepdim=True) >= squares.amax(1, keepdim=True)
        x = torch.cat([circles.where(circle_wins, torch.zeros_like(circles)),
                       squares.where(~circle_wins, torch.zeros_like(squares))], 1)
        k = self.footprints.shape[-1]
        h, w = x.shape[-2:]
        padded = nn.functional.pad(x, (k // 2,) * 4, value=float("-inf"))
        out = torch.full_like(x, float("-inf"))
        for dy, dx in self.footprints.any(0).nonzero().tolist():
            keep = self.footprints[:, dy, dx][:, None, None]  # offset (dy - k // 2, dx - k // 2)
            out = torch.where(keep, torch.maximum(out, padded[..., dy:dy + h, dx:dx + w]), out)
        return out


def handmade_net() -> nn.Sequential:
    """The hand-written circle-vs-square net (see the module docstring), in eval mode."""
    w1, b1 = conv1_weights()
    w2, w3 = conv2_weights(w1.shape[0]), conv3_weights()
    conv1 = nn.Conv2d(3, w1.shape[0], K1, stride=2, padding=K1 // 2, padding_mode="replicate")
    conv2 = nn.Conv2d(w1.shape[0], w2.shape[0], K2, padding=K2 // 2)
    conv3 = nn.Conv2d(w2.shape[0], w3.shape[0], K3, padding=K3 // 2, bias=False)
    fc = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        conv1.weight.copy_(w1)
        conv1.bias.copy_(b1)
        conv2.weight.copy_(w2)
        conv2.bias.copy_(conv2_bias())
        conv3.weight.copy_(w3)
        fc.weight.copy_(torch.tensor([[1.0, -1.0], [-1.0, 1.0]]))  # circle - square, and back
    model = nn.Sequential(OrderedDict(
        conv1=conv1, relu1=nn.ReLU(), conv2=conv2, relu2=nn.ReLU(), conv3=conv3,
        relu3=nn.ReLU(), fill=Fill(fill_footprints()), pool=nn.AdaptiveMaxPool2d(1),
        flatten=nn.Flatten(), shapes=ShapeMax(), fc=fc,
    ))
    model.input_size = (3, 64, 64)
    model.class_names = ["circle", "square"]
    return model.eval()


def _design() -> dict[str, list[tuple[int, str, str]]]:
    conv1 = [(unit, concept, f"{channel} opponent, sign {sign:+g}")
             for unit, (concept, channel, sign, _) in enumerate(COLOUR_UNITS)]
    conv1 += [(edge_unit(channel, o, polarity), f"edge_{o}",
               f"{o} degree edge in {channel}, {'+' if polarity > 0 else '-'} side brighter")
              for channel in OPPONENT for o in ORIENTATIONS for polarity in (1, -1)]
    conv2 = [(side_unit(o), "side", f"straight edge at {o} degrees, {2 * SIDE_STEP * (SIDE_POINTS - 1):g} px long")
             for o in SIDES]
    conv2 += [(curve_unit(m), "curve", f"arc of a round boundary, middle at {m} degrees")
              for m in ARCS]
    conv2 += [(corner_unit(at, t), "corner",
               f"two sides meeting at a square's vertex at {at} degrees, turned {t:+d}")
              for at in CORNERS for t in TURNS]
    conv2 += [(hole_unit(r, c, sign), "hole",
               (f"{c} {'more' if sign > 0 else 'less'} at the centre than "
                f"{2 * HOLE_RIM * r:g} px away (a ring's hole, for circles of radius {2 * r:g} px)"))
              for r in RADII for c in OPPONENT for sign in (1, -1)]
    conv3 = [(circle_unit(r), "circle", f"eight curves on a ring of radius {2 * r:g} px, no hole")
             for r in RADII]
    conv3 += [(square_unit(a, t), "square",
               f"four sides {2 * a:g} px from the centre and four corners, turned {t:+d}, no hole")
              for a in HALF_SIDES for t in TURNS]
    fill = [(circle_unit(r), "circle", f"conv3 circle unit over a disc of radius {2 * r:g} px")
            for r in RADII]
    fill += [(square_unit(a, t), "square", f"conv3 square unit over a {4 * a:g} px box turned {t:+d}")
             for a in HALF_SIDES for t in TURNS]
    return {"conv1": conv1, "conv2": conv2, "conv3": conv3, "fill": fill}


#: every hand-set unit: {layer: [(unit, intended concept, description)]}
DESIGN = _design()


def circles_and_squares(count: int = 1600, split: str = "val") -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 3, 64, 64) and labels (0 circle, 1 square) of the circles and squares among
    the first ``count`` images of a ConceptWorld split.

    Example:
        >>> images, labels = circles_and_squares(40)
        >>> images.shape[1:], set(labels.tolist()) <= {0, 1}
        (torch.Size([3, 64, 64]), True)
    """
    world = ConceptWorld(split, length=count)
    keep = [world.generate(i) for i in range(count)]
    keep = [s for s in keep if s["label"] in (0, 1)]
    images = torch.from_numpy(np.stack([s["image"] for s in keep])).permute(0, 3, 1, 2)
    return images.float() / 255, torch.tensor([s["label"] for s in keep])


class PartsProbe(Dataset):
    """A concept dataset of one circle or square (axis-aligned, random colours) per image, with
    masks ``edge`` (boundary pixels by line orientation: ``edge_0`` ... ``edge_135``) and
    ``part`` (``side``: a square's boundary, ``corner``: near its vertices; ``curve``: a
    circle's boundary).

    Example:
        >>> sample = PartsProbe(4)[1]
        >>> sample["image"].shape, sorted(sample["masks"])
        (torch.Size([3, 64, 64]), ['edge', 'part'])
    """

    categories: ClassVar[dict[str, list[str]]] = {
        "edge": ["none", *(f"edge_{o}" for o in ORIENTATIONS)],
        "part": ["none", "side", "corner", "curve"],
    }

    def __init__(self, length: int = 64, size: int = 64, seed: int = 0):
        self.length, self.size, self.seed = length, size, seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, index])
        s = self.size
        v, u = np.mgrid[0:s, 0:s].astype(np.float64) + 0.5
        radius = rng.uniform(0.2, 0.3) * s
        cx, cy = rng.uniform(radius + 2, s - radius - 2, 2)
        du, dv = (u - cx) / radius, (v - cy) / radius
        square = index % 2 == 1
        inside = shape_mask("square" if square else "circle", du, dv)
        background, colour = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
        while np.abs(colour - background).sum() < 0.6:
            colour = rng.uniform(0, 1, 3)
        image = np.where(inside[..., None], colour, background)
        # boundary band: pixels within 1.5 px of the shape's outline
        if square:
            half = radius * math.sqrt(0.5)
            distance = np.abs(np.maximum(np.abs(u - cx), np.abs(v - cy)) - half)
            normal = np.where(np.abs(u - cx) > np.abs(v - cy), 0.0, 90.0)  # angle of the normal
            vertex = np.hypot(np.abs(u - cx) - half, np.abs(v - cy) - half)
        else:
            rim = radius * math.sqrt(0.85)
            distance = np.abs(np.hypot(u - cx, v - cy) - rim)
            normal = np.degrees(np.arctan2(-(v - cy), u - cx))
        band = distance <= 1.5
        orientation = (normal + 90) % 180  # the line is perpendicular to its normal
        bins = np.round(orientation / 45).astype(int) % 4
        edge = np.where(band, bins + 1, 0)
        part = np.zeros((s, s), np.int64)
        if square:
            part[band] = 1
            part[vertex <= 4] = 2
        else:
            part[band] = 3
        return {
            "image": torch.from_numpy(image.transpose(2, 0, 1).astype(np.float32)),
            "masks": {"edge": torch.from_numpy(edge), "part": torch.from_numpy(part)},
        }
