"""Properties of water used by the loops (constant, SI)."""

CP_WATER = 4180.0  # J/(kg K), liquid water at 30-70 degC within 0.5 %
RHO_WATER = 990.0  # kg/m3, liquid water at about 45 degC
CP_AIR = 1006.0  # J/(kg K), dry air
P_ATM = 101_325.0  # Pa
G = 9.81  # m/s2
