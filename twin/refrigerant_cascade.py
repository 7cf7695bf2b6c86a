"""Cascade heat pump: two single-stage circuits joined by a cascade heat exchanger.

The low-stage circuit (``low`` fluid) evaporates at the evaporating temperature and
condenses at the cascade temperature t_casc in the cascade heat exchanger; the high-stage
circuit (``high`` fluid) evaporates there at t_casc - ``approach_K`` and condenses at the
condensing temperature. Each circuit is the single-stage cycle of `twin.refrigerant`
(superheat, subcooling, its own isentropic efficiency). The cascade exchanger passes all
low-stage condenser heat to the high stage: per kg of low-stage flow the high stage
carries q_cond,low / q_evap,high kg (``mass_ratio``), and the COP is
q_cond / (w_low + w_high) (Stoecker and Jones, Refrigeration and Air Conditioning, 2nd
ed., ch. 16; Arpagaus et al., Energy 152 (2018) 985-1010 for the fluids and lifts).

The cascade temperature is a parameter, or (None) chosen for the highest COP: a coarse
search every ``COARSE_STEP_K`` across the allowed range, then a golden-section search to
``REFINE_TOL_K`` around the best coarse point, so it varies smoothly with the
evaporating and condensing temperatures (what the maps interpolate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

from twin.errors import RefrigerantError
from twin.refrigerant import (
    ALL_REFRIGERANTS,
    MIN_LIFT_K,
    T_EVAP_MIN_C,
    CycleSpec,
    CycleState,
    envelope,
    map_filename,
    solve_cycle,
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

COARSE_STEP_K = 10.0  # coarse search step of the optimal cascade temperature, K
REFINE_TOL_K = 0.05  # golden-section tolerance, K
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


@dataclass(frozen=True)
class CascadeSpec:
    """Cascade: low- and high-stage fluids, cascade exchanger approach (K), fixed cascade
    temperature (low-stage condensing, degC) or None for the best COP, superheat and
    subcooling of both circuits (K), isentropic efficiency of each compressor (-)."""

    low: str = "R717"
    high: str = "R1233zd(E)"
    approach_K: float = 5.0
    t_cascade_C: float | None = None
    superheat_K: float = 5.0
    subcooling_K: float = 0.0
    eta_low: float = 0.7
    eta_high: float = 0.7

    def __post_init__(self) -> None:
        for fluid, eta in ((self.low, self.eta_low), (self.high, self.eta_high)):
            CycleSpec(fluid, self.superheat_K, self.subcooling_K, eta)  # checks
        if not 0.0 < self.approach_K <= 20.0:
            raise RefrigerantError(f"{self.label}: cascade approach {self.approach_K} K "
                                   "not in 0..20 K")
        if envelope(CycleSpec(self.high))[3] < HT_COND_MIN_C + HT_MIN_LIFT_K:
            raise RefrigerantError(f"{self.label}: high-stage fluid {self.high} cannot "
                                   f"condense at {HT_COND_MIN_C + HT_MIN_LIFT_K:g} degC")
        if self.t_cascade_C is not None and not (
                math.isfinite(self.t_cascade_C)
                and self._t_lowest() <= self.t_cascade_C <= self._t_low_max()):
            raise RefrigerantError(f"{self.label}: cascade temperature {self.t_cascade_C} "
                                   f"degC not in {self._t_lowest():g}.."
                                   f"{self._t_low_max():g} degC")

    def _t_lowest(self) -> float:
        """Lowest cascade temperature: both stages evaporate within the envelope."""
        return max(T_EVAP_MIN_C + MIN_LIFT_K, T_EVAP_MIN_C + self.approach_K)

    def _t_low_max(self) -> float:
        return _cond_max(self.low)

    @property
    def kind(self) -> str:
        """``cascade``."""
        return "cascade"

    @property
    def label(self) -> str:
        """Short name for messages."""
        return f"cascade {self.low}/{self.high}"

    def fluids(self) -> tuple[str, ...]:
        """(low-stage fluid, high-stage fluid)."""
        return (self.low, self.high)

    def params(self) -> tuple[float, ...]:
        """(superheat, subcooling, eta_low, eta_high, approach, t_cascade or NaN)."""
        t_c = math.nan if self.t_cascade_C is None else self.t_cascade_C
        return (self.superheat_K, self.subcooling_K, self.eta_low, self.eta_high,
                self.approach_K, t_c)

    def envelope(self) -> tuple[float, float, float, float]:
        """(t_evap_min, t_evap_max, t_cond_min, t_cond_max), degC: the single-stage
        evaporating range of the low stage, condensing from HT_COND_MIN_C to the
        high-stage fluid's single-stage limit (rounded to the map grid);
        t_cond - t_evap >= HT_MIN_LIFT_K."""
        te_lo, te_hi = default_t_evap_range()
        return (te_lo, te_hi, HT_COND_MIN_C, staged_cond_max(self.high))

    def cascade_range(self, t_evap_C: float, t_cond_C: float) -> tuple[float, float]:
        """Allowed cascade temperatures (degC) at a point: each circuit lifts at least
        MIN_LIFT_K, the low stage condenses within its fluid's limit."""
        lo = max(t_evap_C + MIN_LIFT_K, T_EVAP_MIN_C + self.approach_K)
        hi = min(t_cond_C - MIN_LIFT_K + self.approach_K, self._t_low_max())
        return lo, hi

    def outside(self, t_evap_C: float, t_cond_C: float) -> str | None:
        """Why (t_evap, t_cond) is outside the envelope, None inside."""
        why = staged_outside(self, t_evap_C, t_cond_C, self.high,
                             ALL_REFRIGERANTS[self.high].t_crit_C)
        if why is None and self.t_cascade_C is not None:
            lo, hi = self.cascade_range(t_evap_C, t_cond_C)
            if not lo <= self.t_cascade_C <= hi:
                why = (f"the fixed cascade temperature {self.t_cascade_C:g} degC needs "
                       f"evaporating <= {self.t_cascade_C - MIN_LIFT_K:g} degC and condensing "
                       f">= {self.t_cascade_C - self.approach_K + MIN_LIFT_K:g} degC")
        return why

    def fixed_limits(self) -> tuple[float, float] | None:
        """(highest evaporating, lowest condensing) degC a fixed cascade temperature
        allows, or None."""
        if self.t_cascade_C is None:
            return None
        return (self.t_cascade_C - MIN_LIFT_K,
                self.t_cascade_C - self.approach_K + MIN_LIFT_K)

    def node_ok(self, t_evap_C: float, t_cond_C: float, slack_K: float) -> bool:
        """True if a map node can be computed (envelope widened by slack_K)."""
        if t_cond_C - t_evap_C < HT_MIN_LIFT_K - slack_K:
            return False
        lo, hi = self.cascade_range(t_evap_C, t_cond_C)
        if self.t_cascade_C is not None:
            return (t_evap_C + 0.5 <= self.t_cascade_C
                    <= t_cond_C + self.approach_K - 0.5)
        return lo < hi

    def solve(self, t_evap_C: float, t_cond_C: float) -> StagedState:
        """The cycle with HEOS (no envelope check), at the fixed or the best cascade
        temperature."""
        if self.t_cascade_C is not None:
            return self.at(t_evap_C, t_cond_C, self.t_cascade_C)
        return self.at(t_evap_C, t_cond_C, self.best_cascade_temperature(t_evap_C, t_cond_C))

    def at(self, t_evap_C: float, t_cond_C: float, t_cascade_C: float) -> StagedState:
        """The cycle with HEOS at a given cascade temperature (degC)."""
        low = solve_cycle(CycleSpec(self.low, self.superheat_K, self.subcooling_K,
                                    self.eta_low), t_evap_C, t_cascade_C)
        high = solve_cycle(CycleSpec(self.high, self.superheat_K, self.subcooling_K,
                                     self.eta_high), t_cascade_C - self.approach_K, t_cond_C)
        return _combine(t_evap_C, t_cond_C, t_cascade_C, low, high)

    def best_cascade_temperature(self, t_evap_C: float, t_cond_C: float) -> float:
        """Cascade temperature of the highest COP (degC): coarse search, golden section."""
        lo, hi = self.cascade_range(t_evap_C, t_cond_C)
        if not lo < hi:
            raise RefrigerantError(f"{self.label}: no cascade temperature between "
                                   f"{t_evap_C} and {t_cond_C} degC")

        def cop(t: float) -> float:
            return self.at(t_evap_C, t_cond_C, t).cop

        n = max(2, math.ceil((hi - lo) / COARSE_STEP_K))
        nodes = [lo + (hi - lo) * k / n for k in range(n + 1)]
        best = max(range(n + 1), key=lambda k: cop(nodes[k]))
        a, b = nodes[max(0, best - 1)], nodes[min(n, best + 1)]
        c = b - _GOLDEN * (b - a)
        d = a + _GOLDEN * (b - a)
        fc, fd = cop(c), cop(d)
        while b - a > REFINE_TOL_K:
            if fc > fd:
                b, d, fd = d, c, fc
                c = b - _GOLDEN * (b - a)
                fc = cop(c)
            else:
                a, c, fc = c, d, fd
                d = a + _GOLDEN * (b - a)
                fd = cop(d)
        return 0.5 * (a + b)

    def is_default(self) -> bool:
        """True for default parameters with any fluids, optionally a fixed cascade
        temperature (specs whose map may be shipped)."""
        return self == CascadeSpec(self.low, self.high, t_cascade_C=self.t_cascade_C)

    def map_name(self) -> str:
        """File name of the shipped map (with ``_t<degC>`` for a fixed cascade
        temperature)."""
        low = map_filename(self.low)[len("cycle_"):-len(".npz")]
        high = map_filename(self.high)[len("cycle_"):-len(".npz")]
        fixed = "" if self.t_cascade_C is None else f"_t{self.t_cascade_C:g}"
        return f"cyclecas_{low}_{high}{fixed}.npz"


@cache
def _cond_max(fluid: str) -> float:
    """Highest single-stage condensing temperature of a fluid (degC)."""
    return envelope(CycleSpec(fluid))[3]


def _combine(t_evap_C: float, t_cond_C: float, t_cascade_C: float, low: CycleState,
             high: CycleState) -> StagedState:
    """The cascade per kg of low-stage flow from its two circuits."""
    ratio = low.q_cond_J_kg / high.q_evap_J_kg
    return make_staged(t_evap_C, t_cond_C, t_cascade_C, low.p_evap_Pa, high.p_cond_Pa,
                       low.p_cond_Pa, high.p_evap_Pa, low.q_evap_J_kg, low.w_J_kg,
                       ratio * high.w_J_kg, ratio, low.rho_suction_kg_m3,
                       low.t_discharge_C, high.t_discharge_C)
