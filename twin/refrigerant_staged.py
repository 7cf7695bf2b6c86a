"""What two-stage and cascade cycles share: the evaluated state, the envelope and the maps.

A staged cycle has a low stage (evaporator, low-stage compressor) and a high stage
(high-stage compressor, condenser) meeting at an intermediate level: the flash tank of a
two-stage cycle (`twin.refrigerant_two_stage`) or the cascade heat exchanger of a cascade
(`twin.refrigerant_cascade`). Everything is per kg of low-stage refrigerant; the COP is
the heating COP q_cond / (w_low + w_high).

``StagedMap`` is the precomputed form, built the same way as the single-stage
``CycleMap``: quantities of the evaporating temperature alone (p_evap, suction density)
and of the condensing temperature alone (p_cond) are 1-D tables every step / fine K,
everything that depends on both is a 2-D table every step K, interpolated bilinearly;
q_cond = q_evap + w and cop = q_cond / w are formed from the interpolated values, so the
energy balance closes exactly.
"""

from __future__ import annotations

import io
import math
from functools import cache
from importlib import resources
from typing import Any, NamedTuple, Protocol

from twin.errors import RefrigerantError
from twin.refrigerant import (
    T0_K,
    T_EVAP_MAX_C,
    T_EVAP_MIN_C,
    CycleSpec,
    GridMap,
    check_map_version,
    envelope,
    grid_nodes,
    map_tables,
)

HT_COND_MIN_C = 40.0  # lowest condensing temperature of a staged cycle, degC
HT_MIN_LIFT_K = 20.0  # smallest t_cond - t_evap of a staged cycle, K (one stage does better)
STAGED_MAP_STEP_K = 2.0  # 2-D grid step of the shipped staged maps, K (COP within 0.03 %)
STAGED_MAP_FINE = 20  # 1-D tables every STAGED_MAP_STEP_K / STAGED_MAP_FINE K
_MAP_VERSION = 1
GRID_KEYS = ("q_evap", "w_low", "w_high", "t2_low", "t2_high", "ratio", "t_mid", "p_low_out",
             "p_high_in")


class StagedState(NamedTuple):
    """One evaluated staged cycle, per kg of low-stage refrigerant (J/kg, Pa, degC).

    Immutable; a named tuple because it is built in every map evaluation (a frozen
    dataclass of 18 fields costs several microseconds to create).
    """

    t_evap_C: float  # evaporating (dew) temperature
    t_cond_C: float  # condensing (bubble) temperature
    t_mid_C: float  # two-stage: saturation at p_int; cascade: low-stage condensing
    p_evap_Pa: float
    p_cond_Pa: float
    p_low_out_Pa: float  # low-stage discharge: p_int, or the low-stage condensing pressure
    p_high_in_Pa: float  # high-stage suction: p_int, or the high-stage evaporating pressure
    q_evap_J_kg: float
    w_low_J_kg: float  # low-stage compressor work
    w_high_J_kg: float  # high-stage compressor work, per kg of low-stage flow
    w_J_kg: float  # w_low + w_high
    q_cond_J_kg: float  # q_evap + w
    mass_ratio: float  # high-stage / low-stage mass flow (-)
    rho_suction_kg_m3: float  # low-stage suction density
    t_discharge_low_C: float
    t_discharge_high_C: float
    cop: float  # q_cond / w (-)
    carnot_cop: float  # T_cond / (T_cond - T_evap), kelvin, refrigerant temperatures

    @property
    def t_discharge_C(self) -> float:
        """Discharge temperature of the high stage (into the condenser), degC."""
        return self.t_discharge_high_C

    @property
    def pressure_ratio_low(self) -> float:
        """Pressure ratio of the low-stage compressor (-)."""
        return self.p_low_out_Pa / self.p_evap_Pa


def make_staged(t_evap_C: float, t_cond_C: float, t_mid_C: float, p_evap: float,
                p_cond: float, p_low_out: float, p_high_in: float, q_evap: float,
                w_low: float, w_high: float, ratio: float, rho1: float, t2_low: float,
                t2_high: float) -> StagedState:
    """A StagedState with w, q_cond, cop and carnot_cop formed from the parts."""
    w = w_low + w_high
    q_cond = q_evap + w
    return StagedState(t_evap_C, t_cond_C, t_mid_C, p_evap, p_cond, p_low_out, p_high_in,
                       q_evap, w_low, w_high, w, q_cond, ratio, rho1, t2_low, t2_high,
                       q_cond / w, (t_cond_C + T0_K) / (t_cond_C - t_evap_C))


