"""Water-to-water heat pumps with a refrigerant cycle, capacity control and safety trips.

The evaporator cools facility return water, the condenser heats district water from the
bottom of the storage tank. Every ``cycle_period`` the single-stage cycle is evaluated
(from a precomputed CoolProp map) at evaporating = evaporator leaving water - approach and
condensing = condenser leaving water + approach. Refrigerant mass flow comes from the
displacement, the speed, the suction density and a clearance-volume volumetric
efficiency. The compressor is hermetic: all electrical power ends in the refrigerant, so
Q_cond = Q_evap + W exactly.

Safety (after Modelica Buildings' HeatPumps safety blocks): high condensing pressure, low
evaporating pressure, anti-freeze, minimum water flow (each a latched trip with a counter,
cleared by a reset once the cause is gone), minimum on and off times and a maximum number
of starts per hour.

``cycle: two_stage`` (flash-tank economiser, `twin.refrigerant_two_stage`) and ``cascade``
(`twin.refrigerant_cascade`) evaluate a staged cycle map instead. The low-stage
compressor's displacement, speed and suction density set the refrigerant flow (the high
stage is sized to carry ``mass_ratio`` times it; its volumetric efficiency uses the
low-stage pressure ratio). Staged machines add per-stage trips: low-stage high pressure
(intermediate or cascade temperature above ``low_stage_max_condensing``) and the
discharge temperature of each stage above ``max_discharge``; any trip stops both stages,
as one safety chain does.
"""

from __future__ import annotations

from collections import deque

from twin.controls import Ramp
from twin.errors import RefrigerantError
from twin.points import Command
from twin.refrigerant import CycleMap, CycleSpec, CycleState, cycle_map
from twin.refrigerant_cascade import CascadeSpec
from twin.refrigerant_staged import HT_MIN_LIFT_K, StagedMap, StagedState, staged_map
from twin.refrigerant_two_stage import TwoStageSpec
from twin.site import HeatPump as HeatPumpSpec
from twin.thermal import mixed_node
from twin.water import CP_WATER

POLYTROPIC_EXPONENT = 1.1  # for the re-expansion of the clearance volume
TRIPS = ("high_pressure", "low_pressure", "antifreeze", "min_flow", "compressor")
STAGE_TRIPS = ("low_stage_high_pressure", "low_stage_discharge", "high_stage_discharge")
SINGLE_MIN_LIFT_K = 5.0  # single-stage condensing clamped to >= evaporating + this, K


def staged_spec(spec: HeatPumpSpec) -> TwoStageSpec | CascadeSpec:
    """The two-stage or cascade cycle spec of a staged heat pump (RefrigerantError if the
    parameters cannot be used)."""
    if spec.cycle == "two_stage":
        return TwoStageSpec(spec.refrigerant, eta_low=spec.eta_low, eta_high=spec.eta_high,
                            t_int_C=spec.intermediate_temperature)
    if spec.cycle == "cascade":
        return CascadeSpec(spec.low_stage_refrigerant, spec.refrigerant,
                           approach_K=spec.cascade_approach,
                           t_cascade_C=spec.cascade_temperature, eta_low=spec.eta_low,
                           eta_high=spec.eta_high)
    raise ValueError(f"cycle {spec.cycle!r} is not staged")


