"""Refrigerant cycle: DOMAIN.md figures, envelope, HEOS vs precomputed maps."""

from __future__ import annotations

import math
import random
import time
from importlib import resources

import CoolProp.CoolProp as CP
import pytest

from twin.errors import RefrigerantError
from twin.refrigerant import (
    MIN_LIFT_K,
    REFRIGERANTS,
    CycleMap,
    CycleSpec,
    CycleState,
    build_map,
    cycle_heos,
    cycle_map,
    envelope,
    load_map,
    map_filename,
)

FLUIDS = list(REFRIGERANTS)
PURE = [f for f in FLUIDS if not REFRIGERANTS[f].mixture]
TOL = 0.005  # map vs HEOS, relative

# DOMAIN.md, "Heat pumps": water 35 -> 70 and 30 -> 85 degC with 5 K approaches
DOMAIN_COP = [
    ("R717", 30.0, 75.0, 4.75),
    ("R1234ze(E)", 30.0, 75.0, 4.26),
    ("R134a", 30.0, 75.0, 4.21),
    ("R32", 30.0, 75.0, 3.59),
    ("R717", 25.0, 90.0, 3.29),
    ("R1234ze(E)", 25.0, 90.0, 2.66),
    ("R134a", 25.0, 90.0, 2.60),
]


def random_points(spec: CycleSpec, n: int, seed: int) -> list[tuple[float, float]]:
    """n seeded random (t_evap, t_cond) points inside the envelope (degC)."""
    rng = random.Random(seed)
    te_lo, te_hi, tc_lo, tc_hi = envelope(spec)
    out: list[tuple[float, float]] = []
    while len(out) < n:
        te, tc = rng.uniform(te_lo, te_hi), rng.uniform(tc_lo, tc_hi)
        if tc - te >= MIN_LIFT_K:
            out.append((te, tc))
    return out


def assert_consistent(st: CycleState) -> None:
    """Energy closure, COP definitions, second law."""
    assert st.q_cond_J_kg == st.q_evap_J_kg + st.w_J_kg
    assert st.cop == st.q_cond_J_kg / st.w_J_kg
    assert st.carnot_cop == pytest.approx(
        (st.t_cond_C + 273.15) / (st.t_cond_C - st.t_evap_C), rel=1e-12)
    assert st.w_J_kg > 0 and st.q_evap_J_kg > 0
    assert 1.0 < st.cop < st.carnot_cop
    assert st.p_cond_Pa > st.p_evap_Pa > 0
    assert st.t_discharge_C > st.t_cond_C
    assert st.rho_suction_kg_m3 > 0


# ---------------------------------------------------------------- fluids and figures


def test_refrigerant_table() -> None:
    assert set(FLUIDS) == {"R1234ze(E)", "R32", "R410A", "R454B", "R717", "R134a"}
    gwp = {f: r.gwp for f, r in REFRIGERANTS.items()}
    assert gwp["R410A"] == 2088 and gwp["R32"] == 675 and gwp["R454B"] == 466
    assert gwp["R1234ze(E)"] <= 1
    assert REFRIGERANTS["R454B"].mass_fractions == (0.689, 0.311)


@pytest.mark.parametrize("fluid", FLUIDS)
def test_critical_temperatures_match_coolprop(fluid: str) -> None:
    ref = REFRIGERANTS[fluid]
    a = CP.AbstractState("HEOS", ref.coolprop)
    if ref.mass_fractions:
        a.set_mass_fractions(list(ref.mass_fractions))
        t_crit = max(c.T for c in a.all_critical_points() if c.stable)
    else:
        t_crit = a.T_critical()
    assert ref.t_crit_C == pytest.approx(t_crit - 273.15, abs=0.01)
    assert envelope(CycleSpec(fluid))[3] == min(math.floor(ref.t_crit_C - 3.0), 130.0)


def test_r454b_matches_coolprop_predefined_mixture() -> None:
    a = CP.AbstractState("HEOS", "R454B.mix")
    a.update(CP.QT_INPUTS, 1, 10 + 273.15)
    assert cycle_heos(CycleSpec("R454B"), 10.0, 40.0).p_evap_Pa == pytest.approx(a.p(), rel=1e-7)
    a.update(CP.QT_INPUTS, 0, 40 + 273.15)  # condensing = bubble point
    assert cycle_heos(CycleSpec("R454B"), 10.0, 40.0).p_cond_Pa == pytest.approx(a.p(), rel=1e-7)