class StagedSpec(Protocol):
    """What a staged cycle's spec offers the maps (two-stage and cascade specs)."""

    @property
    def kind(self) -> str:
        """``two_stage`` or ``cascade``."""

    @property
    def label(self) -> str:
        """Short name for messages, e.g. ``two-stage R717``."""

    def fluids(self) -> tuple[str, ...]:
        """Refrigerants, low stage first."""

    def params(self) -> tuple[float, ...]:
        """Numeric parameters in a fixed order (NaN for None), stored in the map file:
        superheat first, the fixed intermediate or cascade temperature (or NaN) last."""

    def envelope(self) -> tuple[float, float, float, float]:
        """(t_evap_min, t_evap_max, t_cond_min, t_cond_max), degC."""

    def outside(self, t_evap_C: float, t_cond_C: float) -> str | None:
        """Why a point is outside the envelope, None when it is inside."""

    def fixed_limits(self) -> tuple[float, float] | None:
        """(highest evaporating, lowest condensing) degC that a fixed intermediate or
        cascade temperature allows, None when it is not fixed."""

    def node_ok(self, t_evap_C: float, t_cond_C: float, slack_K: float) -> bool:
        """True if a map node can be computed (the envelope widened by slack_K)."""

    def solve(self, t_evap_C: float, t_cond_C: float) -> StagedState:
        """The cycle with HEOS, no envelope check."""

    def is_default(self) -> bool:
        """True for parameters a shipped map may have (``map_name`` tells which file)."""

    def map_name(self) -> str:
        """File name of the shipped map in ``twin/data/``."""


def envelope_text(spec: StagedSpec) -> str:
    """The envelope as words, for error messages."""
    te_lo, te_hi, tc_lo, tc_hi = spec.envelope()
    return (f"envelope: evaporating {te_lo:g}..{te_hi:g} degC, condensing {tc_lo:g}.."
            f"{tc_hi:g} degC, t_cond - t_evap >= {HT_MIN_LIFT_K:g} K")


def staged_outside(spec: StagedSpec, t_evap_C: float, t_cond_C: float,
                   fluid_high: str, t_crit_high_C: float) -> str | None:
    """The common envelope rules of staged cycles: None inside, else why not."""
    te_lo, te_hi, tc_lo, tc_hi = spec.envelope()
    if not (math.isfinite(t_evap_C) and math.isfinite(t_cond_C)):
        return "temperatures must be finite numbers"
    if t_cond_C > tc_hi:
        return (f"condensing above {tc_hi:g} degC ({fluid_high}: critical temperature "
                f"{t_crit_high_C:.1f} degC less a margin, at most 130 degC)")
    if t_cond_C < tc_lo:
        return f"condensing below {tc_lo:g} degC"
    if t_evap_C < te_lo:
        return f"evaporating below {te_lo:g} degC"
    if t_evap_C > te_hi:
        return f"evaporating above {te_hi:g} degC"
    if t_cond_C - t_evap_C < HT_MIN_LIFT_K:
        return f"lift {t_cond_C - t_evap_C:.3g} K below the minimum {HT_MIN_LIFT_K:g} K"
    return None


def check_point(spec: StagedSpec, t_evap_C: float, t_cond_C: float) -> None:
    """Raise RefrigerantError (one line: cycle, point, why, envelope) outside the envelope."""
    why = spec.outside(t_evap_C, t_cond_C)
    if why is not None:
        raise RefrigerantError(f"{spec.label}: evaporating {t_evap_C} degC, condensing "
                               f"{t_cond_C} degC: {why}; {envelope_text(spec)}")


def staged_heos(spec: StagedSpec, t_evap_C: float, t_cond_C: float) -> StagedState:
    """Evaluate a staged cycle with CoolProp HEOS; RefrigerantError outside the envelope."""
    check_point(spec, t_evap_C, t_cond_C)
    try:
        return spec.solve(t_evap_C, t_cond_C)
    except ValueError as exc:  # CoolProp's errors are ValueErrors (RefrigerantError too)
        if isinstance(exc, RefrigerantError):
            raise
        raise RefrigerantError(f"{spec.label}: CoolProp failed at evaporating {t_evap_C} "
                               f"degC, condensing {t_cond_C} degC: {exc}") from exc


@cache
def staged_cond_max(fluid: str) -> float:
    """Highest condensing temperature of a staged cycle's high-stage fluid (degC): the
    single-stage limit rounded down to a whole STAGED_MAP_STEP_K above HT_COND_MIN_C."""
    tc_hi = envelope(CycleSpec(fluid))[3]
    return HT_COND_MIN_C + STAGED_MAP_STEP_K * math.floor(
        (tc_hi - HT_COND_MIN_C) / STAGED_MAP_STEP_K)


def default_t_evap_range() -> tuple[float, float]:
    """Evaporating range of staged cycles (that of the single-stage maps), degC."""
    return T_EVAP_MIN_C, T_EVAP_MAX_C


# ------------------------------------------------------------------------------ maps