class HeatPumpUnit:
    """One heat pump: state, commands, cycle and safety."""

    def __init__(self, name: str, spec: HeatPumpSpec, t_evap_water: float,
                 t_cond_water: float) -> None:
        self.name = name
        self.spec = spec
        self.staged = spec.cycle != "single"
        self.map: CycleMap | StagedMap
        if self.staged:
            self.cycle_spec: CycleSpec | TwoStageSpec | CascadeSpec = staged_spec(spec)
            self.map = staged_map(staged_spec(spec))
            self.min_lift = HT_MIN_LIFT_K
        else:
            self.cycle_spec = CycleSpec(spec.refrigerant)
            self.map = cycle_map(self.cycle_spec)
            self.min_lift = SINGLE_MIN_LIFT_K
        self.envelope = env = self.map.envelope
        self.t_cond_limit = min(spec.max_condensing, env[3])
        self.t_evap_floor = max(spec.min_evaporating, env[0])
        self.enable = Command(0.0, 0.0)
        self.speed_cmd = Command(spec.min_speed_fraction, spec.min_speed_fraction)
        self.setpoint = Command(spec.supply_setpoint, spec.supply_setpoint)
        self.reset = Command(0.0, 0.0, hand=True)  # a pulse: writing 1 resets at once
        self.speed = Ramp(0.0, spec.speed_ramp)
        self.running = False
        self.last_change = -1e12  # s, last start or stop
        self.starts: deque[float] = deque()
        self.trip_kinds = TRIPS + STAGE_TRIPS if self.staged else TRIPS
        self.trips = dict.fromkeys(self.trip_kinds, False)
        self.trip_count = 0
        self.lockout = False  # start refused: too many starts in the last hour
        self.evap_temp = t_evap_water  # evaporator water node, degC
        self.cond_temp = t_cond_water  # condenser water node, degC
        self.evap_out = t_evap_water
        self.cond_out = t_cond_water
        self.evap_in = t_evap_water
        self.cond_in = t_cond_water
        self.evap_flow = 0.0  # kg/s
        self.cond_flow = spec.min_flow  # kg/s
        self.state: CycleState | StagedState | None = None
        self.q_evap = 0.0  # W
        self.q_cond = 0.0  # W
        self.power = 0.0  # W
        self.capacity_factor = 1.0  # refrigerant undercharge fault (fraction of flow)
        self.forced_trip = False  # compressor trip fault
        self.events: list[tuple[str, str]] = []

    # -- commands and safety --------------------------------------------------------
    @property
    def tripped(self) -> bool:
        """True while any latched trip is active."""
        return any(self.trips.values())

    def _trip(self, kind: str, why: str) -> None:
        if not self.trips[kind]:
            self.trips[kind] = True
            self.trip_count += 1
            self.events.append(("trip", f"{kind}: {why}"))

    def supervise(self, t: float) -> None:
        """Check the safety limits, apply start/stop with anti-short-cycle rules."""
        s = self.spec
        if self.reset.value >= 0.5:
            self.reset.hand_value = self.reset.auto = 0.0  # a pulse
            cleared = [k for k, v in self.trips.items() if v]
            self.trips = dict.fromkeys(self.trip_kinds, False)
            self.forced_trip = False
            if cleared:
                self.events.append(("reset", "cleared " + ", ".join(cleared)))
        if self.running:
            st = self.state
            if st is not None and st.t_cond_C > self.t_cond_limit:
                self._trip("high_pressure", f"condensing {st.t_cond_C:.1f} degC > "
                           f"{self.t_cond_limit:.1f} degC")
            if st is not None and st.t_evap_C < self.t_evap_floor:
                self._trip("low_pressure", f"evaporating {st.t_evap_C:.1f} degC < "
                           f"{self.t_evap_floor:.1f} degC")
            if self.evap_out < s.antifreeze:
                self._trip("antifreeze", f"evaporator leaving water {self.evap_out:.1f} degC")
            if min(self.evap_flow, self.cond_flow) < s.min_flow:
                self._trip("min_flow", f"water flow {min(self.evap_flow, self.cond_flow):.2f}"
                           f" kg/s < {s.min_flow:.2f} kg/s")
            if self.forced_trip:
                self._trip("compressor", "compressor protection (motor overload)")
        while self.starts and t - self.starts[0] > 3600.0:
            self.starts.popleft()
        self.lockout = len(self.starts) >= s.max_starts_per_hour
        want = self.enable.value >= 0.5 and not self.tripped
        if self.running and self.tripped:
            self._stop(t, "tripped")
        elif self.running and not want and t - self.last_change >= s.min_on_time:
            self._stop(t, "disabled")
        elif (not self.running and want and not self.lockout
              and t - self.last_change >= s.min_off_time
              and self.evap_flow >= s.min_flow):
            self.running = True
            self.last_change = t
            self.starts.append(t)
            self.events.append(("start", f"start {len(self.starts)} in the last hour"))

    def _stop(self, t: float, why: str) -> None:
        self.running = False
        self.last_change = t
        self.speed.position = 0.0
        self.events.append(("stop", why))

    # -- physics ---------------------------------------------------------------------
    def evaluate_cycle(self) -> None:
        """Evaluate the refrigerant cycle at the present water temperatures."""
        s = self.spec
        speed = self.speed.position
        if not self.running or speed <= 0.0:
            self.state = None
            self.q_evap = self.q_cond = self.power = 0.0
            return
        t_evap = self.evap_temp - s.evaporator_approach
        t_cond = self.cond_temp + s.condenser_approach
        lo_e, hi_e, lo_c, hi_c = self.envelope
        t_evap_c = min(max(t_evap, lo_e), hi_e)
        t_cond_c = min(max(t_cond, lo_c, t_evap_c + self.min_lift), hi_c)
        st: CycleState | StagedState
        try:
            st = self.map.evaluate(t_evap_c, t_cond_c)
        except RefrigerantError:  # outside the map after clamping: stay safe, no output
            self.state = None
            self.q_evap = self.q_cond = self.power = 0.0
            return
        self.state = st
        if isinstance(st, StagedState):
            ratio = st.pressure_ratio_low
            self._stage_trips(st)
        else:
            ratio = st.p_cond_Pa / st.p_evap_Pa
        eta_vol = max(0.0, 1.0 - s.clearance_ratio * (ratio ** (1 / POLYTROPIC_EXPONENT) - 1))
        m_ref = (s.displacement * s.max_speed * speed * eta_vol * st.rho_suction_kg_m3
                 * self.capacity_factor)
        self.q_evap = m_ref * st.q_evap_J_kg
        self.power = m_ref * st.w_J_kg
        self.q_cond = self.q_evap + self.power
        if t_cond > hi_c or t_cond > self.t_cond_limit:
            self._trip("high_pressure", f"condensing {t_cond:.1f} degC > "
                       f"{self.t_cond_limit:.1f} degC")
        if t_evap < self.t_evap_floor:
            self._trip("low_pressure", f"evaporating {t_evap:.1f} degC < "
                       f"{self.t_evap_floor:.1f} degC")

    def _stage_trips(self, st: StagedState) -> None:
        """Per-stage trips of a staged machine; any of them stops both stages."""
        s = self.spec
        both = " (both stages stopped)"
        if st.t_mid_C > s.low_stage_max_condensing:
            self._trip("low_stage_high_pressure", f"low stage condensing {st.t_mid_C:.1f} "
                       f"degC > {s.low_stage_max_condensing:.1f} degC" + both)
        if st.t_discharge_low_C > s.max_discharge:
            self._trip("low_stage_discharge", f"low-stage discharge {st.t_discharge_low_C:.1f}"
                       f" degC > {s.max_discharge:.1f} degC" + both)
        if st.t_discharge_high_C > s.max_discharge:
            self._trip("high_stage_discharge", f"high-stage discharge "
                       f"{st.t_discharge_high_C:.1f} degC > {s.max_discharge:.1f} degC" + both)

    def condenser_flow_control(self) -> None:
        """Condenser pump: flow for the leaving-water setpoint, within its limits (kg/s)."""
        s = self.spec
        lift = self.setpoint.value - self.cond_in
        if self.q_cond <= 0.0:
            self.cond_flow = s.min_flow
        elif lift <= 1.0:
            self.cond_flow = s.condenser_flow_max
        else:
            self.cond_flow = min(s.condenser_flow_max,
                                 max(s.min_flow, self.q_cond / (CP_WATER * lift)))

    def step_water(self, dt: float) -> None:
        """Advance both water nodes by dt with the present duties."""
        c = self.spec.water_mass * CP_WATER
        self.evap_temp, self.evap_out = mixed_node(
            self.evap_temp, c, self.evap_flow * CP_WATER, self.evap_in, 0.0, 0.0,
            -self.q_evap, dt)
        self.cond_temp, self.cond_out = mixed_node(
            self.cond_temp, c, self.cond_flow * CP_WATER, self.cond_in, 0.0, 0.0,
            self.q_cond, dt)

    @property
    def cop(self) -> float:
        """Instant heating COP (-), 0 when off."""
        return self.q_cond / self.power if self.power > 0 else 0.0

    @property
    def carnot_cop(self) -> float:
        """Carnot heating COP at the refrigerant temperatures (-), 0 when off."""
        return self.state.carnot_cop if self.state is not None and self.power > 0 else 0.0

    def stored_energy(self) -> float:
        """Heat in both water nodes relative to 0 degC (J)."""
        return self.spec.water_mass * CP_WATER * (self.evap_temp + self.cond_temp)