@pytest.mark.parametrize(("fluid", "t_evap", "t_cond", "cop"), DOMAIN_COP)
def test_domain_figures(fluid: str, t_evap: float, t_cond: float, cop: float) -> None:
    spec = CycleSpec(fluid)
    heos = cycle_heos(spec, t_evap, t_cond)
    assert heos.cop == pytest.approx(cop, abs=0.05)
    assert round(heos.cop, 2) == pytest.approx(cop, abs=1e-9)  # the default subcooling 0 K
    assert cycle_map(spec).evaluate(t_evap, t_cond).cop == pytest.approx(cop, abs=0.05)


@pytest.mark.parametrize("fluid", FLUIDS)
def test_35_to_70_water_in_the_article_band(fluid: str) -> None:
    """COP 3-5 (article) at 30/75 degC refrigerant for every fluid that can condense there."""
    spec = CycleSpec(fluid)
    if envelope(spec)[3] < 75.0:  # R410A: critical 71.3 degC
        with pytest.raises(RefrigerantError, match="critical temperature"):
            cycle_heos(spec, 30.0, 75.0)
        return
    for st in (cycle_heos(spec, 30.0, 75.0), cycle_map(spec).evaluate(30.0, 75.0)):
        assert 3.0 <= st.cop <= 5.0
        assert st.cop < st.carnot_cop == pytest.approx(7.7367, abs=1e-4)


# ------------------------------------------------------------------------ envelope


def test_r32_cannot_condense_at_90() -> None:
    spec = CycleSpec("R32")
    assert envelope(spec) == (-20.0, 50.0, 20.0, 75.0)
    for evaluate in (lambda: cycle_heos(spec, 30.0, 90.0),
                     lambda: cycle_map(spec).evaluate(30.0, 90.0)):
        with pytest.raises(RefrigerantError, match=r"R32.*critical temperature 78\.1 degC"):
            evaluate()


@pytest.mark.parametrize(("t_evap", "t_cond", "why"), [
    (-25.0, 40.0, "evaporating below"),
    (51.0, 70.0, "evaporating above"),
    (0.0, 15.0, "condensing below"),
    (0.0, 140.0, "condensing above"),
    (30.0, 32.0, "lift"),
    (40.0, 30.0, "lift"),
    (math.nan, 60.0, "finite"),
    (20.0, math.inf, "finite"),
])
@pytest.mark.parametrize("fluid", ["R134a", "R454B"])
def test_out_of_envelope_raises(fluid: str, t_evap: float, t_cond: float, why: str) -> None:
    spec = CycleSpec(fluid)
    with pytest.raises(RefrigerantError, match=why):
        cycle_heos(spec, t_evap, t_cond)
    with pytest.raises(RefrigerantError, match=f"{fluid}.*{why}.*envelope"):
        cycle_map(spec).evaluate(t_evap, t_cond)


def test_envelope_edges_are_usable() -> None:
    """Corners and the minimum lift evaluate (heat pumps clamp to them)."""
    for fluid in FLUIDS:
        spec = CycleSpec(fluid)
        te_lo, te_hi, tc_lo, tc_hi = envelope(spec)
        cmap = cycle_map(spec)
        for te, tc in ((te_lo, tc_lo), (te_lo, tc_hi), (te_hi, tc_hi), (te_hi, te_hi + 3.0),
                       (17.0, 20.0), (30.25, 30.25 + MIN_LIFT_K), (22.3, 22.3 + 5.0)):
            assert_consistent(cmap.evaluate(te, tc))


def test_bad_specs_raise() -> None:
    with pytest.raises(RefrigerantError, match="unknown refrigerant"):
        CycleSpec("R22")
    with pytest.raises(RefrigerantError, match="superheat"):
        CycleSpec("R32", superheat_K=-1.0)
    with pytest.raises(RefrigerantError, match="efficiency"):
        CycleSpec("R32", eta_isentropic=1.2)


# ---------------------------------------------------------------------- maps vs HEOS


@pytest.mark.parametrize("fluid", FLUIDS)
def test_every_grid_node_below_carnot(fluid: str) -> None:
    cmap = cycle_map(CycleSpec(fluid))
    n = 0
    for te in cmap.t_evap_nodes():
        for tc in cmap.t_cond_nodes():
            if tc - te >= MIN_LIFT_K:
                assert_consistent(cmap.evaluate(te, tc))
                n += 1
    assert n > 2000


@pytest.mark.parametrize("fluid", FLUIDS)
def test_map_matches_heos_over_the_envelope(fluid: str) -> None:
    spec = CycleSpec(fluid)
    cmap = cycle_map(spec)
    n = 150 if REFRIGERANTS[fluid].mixture else 400
    for te, tc in random_points(spec, n, seed=FLUIDS.index(fluid)):
        ref = cycle_heos(spec, te, tc)
        got = cmap.evaluate(te, tc)
        assert_consistent(ref)
        assert_consistent(got)
        for name in ("cop", "q_evap_J_kg", "rho_suction_kg_m3", "w_J_kg", "p_evap_Pa",
                     "p_cond_Pa"):
            assert getattr(got, name) == pytest.approx(getattr(ref, name), rel=TOL), name
        assert got.t_discharge_C == pytest.approx(ref.t_discharge_C, abs=0.1)


