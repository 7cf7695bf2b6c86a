"""Single-stage vapour-compression cycle with CoolProp, and precomputed cycle maps.

Cycle (states 1-4): 1 evaporator outlet = compressor suction, ``superheat_K`` above the
evaporating temperature at the evaporator pressure; 2 compressor discharge at the
condenser pressure, h2 = h1 + (h2s - h1) / eta_isentropic; 3 condenser outlet,
``subcooling_K`` below the condensing temperature at the condenser pressure; 4 after the
expansion valve, h4 = h3. Pressure drops in the heat exchangers and pipes are ignored.

Conventions (temperatures in degC, pressures Pa, specific enthalpy J/kg):

- evaporating temperature = dew point at the evaporator pressure (where the vapour leaves
  the evaporator); superheat is counted from it;
- condensing temperature = bubble point at the condenser pressure (where the liquid
  leaves the condenser); subcooling is counted from it. For pure fluids and the
  azeotrope-like R410A (a pseudo-pure fluid in CoolProp) dew and bubble points
  coincide; for the zeotropic R454B (glide about 1-1.5 K) the dew point at the condenser
  pressure is that much above the condensing temperature. This follows where each
  heat exchanger's refrigerant leaves it (superheat after the dew point, subcooling
  after the bubble point); compressor rating data usually quote dew points at both.
- the default ``subcooling_K = 0`` (saturated liquid leaving the condenser) reproduces
  the DOMAIN.md figures (R717 4.75, R1234ze(E) 4.26, R134a 4.21, R32 3.59 at 30/75 degC).

``cycle_heos`` evaluates CoolProp (HEOS backend, one cached ``AbstractState`` per fluid,
60-260 us a cycle); ``CycleMap.evaluate`` interpolates a precomputed grid in pure Python
(about 2 us a call, within 0.1 % of HEOS). CoolProp is imported on first HEOS use only (its
import takes about 2 s): running on the shipped maps does not need it.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from twin.errors import RefrigerantError

T0_K = 273.15  # K at 0 degC
MIN_LIFT_K = 3.0  # smallest allowed t_cond - t_evap, K (heat pumps clamp the lift to >= 5 K)
CRITICAL_MARGIN_K = 3.0  # condensing stays this far below the critical temperature, K
T_COND_CAP_C = 130.0  # highest condensing temperature of any fluid, degC
T_COND_MIN_C = 20.0  # lowest condensing temperature, degC
T_EVAP_MIN_C = -20.0  # lowest evaporating temperature, degC
T_EVAP_MAX_C = 50.0  # highest evaporating temperature, degC
MAP_STEP_K = 1.0  # 2-D grid step of the shipped maps, K
MAP_FINE = 10  # 1-D (saturation) tables are MAP_FINE times finer
_MAP_VERSION = 1


@dataclass(frozen=True)
class Refrigerant:
    """A supported refrigerant: CoolProp HEOS fluid string and GWP (100 years, -)."""

    name: str
    coolprop: str
    t_crit_C: float  # critical temperature in CoolProp 8.0.0 (degC), checked by the tests
    mass_fractions: tuple[float, ...] | None = None  # for mixtures, in fluid order
    gwp: float | None = None  # None where DOMAIN.md gives no figure
    safety_class: str = ""  # ASHRAE 34 / ISO 817: A1, A2L, A3, B1, B2L

    @property
    def mixture(self) -> bool:
        """True for a CoolProp mixture (slow flash calculations)."""
        return self.mass_fractions is not None


REFRIGERANTS: dict[str, Refrigerant] = {
    "R1234ze(E)": Refrigerant("R1234ze(E)", "R1234ze(E)", 109.363, gwp=1.0,  # "< 1"
                              safety_class="A2L"),
    "R32": Refrigerant("R32", "R32", 78.105, gwp=675.0, safety_class="A2L"),
    "R410A": Refrigerant("R410A", "R410A", 71.344, gwp=2088.0,  # pseudo-pure in CoolProp
                         safety_class="A1"),
    # R32/R1234yf 68.9/31.1 % by mass, as CoolProp's "R454B.mix" (same results; the
    # explicit HEOS mixture is created 20x faster); t_crit = stable mixture critical point
    "R454B": Refrigerant("R454B", "R32&R1234yf", 78.280, (0.689, 0.311), gwp=466.0,
                         safety_class="A2L"),
    "R717": Refrigerant("R717", "R717", 132.410, safety_class="B2L"),
    "R134a": Refrigerant("R134a", "R134a", 101.062, safety_class="A1"),
}

# High-temperature fluids (condensing up to T_COND_CAP_C): GWP 100-year from IPCC AR5
# (WG1 ch. 8, table 8.A.1), safety classes from ASHRAE 34, as DOMAIN.md quotes them.
# R1336mzz(Z) and R601 are dry fluids (saturated-vapour entropy rising with temperature):
# with little superheat their compression ends on or inside the vapour dome, and the
# discharge temperature is then the saturation temperature at the condenser pressure.
HT_REFRIGERANTS: dict[str, Refrigerant] = {
    "R1233zd(E)": Refrigerant("R1233zd(E)", "R1233zd(E)", 165.710, gwp=1.0,
                              safety_class="A1"),
    "R1336mzz(Z)": Refrigerant("R1336mzz(Z)", "R1336mzz(Z)", 171.350, gwp=2.0,
                               safety_class="A1"),
    "R245fa": Refrigerant("R245fa", "R245fa", 153.860, gwp=858.0, safety_class="B1"),
    "R600": Refrigerant("R600", "n-Butane", 151.975, gwp=4.0, safety_class="A3"),
    "R601": Refrigerant("R601", "n-Pentane", 196.550, gwp=5.0, safety_class="A3"),
}

# Every supported fluid: the single-stage set above and the high-temperature fluids
ALL_REFRIGERANTS: dict[str, Refrigerant] = {**REFRIGERANTS, **HT_REFRIGERANTS}


@dataclass(frozen=True)
class CycleSpec:
    """Cycle parameters: fluid (a key of ALL_REFRIGERANTS), superheat and subcooling (K),
    compressor isentropic efficiency (-)."""

    fluid: str
    superheat_K: float = 5.0
    subcooling_K: float = 0.0
    eta_isentropic: float = 0.7

    def __post_init__(self) -> None:
        if self.fluid not in ALL_REFRIGERANTS:
            raise RefrigerantError(
                f"unknown refrigerant {self.fluid!r}; supported: {', '.join(ALL_REFRIGERANTS)}")
        if not 0.0 <= self.superheat_K <= 30.0:
            raise RefrigerantError(f"{self.fluid}: superheat {self.superheat_K} K not in 0..30 K")
        if not 0.0 <= self.subcooling_K <= 20.0:
            raise RefrigerantError(
                f"{self.fluid}: subcooling {self.subcooling_K} K not in 0..20 K")
        if not 0.3 <= self.eta_isentropic <= 1.0:
            raise RefrigerantError(
                f"{self.fluid}: isentropic efficiency {self.eta_isentropic} not in 0.3..1")


@dataclass(frozen=True, slots=True)
class CycleState:
    """One evaluated cycle, per kg of refrigerant. COPs are heating COPs (-)."""

    t_evap_C: float  # evaporating (dew) temperature, degC
    t_cond_C: float  # condensing (bubble) temperature, degC
    p_evap_Pa: float
    p_cond_Pa: float
    q_evap_J_kg: float  # h1 - h4
    w_J_kg: float  # h2 - h1, compressor work (electrical = shaft, hermetic)
    q_cond_J_kg: float  # q_evap + w
    rho_suction_kg_m3: float  # density at compressor suction (state 1)
    t_discharge_C: float  # compressor discharge temperature (state 2), degC
    cop: float  # q_cond / w
    carnot_cop: float  # T_cond / (T_cond - T_evap), kelvin, refrigerant temperatures


# ----------------------------------------------------------------------------- envelope


def critical_temperature_C(fluid: str) -> float:
    """Critical temperature of a supported fluid (degC); for R454B the stable critical
    point of the mixture."""
    return ALL_REFRIGERANTS[fluid].t_crit_C


@cache
def _envelope(fluid: str) -> tuple[float, float, float, float]:
    t_cond_max = min(math.floor(critical_temperature_C(fluid) - CRITICAL_MARGIN_K), T_COND_CAP_C)
    return (T_EVAP_MIN_C, T_EVAP_MAX_C, T_COND_MIN_C, float(t_cond_max))


def envelope(spec: CycleSpec) -> tuple[float, float, float, float]:
    """Operating envelope (t_evap_min, t_evap_max, t_cond_min, t_cond_max) in degC.

    Condensing stays ``CRITICAL_MARGIN_K`` below the critical temperature (rounded down to
    a whole degree, capped at 130 degC); t_cond - t_evap must also be >= ``MIN_LIFT_K``.
    """
    return _envelope(spec.fluid)


def _envelope_error(fluid: str, t_evap_C: float, t_cond_C: float) -> RefrigerantError | None:
    """The RefrigerantError for inputs outside the envelope, None when inside."""
    te_lo, te_hi, tc_lo, tc_hi = _envelope(fluid)
    where = (f"{fluid}: evaporating {t_evap_C} degC, condensing {t_cond_C} degC: ")
    allowed = (f"; envelope: evaporating {te_lo:g}..{te_hi:g} degC, condensing "
               f"{tc_lo:g}..{tc_hi:g} degC, t_cond - t_evap >= {MIN_LIFT_K:g} K")
    if not (math.isfinite(t_evap_C) and math.isfinite(t_cond_C)):
        why = "temperatures must be finite numbers"
    elif t_cond_C > tc_hi:
        why = (f"condensing above {tc_hi:g} degC (critical temperature "
               f"{critical_temperature_C(fluid):.1f} degC less a {CRITICAL_MARGIN_K:g} K "
               f"margin, at most {T_COND_CAP_C:g} degC)")
    elif t_cond_C < tc_lo:
        why = f"condensing below {tc_lo:g} degC"
    elif t_evap_C < te_lo:
        why = f"evaporating below {te_lo:g} degC"
    elif t_evap_C > te_hi:
        why = f"evaporating above {te_hi:g} degC"
    elif t_cond_C - t_evap_C < MIN_LIFT_K:
        why = f"lift {t_cond_C - t_evap_C:.3g} K below the minimum {MIN_LIFT_K:g} K"
    else:
        return None
    return RefrigerantError(where + why + allowed)


# ------------------------------------------------------------------------- HEOS cycle

CP: Any = None  # CoolProp.CoolProp, imported by _state()


@cache
def _state(fluid: str) -> Any:
    """The shared HEOS ``AbstractState`` of a fluid (single-threaded use)."""
    global CP
    if CP is None:
        import CoolProp.CoolProp

        CP = CoolProp.CoolProp
    ref = ALL_REFRIGERANTS[fluid]
    a = CP.AbstractState("HEOS", ref.coolprop)
    if ref.mass_fractions is not None:
        a.set_mass_fractions(list(ref.mass_fractions))
    return a


_SAT_STEP_K = 0.5  # spacing of the mixture saturation guesses, K


def _guesses(a: Any) -> Any:
    """CoolProp guesses (p, densities, phase compositions) from a saturated state."""
    g = CP.PyGuessesStructure()
    g.T = a.T()
    g.p = a.p()
    g.rhomolar_liq = a.saturated_liquid_keyed_output(CP.iDmolar)
    g.rhomolar_vap = a.saturated_vapor_keyed_output(CP.iDmolar)
    g.x = list(a.mole_fractions_liquid())
    g.y = list(a.mole_fractions_vapor())
    return g


@cache
def _saturation_guesses(fluid: str, quality: float) -> tuple[float, list[Any]]:
    """(first degC, guesses every _SAT_STEP_K) for a mixture's dew (1) or bubble (0) line.

    CoolProp's mixture (T, Q) solver fails in patches without guesses (R454B bubble line
    at 56.3-58.7 degC and 62-68 degC, dew line above 73 degC); marching along the line in
    0.5 K steps with the previous solution as the guess does not, and is 2-3x faster.
    Built once per line, about 15 ms.
    """
    a = _state(fluid)
    lo: float
    hi: float
    if quality == 0.0:
        lo, hi = T_COND_MIN_C - 5.0, math.floor(critical_temperature_C(fluid) - 1.0)
    else:
        lo, hi = T_EVAP_MIN_C - 5.0, T_EVAP_MAX_C + 5.0
    table: list[Any] = []
    g = None
    for k in range(round((hi - lo) / _SAT_STEP_K) + 1):
        t_K = lo + k * _SAT_STEP_K + T0_K
        try:
            if g is not None:
                try:
                    a.update_with_guesses(CP.QT_INPUTS, quality, t_K, g)
                except ValueError:
                    a.update(CP.QT_INPUTS, quality, t_K)
            else:
                a.update(CP.QT_INPUTS, quality, t_K)
        except ValueError:
            break
        g = _guesses(a)
        table.append(g)
    return lo, table


def _saturate(a: Any, fluid: str, quality: float, t_C: float) -> None:
    """Update ``a`` to the saturated state (quality 0 bubble, 1 dew) at t_C (degC)."""
    if ALL_REFRIGERANTS[fluid].mixture:
        lo, table = _saturation_guesses(fluid, quality)
        k = round((t_C - lo) / _SAT_STEP_K)
        if 0 <= k < len(table):
            try:
                a.update_with_guesses(CP.QT_INPUTS, quality, t_C + T0_K, table[k])
                return
            except ValueError:
                pass
    a.update(CP.QT_INPUTS, quality, t_C + T0_K)


def _suction(spec: CycleSpec, t_evap_C: float) -> tuple[float, float, float, float]:
    """State 1: (p_evap Pa, h1 J/kg, s1 J/kg/K, rho1 kg/m3)."""
    a = _state(spec.fluid)
    _saturate(a, spec.fluid, 1.0, t_evap_C)
    p = a.p()
    if spec.superheat_K > 0.0:
        if ALL_REFRIGERANTS[spec.fluid].mixture:
            a.specify_phase(CP.iphase_gas)  # skip the (slow) mixture phase-envelope flash
        try:
            a.update(CP.PT_INPUTS, p, t_evap_C + spec.superheat_K + T0_K)
        finally:
            a.unspecify_phase()
    return p, a.hmass(), a.smass(), a.rhomass()


def _liquid(spec: CycleSpec, t_cond_C: float) -> tuple[float, float]:
    """State 3: (p_cond Pa, h3 J/kg)."""
    a = _state(spec.fluid)
    _saturate(a, spec.fluid, 0.0, t_cond_C)
    p = a.p()
    if spec.subcooling_K > 0.0:
        if ALL_REFRIGERANTS[spec.fluid].mixture:
            a.specify_phase(CP.iphase_liquid)
        try:
            a.update(CP.PT_INPUTS, p, t_cond_C - spec.subcooling_K + T0_K)
        finally:
            a.unspecify_phase()
    return p, a.hmass()


def _gas_newton(a: Any, p: float, target: float, entropy: bool, t_K: float) -> float:
    """Temperature (K) of the gas at p (Pa) with the given s (J/kg/K) or h (J/kg).

    Newton on T with (p, T) updates and the gas phase imposed: ds/dT = cp/T, dh/dT = cp.
    A mixture (p, s) or (p, h) flash costs 50-500 ms in CoolProp; this costs about 0.1 ms.
    """
    a.specify_phase(CP.iphase_gas)
    try:
        for _ in range(40):
            a.update(CP.PT_INPUTS, p, t_K)
            if entropy:
                step = (a.smass() - target) * t_K / a.cpmass()
            else:
                step = (a.hmass() - target) / a.cpmass()
            t_K -= step
            if abs(step) < 1e-7:
                a.update(CP.PT_INPUTS, p, t_K)
                return t_K
    finally:
        a.unspecify_phase()
    raise RefrigerantError(f"gas state at {p:.0f} Pa, s or h {target:.6g}: no convergence")


def _compress(spec: CycleSpec, p_cond: float, h1: float, s1: float,
              t_suction_C: float, t_cond_C: float) -> tuple[float, float]:
    """Compressor: (w = h2 - h1 J/kg, discharge temperature degC) from state 1 to p_cond."""
    a = _state(spec.fluid)
    if ALL_REFRIGERANTS[spec.fluid].mixture:
        guess = max(t_suction_C, t_cond_C) + 0.3 * (t_cond_C - t_suction_C) + 10.0 + T0_K
        t2s = _gas_newton(a, p_cond, s1, True, guess)
        w = (a.hmass() - h1) / spec.eta_isentropic
        t2 = _gas_newton(a, p_cond, h1 + w, False, t2s)
        return w, t2 - T0_K
    a.update(CP.PSmass_INPUTS, p_cond, s1)
    w = (a.hmass() - h1) / spec.eta_isentropic
    a.update(CP.HmassP_INPUTS, h1 + w, p_cond)
    return w, a.T() - T0_K


def _make_state(t_evap_C: float, t_cond_C: float, p_evap: float, p_cond: float, q_evap: float,
                w: float, rho1: float, t2_C: float) -> CycleState:
    q_cond = q_evap + w
    return CycleState(t_evap_C, t_cond_C, p_evap, p_cond, q_evap, w, q_cond, rho1, t2_C,
                      q_cond / w, (t_cond_C + T0_K) / (t_cond_C - t_evap_C))


def cycle_heos(spec: CycleSpec, t_evap_C: float, t_cond_C: float) -> CycleState:
    """Evaluate the cycle with CoolProp HEOS at evaporating/condensing temperatures (degC).

    Raises RefrigerantError outside ``envelope(spec)`` or when CoolProp fails.
    """
    err = _envelope_error(spec.fluid, t_evap_C, t_cond_C)
    if err is not None:
        raise err
    return solve_cycle(spec, t_evap_C, t_cond_C)


def solve_cycle(spec: CycleSpec, t_evap_C: float, t_cond_C: float) -> CycleState:
    """``cycle_heos`` without the envelope check, for the circuits of staged cycles (a
    cascade's high stage evaporates above ``T_EVAP_MAX_C``). Needs t_cond_C > t_evap_C and
    t_cond_C below the critical temperature; raises RefrigerantError when CoolProp fails."""
    try:
        p_evap, h1, s1, rho1 = _suction(spec, t_evap_C)
        p_cond, h3 = _liquid(spec, t_cond_C)
        w, t2 = _compress(spec, p_cond, h1, s1, t_evap_C + spec.superheat_K, t_cond_C)
    except RefrigerantError:
        raise
    except ValueError as exc:  # CoolProp's errors are ValueErrors
        raise RefrigerantError(f"{spec.fluid}: CoolProp failed at evaporating {t_evap_C} "
                               f"degC, condensing {t_cond_C} degC: {exc}") from exc
    return _make_state(t_evap_C, t_cond_C, p_evap, p_cond, h1 - h3, w, rho1, t2)


# ------------------------------------------------------------------------------ maps


def grid_nodes(bounds: tuple[float, float, float, float],
               step_K: float) -> tuple[int, int] | None:
    """Node counts (n_evap, n_cond) of a grid every ``step_K`` (K) over ``bounds``
    (t_evap_min, t_evap_max, t_cond_min, t_cond_max in degC); None when ``step_K`` does
    not divide both ranges."""
    te_lo, te_hi, tc_lo, tc_hi = bounds
    n_e = round((te_hi - te_lo) / step_K) + 1
    n_c = round((tc_hi - tc_lo) / step_K) + 1
    if not (math.isclose(te_lo + (n_e - 1) * step_K, te_hi)
            and math.isclose(tc_lo + (n_c - 1) * step_K, tc_hi)):
        return None
    return n_e, n_c


def check_map_version(arrays: Any, version: int) -> None:
    """Raise RefrigerantError unless the map arrays (an npz) are of format ``version``."""
    if int(arrays["version"]) != version:
        raise RefrigerantError(f"cycle map format {int(arrays['version'])}, expected "
                               f"{version}: rebuild with tools/build_cycle_maps.py")


def map_tables(arrays: Any) -> tuple[float, int, dict[str, list[float]],
                                     dict[str, list[float]], dict[str, list[float]]]:
    """(step K, fine, evap, cond, grid) of map arrays written by ``GridMap.with_tables``."""
    step, fine = (float(v) for v in arrays["step"])
    keys = list(arrays.keys())
    evap = {k[5:]: arrays[k].tolist() for k in keys if k.startswith("evap_")}
    cond = {k[5:]: arrays[k].tolist() for k in keys if k.startswith("cond_")}
    grid = {k[5:]: arrays[k].ravel().tolist() for k in keys if k.startswith("grid_")}
    return step, int(fine), evap, cond, grid


class GridMap:
    """The grid of a precomputed cycle map: 1-D tables every ``step_K / fine`` over the
    evaporating and condensing ranges, 2-D tables every ``step_K`` over both.

    ``bounds`` is (t_evap_min, t_evap_max, t_cond_min, t_cond_max) in degC; ``keys_ok``
    says whether the tables carry the keys the map needs. Raises RefrigerantError, naming
    ``label``, when the tables do not match the bounds and the step.
    """

    def __init__(self, label: str, bounds: tuple[float, float, float, float], step_K: float,
                 fine: int, evap: dict[str, list[float]], cond: dict[str, list[float]],
                 grid: dict[str, list[float]], keys_ok: bool = True) -> None:
        self.step_K = step_K
        self.fine = fine
        self.evap = evap  # every step_K / fine from t_evap_min
        self.cond = cond  # every step_K / fine from t_cond_min
        self.grid = grid  # flattened [i_evap * n_cond + j_cond]
        self.envelope = bounds
        nodes = grid_nodes(bounds, step_K)
        self.n_evap, self.n_cond = nodes or (0, 0)  # (0, 0): raised just below
        ok = (keys_ok and nodes is not None
              and all(len(v) == (self.n_evap - 1) * fine + 1 for v in evap.values())
              and all(len(v) == (self.n_cond - 1) * fine + 1 for v in cond.values())
              and all(len(v) == self.n_evap * self.n_cond for v in grid.values()))
        if not ok:
            raise RefrigerantError(f"{label}: cycle map does not match the envelope "
                                   f"{self.envelope} with step {step_K} K; rebuild it "
                                   "(tools/build_cycle_maps.py)")
        self._inv = 1.0 / step_K
        self._inv_fine = fine / step_K
        self._last_e = self.n_evap - 2  # last cell index
        self._last_c = self.n_cond - 2
        self._last_fe = (self.n_evap - 1) * fine - 1
        self._last_fc = (self.n_cond - 1) * fine - 1

    def with_tables(self, out: dict[str, Any]) -> dict[str, Any]:
        """``out`` (the header arrays) with the step and the tables added, for
        ``numpy.savez_compressed`` (read back by `map_tables`)."""
        import numpy as np

        out["step"] = np.array([self.step_K, self.fine])
        out.update({f"evap_{k}": np.array(v) for k, v in self.evap.items()})
        out.update({f"cond_{k}": np.array(v) for k, v in self.cond.items()})
        out.update({f"grid_{k}": np.array(v).reshape(self.n_evap, self.n_cond)
                    for k, v in self.grid.items()})
        return out

    def t_evap_nodes(self) -> list[float]:
        """Evaporating temperatures of the 2-D grid (degC)."""
        return [self.envelope[0] + i * self.step_K for i in range(self.n_evap)]

    def t_cond_nodes(self) -> list[float]:
        """Condensing temperatures of the 2-D grid (degC)."""
        return [self.envelope[2] + j * self.step_K for j in range(self.n_cond)]


class CycleMap(GridMap):
    """A cycle precomputed on a regular (t_evap, t_cond) grid, interpolated in pure Python.

    State 1 quantities (p_evap, h1, rho_suction) depend on t_evap only and state 3 ones
    (p_cond, h3) on t_cond only: they are 1-D tables every ``step_K / fine``, interpolated
    linearly; only the compressor work and the discharge temperature are 2-D tables every
    ``step_K`` (bilinear). q_evap = h1 - h3, q_cond = q_evap + w and cop = q_cond / w are
    formed from the interpolated values, so the energy balance closes exactly. 2-D nodes
    that no cell inside the envelope uses (too close to the diagonal) are NaN.
    """

    def __init__(self, spec: CycleSpec, step_K: float, fine: int,
                 evap: dict[str, list[float]], cond: dict[str, list[float]],
                 grid: dict[str, list[float]]) -> None:
        # evap: p Pa, h J/kg, rho kg/m3; cond: p Pa, h J/kg; grid: w J/kg, t2 degC
        super().__init__(spec.fluid, envelope(spec), step_K, fine, evap, cond, grid)
        self.spec = spec
        self._tables = (evap["p"], evap["h"], evap["rho"], cond["p"], cond["h"],
                        grid["w"], grid["t2"])

    def evaluate(self, t_evap_C: float, t_cond_C: float) -> CycleState:
        """Interpolated cycle at evaporating/condensing temperatures (degC).

        Raises RefrigerantError outside the envelope (same rules as ``cycle_heos``).
        """
        te_lo, te_hi, tc_lo, tc_hi = self.envelope
        if not (te_lo <= t_evap_C <= te_hi and tc_lo <= t_cond_C <= tc_hi
                and t_cond_C - t_evap_C >= MIN_LIFT_K):
            raise _envelope_error(self.spec.fluid, t_evap_C, t_cond_C) or RefrigerantError(
                f"{self.spec.fluid}: no cycle map at {t_evap_C}, {t_cond_C} degC")
        pe, h1, rho, pc, h3, w, t2 = self._tables
        # 1-D tables
        inv = self._inv_fine
        x = (t_evap_C - te_lo) * inv
        i = int(x)
        if i > self._last_fe:
            i = self._last_fe
        f = x - i
        p_evap = pe[i] + (pe[i + 1] - pe[i]) * f
        h_1 = h1[i] + (h1[i + 1] - h1[i]) * f
        rho_1 = rho[i] + (rho[i + 1] - rho[i]) * f
        x = (t_cond_C - tc_lo) * inv
        i = int(x)
        if i > self._last_fc:
            i = self._last_fc
        f = x - i
        p_cond = pc[i] + (pc[i + 1] - pc[i]) * f
        q_evap = h_1 - (h3[i] + (h3[i + 1] - h3[i]) * f)
        # 2-D tables
        inv = self._inv
        x = (t_evap_C - te_lo) * inv
        i = int(x)
        if i > self._last_e:
            i = self._last_e
        fx = x - i
        x = (t_cond_C - tc_lo) * inv
        j = int(x)
        if j > self._last_c:
            j = self._last_c
        fy = x - j
        n = self.n_cond
        k = i * n + j
        m = k + n
        lo = w[k] + (w[k + 1] - w[k]) * fy
        w_ = lo + (w[m] + (w[m + 1] - w[m]) * fy - lo) * fx
        lo = t2[k] + (t2[k + 1] - t2[k]) * fy
        t_2 = lo + (t2[m] + (t2[m + 1] - t2[m]) * fy - lo) * fx
        if not w_ > 0.0:  # a NaN node: cannot happen inside the envelope
            raise RefrigerantError(f"{self.spec.fluid}: cycle map has no value at "
                                   f"{t_evap_C}, {t_cond_C} degC")
        q_cond = q_evap + w_
        return CycleState(t_evap_C, t_cond_C, p_evap, p_cond, q_evap, w_, q_cond, rho_1, t_2,
                          q_cond / w_, (t_cond_C + T0_K) / (t_cond_C - t_evap_C))

    # -- storage -----------------------------------------------------------------------
    def to_arrays(self) -> dict[str, Any]:
        """Numpy arrays for ``numpy.savez_compressed`` (see ``from_arrays``)."""
        import CoolProp
        import numpy as np

        s = self.spec
        return self.with_tables({
            "version": np.array(_MAP_VERSION),
            "fluid": np.array(s.fluid),
            "coolprop_version": np.array(CoolProp.__version__),
            "spec": np.array([s.superheat_K, s.subcooling_K, s.eta_isentropic]),
        })

    @classmethod
    def from_arrays(cls, arrays: Any) -> CycleMap:
        """A map from ``to_arrays`` output (or a loaded npz); checks version and grid."""
        check_map_version(arrays, _MAP_VERSION)
        sh, sc, eta = (float(v) for v in arrays["spec"])
        spec = CycleSpec(str(arrays["fluid"]), sh, sc, eta)
        return cls(spec, *map_tables(arrays))


def map_filename(fluid: str) -> str:
    """File name of a fluid's shipped default map in ``twin/data/``."""
    return "cycle_" + "".join(c for c in fluid if c.isalnum()) + ".npz"


def build_map(spec: CycleSpec, step_K: float = MAP_STEP_K, fine: int = MAP_FINE) -> CycleMap:
    """Compute a cycle map over ``envelope(spec)`` with HEOS.

    2-D nodes every step_K (K), 1-D saturation tables every step_K / fine. Takes 0.2-1.2 s
    (R454B included). Raises RefrigerantError if step_K does not divide the envelope.
    """
    te_lo, _, tc_lo, _ = bounds = envelope(spec)
    nodes = grid_nodes(bounds, step_K)
    if nodes is None:
        raise RefrigerantError(f"{spec.fluid}: step {step_K} K does not divide the envelope")
    n_e, n_c = nodes
    d = step_K / fine
    evap: dict[str, list[float]] = {"p": [], "h": [], "rho": []}
    cond: dict[str, list[float]] = {"p": [], "h": []}
    s1: list[float] = []
    nan = math.nan
    grid: dict[str, list[float]] = {"w": [nan] * (n_e * n_c), "t2": [nan] * (n_e * n_c)}
    lowest_lift = MIN_LIFT_K - 2.0 * step_K - 1e-9  # cells touching the envelope need these
    try:
        for k in range((n_e - 1) * fine + 1):
            p, h, s, rho = _suction(spec, te_lo + k * d)
            evap["p"].append(p)
            evap["h"].append(h)
            evap["rho"].append(rho)
            s1.append(s)
        for k in range((n_c - 1) * fine + 1):
            p, h = _liquid(spec, tc_lo + k * d)
            cond["p"].append(p)
            cond["h"].append(h)
        for i in range(n_e):
            te = te_lo + i * step_K
            for j in range(n_c):
                tc = tc_lo + j * step_K
                if tc - te < lowest_lift or tc - te <= 0.0:
                    continue
                w, t2 = _compress(spec, cond["p"][j * fine], evap["h"][i * fine],
                                  s1[i * fine], te + spec.superheat_K, tc)
                grid["w"][i * n_c + j] = w
                grid["t2"][i * n_c + j] = t2
    except RefrigerantError:
        raise
    except ValueError as exc:  # CoolProp's errors are ValueErrors
        raise RefrigerantError(f"{spec.fluid}: CoolProp failed building the map: {exc}") from exc
    return CycleMap(spec, step_K, fine, evap, cond, grid)


def load_map(data: bytes) -> CycleMap:
    """A map from the bytes of an npz file written by tools/build_cycle_maps.py."""
    import numpy as np

    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
        return CycleMap.from_arrays(arrays)


_MAPS: dict[CycleSpec, CycleMap] = {}


def cycle_map(spec: CycleSpec) -> CycleMap:
    """The cycle map of a spec, cached in memory: the shipped file in ``twin/data/`` for a
    fluid's default spec, otherwise built with HEOS (0.2-1.2 s, R454B included)."""
    cached = _MAPS.get(spec)
    if cached is not None:
        return cached
    if spec == CycleSpec(spec.fluid):
        name = map_filename(spec.fluid)
        cmap = load_map(resources.files("twin.data").joinpath(name).read_bytes())
        if cmap.spec != spec:
            raise RefrigerantError(f"shipped map {name} is for {cmap.spec}, not {spec}: "
                                   "rebuild with tools/build_cycle_maps.py")
    else:
        cmap = build_map(spec)
    _MAPS[spec] = cmap
    return cmap
