"""Two-stage compression with an intermediate-pressure flash-tank economiser (one fluid).

Configuration (states as numbered here; Stoecker and Jones, Refrigeration and Air
Conditioning, 2nd ed., ch. 16; ASHRAE Handbook Refrigeration, ch. 2, "flash tank"):

1. evaporator outlet = low-stage suction, ``superheat_K`` above the evaporating (dew)
   temperature at p_evap;
2. low-stage compressor discharge at p_int, h2 = h1 + (h2s - h1) / eta_low;
3. high-stage suction at p_int: the low-stage discharge gas mixed with the saturated
   vapour drawn off the flash tank, h3 = (1 - x6) h2 + x6 h_g(p_int) per kg of high-stage
   flow (the flash-tank vapour is not bubbled through the liquid);
4. high-stage compressor discharge at p_cond, h4 = h3 + (h4s - h3) / eta_high;
5. condenser outlet, ``subcooling_K`` below the condensing (bubble) temperature;
6. after the high-pressure valve: h6 = h5 at p_int, vapour fraction x6 into the flash tank;
7. saturated liquid leaving the flash tank, h7 = h_f(p_int);
8. after the low-pressure valve, h8 = h7, into the evaporator.

Per kg of low-stage flow the high stage carries 1 / (1 - x6) kg (``mass_ratio``),
q_evap = h1 - h7, w_low = h2 - h1, w_high = (h4 - h3) / (1 - x6), q_cond = q_evap + w.
p_int is the geometric mean sqrt(p_evap * p_cond) (the usual rule for equal pressure
ratios) unless a fixed intermediate saturation temperature ``t_int_C`` is given.
Pure fluids only (the flash tank works on one saturation line).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from twin.errors import RefrigerantError
from twin.refrigerant import (
    ALL_REFRIGERANTS,
    MIN_LIFT_K,
    T0_K,
    CycleSpec,
    _compress,
    _liquid,
    _state,
    _suction,
    envelope,
    map_filename,
)
from twin.refrigerant_staged import (
    HT_COND_MIN_C,
    HT_MIN_LIFT_K,
    StagedState,
    default_t_evap_range,
    make_staged,
    staged_cond_max,
    staged_outside,
)


@dataclass(frozen=True)
class TwoStageSpec:
    """Two-stage flash-tank cycle: fluid, superheat and subcooling (K), isentropic
    efficiency of each stage (-), fixed intermediate saturation temperature (degC) or None
    for p_int = sqrt(p_evap * p_cond)."""

    fluid: str
    superheat_K: float = 5.0
    subcooling_K: float = 0.0
    eta_low: float = 0.7
    eta_high: float = 0.7
    t_int_C: float | None = None

    def __post_init__(self) -> None:
        CycleSpec(self.fluid, self.superheat_K, self.subcooling_K, self.eta_low)  # checks
        CycleSpec(self.fluid, self.superheat_K, self.subcooling_K, self.eta_high)
        if ALL_REFRIGERANTS[self.fluid].mixture:
            raise RefrigerantError(f"two-stage {self.fluid}: the flash-tank cycle takes a "
                                   "pure fluid, not a mixture")
        if envelope(CycleSpec(self.fluid))[3] < HT_COND_MIN_C + HT_MIN_LIFT_K:
            raise RefrigerantError(f"two-stage {self.fluid}: critical temperature too low "
                                   "for a staged cycle")
        if self.t_int_C is not None and not (
                math.isfinite(self.t_int_C)
                and self.envelope()[0] + MIN_LIFT_K <= self.t_int_C
                <= self.envelope()[3] - MIN_LIFT_K):
            raise RefrigerantError(f"two-stage {self.fluid}: intermediate temperature "
                                   f"{self.t_int_C} degC outside the envelope")

    @property
    def kind(self) -> str:
        """``two_stage``."""
        return "two_stage"

    @property
    def label(self) -> str:
        """Short name for messages."""
        return f"two-stage {self.fluid}"

    def fluids(self) -> tuple[str, ...]:
        """The one fluid of both stages."""
        return (self.fluid,)

    def params(self) -> tuple[float, ...]:
        """(superheat, subcooling, eta_low, eta_high, t_int or NaN)."""
        t_int = math.nan if self.t_int_C is None else self.t_int_C
        return (self.superheat_K, self.subcooling_K, self.eta_low, self.eta_high, t_int)

    def envelope(self) -> tuple[float, float, float, float]:
        """(t_evap_min, t_evap_max, t_cond_min, t_cond_max), degC: the single-stage
        evaporating range, condensing from HT_COND_MIN_C to the fluid's single-stage
        limit (rounded to the map grid); t_cond - t_evap >= HT_MIN_LIFT_K."""
        te_lo, te_hi = default_t_evap_range()
        return (te_lo, te_hi, HT_COND_MIN_C, staged_cond_max(self.fluid))

    def outside(self, t_evap_C: float, t_cond_C: float) -> str | None:
        """Why (t_evap, t_cond) is outside the envelope, None inside."""
        why = staged_outside(self, t_evap_C, t_cond_C, self.fluid,
                             ALL_REFRIGERANTS[self.fluid].t_crit_C)
        if why is None and self.t_int_C is not None and not (
                t_evap_C + MIN_LIFT_K <= self.t_int_C <= t_cond_C - MIN_LIFT_K):
            why = (f"the fixed intermediate temperature {self.t_int_C:g} degC needs "
                   f"evaporating <= {self.t_int_C - MIN_LIFT_K:g} degC and condensing >= "
                   f"{self.t_int_C + MIN_LIFT_K:g} degC")
        return why

    def fixed_limits(self) -> tuple[float, float] | None:
        """(highest evaporating, lowest condensing) degC a fixed t_int allows, or None."""
        if self.t_int_C is None:
            return None
        return self.t_int_C - MIN_LIFT_K, self.t_int_C + MIN_LIFT_K

    def node_ok(self, t_evap_C: float, t_cond_C: float, slack_K: float) -> bool:
        """True if a map node can be computed (envelope widened by slack_K)."""
        if t_cond_C - t_evap_C < HT_MIN_LIFT_K - slack_K:
            return False
        if self.t_int_C is not None:
            return t_evap_C + 0.5 <= self.t_int_C <= t_cond_C - 0.5
        return True

    def solve(self, t_evap_C: float, t_cond_C: float) -> StagedState:
        """The cycle with HEOS (no envelope check)."""
        return _solve(self, t_evap_C, t_cond_C)

    def is_default(self) -> bool:
        """True for the default parameters (a shipped map)."""
        return self == TwoStageSpec(self.fluid)

    def map_name(self) -> str:
        """File name of the shipped map."""
        return map_filename(self.fluid).replace("cycle_", "cycle2s_")


def _solve(spec: TwoStageSpec, t_evap_C: float, t_cond_C: float) -> StagedState:
    low = CycleSpec(spec.fluid, spec.superheat_K, spec.subcooling_K, spec.eta_low)
    high = CycleSpec(spec.fluid, spec.superheat_K, spec.subcooling_K, spec.eta_high)
    p_evap, h1, s1, rho1 = _suction(low, t_evap_C)
    p_cond, h5 = _liquid(low, t_cond_C)
    a = _state(spec.fluid)
    from twin.refrigerant import CP  # set by _state

    if spec.t_int_C is None:
        p_int = math.sqrt(p_evap * p_cond)
        a.update(CP.PQ_INPUTS, p_int, 0.0)
    else:
        a.update(CP.QT_INPUTS, 0.0, spec.t_int_C + T0_K)
        p_int = a.p()
    t_int = a.T() - T0_K
    h_f = a.hmass()
    a.update(CP.PQ_INPUTS, p_int, 1.0)
    h_g = a.hmass()
    w_low, t2 = _compress(low, p_int, h1, s1, t_evap_C + spec.superheat_K, t_int)
    x6 = (h5 - h_f) / (h_g - h_f)
    if not 0.0 <= x6 < 1.0:
        raise RefrigerantError(f"{spec.label}: flash-tank vapour fraction {x6:.3g} at "
                               f"{t_int:.1f} degC is not in 0..1")
    h3 = (1.0 - x6) * (h1 + w_low) + x6 * h_g
    a.update(CP.HmassP_INPUTS, h3, p_int)
    s3 = a.smass()
    w_high_hs, t4 = _compress(high, p_cond, h3, s3, t2, t_cond_C)
    ratio = 1.0 / (1.0 - x6)
    return make_staged(t_evap_C, t_cond_C, t_int, p_evap, p_cond, p_int, p_int, h1 - h_f,
                       w_low, w_high_hs * ratio, ratio, rho1, t2, t4)