@pytest.mark.parametrize("fluid", FLUIDS)
def test_shipped_maps_are_current(fluid: str) -> None:
    """Grid nodes of the shipped map equal HEOS now (stale data or a CoolProp change)."""
    spec = CycleSpec(fluid)
    cmap = cycle_map(spec)
    rng = random.Random(7)
    nodes = [(te, tc) for te in cmap.t_evap_nodes() for tc in cmap.t_cond_nodes()
             if tc - te >= MIN_LIFT_K]
    for te, tc in rng.sample(nodes, 20):
        ref, got = cycle_heos(spec, te, tc), cmap.evaluate(te, tc)
        for name in ("p_evap_Pa", "p_cond_Pa", "q_evap_J_kg", "w_J_kg", "rho_suction_kg_m3",
                     "t_discharge_C", "cop"):
            assert getattr(got, name) == pytest.approx(getattr(ref, name), rel=1e-6), name


def test_r454b_gas_states_match_coolprop_flash() -> None:
    """The Newton (p, T) solution for the compressor end state equals CoolProp's own
    (p, s) and (p, h) flashes (60-500 ms each for the mixture)."""
    spec = CycleSpec("R454B")
    st = cycle_heos(spec, 10.0, 60.0)
    a = CP.AbstractState("HEOS", "R32&R1234yf")
    a.set_mass_fractions([0.689, 0.311])
    a.update(CP.QT_INPUTS, 1, 10 + 273.15)
    a.update(CP.PT_INPUTS, a.p(), 15 + 273.15)
    h1, s1 = a.hmass(), a.smass()
    a.update(CP.PSmass_INPUTS, st.p_cond_Pa, s1)
    w = (a.hmass() - h1) / 0.7
    assert st.w_J_kg == pytest.approx(w, rel=1e-7)
    a.specify_phase(CP.iphase_gas)
    a.update(CP.HmassP_INPUTS, h1 + w, st.p_cond_Pa)
    assert st.t_discharge_C == pytest.approx(a.T() - 273.15, abs=1e-4)


def test_r454b_bubble_line_is_smooth() -> None:
    """CoolProp's plain mixture (T, Q) solver fails near 57 degC; the guesses bridge it."""
    spec = CycleSpec("R454B")
    p = [cycle_heos(spec, 20.0, tc).p_cond_Pa for tc in (55.0, 56.0, 57.0, 58.0, 59.0)]
    second = [p[k - 1] - 2 * p[k] + p[k + 1] for k in range(1, 4)]
    assert min(second) > 0 and max(second) < 1.1 * min(second)


# ---------------------------------------------------------------- loading and caching


def test_shipped_maps_load_fast_and_small() -> None:
    total_bytes = 0
    start = time.perf_counter()
    for fluid in FLUIDS:
        data = resources.files("twin.data").joinpath(map_filename(fluid)).read_bytes()
        total_bytes += len(data)
        cmap = load_map(data)
        assert isinstance(cmap, CycleMap) and cmap.spec == CycleSpec(fluid)
    assert time.perf_counter() - start < 1.0
    assert total_bytes < 3_000_000


def test_cycle_map_is_cached() -> None:
    assert cycle_map(CycleSpec("R717")) is cycle_map(CycleSpec("R717"))


@pytest.mark.parametrize("spec", [
    CycleSpec("R134a", superheat_K=8.0, subcooling_K=3.0, eta_isentropic=0.75),
    CycleSpec("R454B", subcooling_K=2.0),
])
def test_non_default_specs_are_built(spec: CycleSpec) -> None:
    cmap = cycle_map(spec)
    assert cmap.spec == spec and cycle_map(spec) is cmap
    default = cycle_map(CycleSpec(spec.fluid)).evaluate(10.0, 60.0)
    got = cmap.evaluate(10.0, 60.0)
    assert got.cop > default.cop  # subcooling helps
    for te, tc in random_points(spec, 30, seed=3):
        ref = cycle_heos(spec, te, tc)
        assert cmap.evaluate(te, tc).cop == pytest.approx(ref.cop, rel=TOL)


def test_build_map_rejects_a_step_that_does_not_divide_the_envelope() -> None:
    with pytest.raises(RefrigerantError, match="step"):
        build_map(CycleSpec("R32"), step_K=0.7)