class StagedMap(GridMap):
    """A staged cycle precomputed on a regular (t_evap, t_cond) grid (see the module doc).

    2-D nodes that no cell inside the envelope uses are NaN.
    """

    def __init__(self, spec: StagedSpec, step_K: float, fine: int,
                 evap: dict[str, list[float]], cond: dict[str, list[float]],
                 grid: dict[str, list[float]]) -> None:
        # evap: p Pa, rho kg/m3; cond: p Pa; grid: GRID_KEYS
        keys_ok = (set(grid) == set(GRID_KEYS) and set(evap) == {"p", "rho"}
                   and set(cond) == {"p"})
        super().__init__(spec.label, spec.envelope(), step_K, fine, evap, cond, grid,
                         keys_ok)
        self.spec = spec
        self._tables = tuple(grid[k] for k in GRID_KEYS)
        self._tables_1d = (evap["p"], evap["rho"], cond["p"])
        self._fixed = spec.fixed_limits()

    def evaluate(self, t_evap_C: float, t_cond_C: float) -> StagedState:
        """Interpolated cycle at evaporating/condensing temperatures (degC).

        Raises RefrigerantError outside the envelope (same rules as ``staged_heos``).
        """
        te_lo, te_hi, tc_lo, tc_hi = self.envelope
        fixed = self._fixed
        if not (te_lo <= t_evap_C <= te_hi and tc_lo <= t_cond_C <= tc_hi
                and t_cond_C - t_evap_C >= HT_MIN_LIFT_K) or (
                    fixed is not None and (t_evap_C > fixed[0] or t_cond_C < fixed[1])):
            check_point(self.spec, t_evap_C, t_cond_C)
        pe, rho, pc = self._tables_1d
        x = (t_evap_C - te_lo) * self._inv_fine
        i = int(x)
        if i > self._last_fe:
            i = self._last_fe
        f = x - i
        p_evap = pe[i] + (pe[i + 1] - pe[i]) * f
        rho_1 = rho[i] + (rho[i + 1] - rho[i]) * f
        x = (t_cond_C - tc_lo) * self._inv_fine
        i = int(x)
        if i > self._last_fc:
            i = self._last_fc
        f = x - i
        p_cond = pc[i] + (pc[i + 1] - pc[i]) * f
        x = (t_evap_C - te_lo) * self._inv
        i = int(x)
        if i > self._last_e:
            i = self._last_e
        fx = x - i
        x = (t_cond_C - tc_lo) * self._inv
        j = int(x)
        if j > self._last_c:
            j = self._last_c
        fy = x - j
        k = i * self.n_cond + j
        m = k + self.n_cond
        gx = 1.0 - fx
        gy = 1.0 - fy
        a00 = gx * gy
        a01 = gx * fy
        a10 = fx * gy
        a11 = fx * fy
        k1 = k + 1
        m1 = m + 1
        tq, twl, twh, tt2l, tt2h, tr, ttm, tplo, tphi = self._tables
        q = tq[k] * a00 + tq[k1] * a01 + tq[m] * a10 + tq[m1] * a11
        wl = twl[k] * a00 + twl[k1] * a01 + twl[m] * a10 + twl[m1] * a11
        wh = twh[k] * a00 + twh[k1] * a01 + twh[m] * a10 + twh[m1] * a11
        t2l = tt2l[k] * a00 + tt2l[k1] * a01 + tt2l[m] * a10 + tt2l[m1] * a11
        t2h = tt2h[k] * a00 + tt2h[k1] * a01 + tt2h[m] * a10 + tt2h[m1] * a11
        r = tr[k] * a00 + tr[k1] * a01 + tr[m] * a10 + tr[m1] * a11
        tm = ttm[k] * a00 + ttm[k1] * a01 + ttm[m] * a10 + ttm[m1] * a11
        plo = tplo[k] * a00 + tplo[k1] * a01 + tplo[m] * a10 + tplo[m1] * a11
        phi = tphi[k] * a00 + tphi[k1] * a01 + tphi[m] * a10 + tphi[m1] * a11
        if not (wl > 0.0 and wh > 0.0):  # a NaN node: cannot happen inside the envelope
            raise RefrigerantError(f"{self.spec.label}: cycle map has no value at "
                                   f"{t_evap_C}, {t_cond_C} degC")
        w = wl + wh
        q_cond = q + w
        return StagedState(t_evap_C, t_cond_C, tm, p_evap, p_cond, plo, phi, q, wl, wh, w,
                           q_cond, r, rho_1, t2l, t2h, q_cond / w,
                           (t_cond_C + T0_K) / (t_cond_C - t_evap_C))

    # -- storage -----------------------------------------------------------------------
    def to_arrays(self) -> dict[str, Any]:
        """Numpy arrays for ``numpy.savez_compressed`` (see ``load_staged_map``)."""
        import CoolProp
        import numpy as np

        return self.with_tables({
            "version": np.array(_MAP_VERSION),
            "kind": np.array(self.spec.kind),
            "fluids": np.array(self.spec.fluids()),
            "coolprop_version": np.array(CoolProp.__version__),
            "params": np.array(self.spec.params()),
        })


def load_staged_map(spec: StagedSpec, data: bytes) -> StagedMap:
    """The map of ``spec`` from the bytes of an npz file; checks that the file is for it."""
    import numpy as np

    with np.load(io.BytesIO(data), allow_pickle=False) as a:
        check_map_version(a, _MAP_VERSION)
        params = tuple(float(v) for v in a["params"])
        same = (str(a["kind"]) == spec.kind
                and tuple(str(f) for f in a["fluids"]) == spec.fluids()
                and len(params) == len(spec.params())
                and all(x == y or (math.isnan(x) and math.isnan(y))
                        for x, y in zip(params, spec.params(), strict=True)))
        if not same:
            raise RefrigerantError(f"cycle map file is not for {spec.label} {spec.params()}: "
                                   "rebuild with tools/build_cycle_maps.py")
        tables = map_tables(a)
    return StagedMap(spec, *tables)


def build_staged_map(spec: StagedSpec, step_K: float = STAGED_MAP_STEP_K,
                     fine: int = STAGED_MAP_FINE) -> StagedMap:
    """Compute a staged cycle's map over its envelope with HEOS (seconds to a minute;
    an optimised cascade searches its cascade temperature at every node)."""
    te_lo, _, tc_lo, _ = bounds = spec.envelope()
    nodes = grid_nodes(bounds, step_K)
    if nodes is None:
        raise RefrigerantError(f"{spec.label}: step {step_K} K does not divide the envelope")
    n_e, n_c = nodes
    d = step_K / fine
    evap: dict[str, list[float]] = {"p": [], "rho": []}
    cond: dict[str, list[float]] = {"p": []}
    grid: dict[str, list[float]] = {k: [math.nan] * (n_e * n_c) for k in GRID_KEYS}
    slack = 2.0 * step_K + 1e-9  # cells touching the envelope need these nodes
    try:
        for k in range((n_e - 1) * fine + 1):
            p, rho = low_suction(spec, te_lo + k * d)
            evap["p"].append(p)
            evap["rho"].append(rho)
        for k in range((n_c - 1) * fine + 1):
            cond["p"].append(high_condensing_pressure(spec, tc_lo + k * d))
        for i in range(n_e):
            te = te_lo + i * step_K
            for j in range(n_c):
                tc = tc_lo + j * step_K
                if not spec.node_ok(te, tc, slack):
                    continue
                st = spec.solve(te, tc)
                values = (st.q_evap_J_kg, st.w_low_J_kg, st.w_high_J_kg, st.t_discharge_low_C,
                          st.t_discharge_high_C, st.mass_ratio, st.t_mid_C, st.p_low_out_Pa,
                          st.p_high_in_Pa)
                for key, v in zip(GRID_KEYS, values, strict=True):
                    grid[key][i * n_c + j] = v
    except RefrigerantError:
        raise
    except ValueError as exc:
        raise RefrigerantError(f"{spec.label}: CoolProp failed building the map: {exc}") from exc
    return StagedMap(spec, step_K, fine, evap, cond, grid)


def low_suction(spec: StagedSpec, t_evap_C: float) -> tuple[float, float]:
    """(p_evap Pa, low-stage suction density kg/m3) at an evaporating temperature (degC)."""
    from twin.refrigerant import _suction

    fluid = spec.fluids()[0]
    superheat = spec.params()[0]
    p, _h, _s, rho = _suction(CycleSpec(fluid, superheat), t_evap_C)
    return p, rho


def high_condensing_pressure(spec: StagedSpec, t_cond_C: float) -> float:
    """Condenser pressure (Pa) of the high stage at a condensing (bubble) temperature."""
    from twin.refrigerant import _liquid

    return _liquid(CycleSpec(spec.fluids()[-1]), t_cond_C)[0]


_MAPS: dict[StagedSpec, StagedMap] = {}


def staged_map(spec: StagedSpec) -> StagedMap:
    """The map of a staged spec, cached in memory: the shipped file in ``twin/data/`` if
    there is one for the spec, otherwise built with HEOS (seconds; needs CoolProp)."""
    cached = _MAPS.get(spec)
    if cached is not None:
        return cached
    shipped = resources.files("twin.data").joinpath(spec.map_name())
    if spec.is_default() and shipped.is_file():
        cmap = load_staged_map(spec, shipped.read_bytes())
    else:
        cmap = build_staged_map(spec)
    _MAPS[spec] = cmap
    return cmap
