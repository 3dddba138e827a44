"""Write small AREPO-layout HDF5 snapshots for tests.

``write_arepo_snapshot`` puts a rotating ring of gas cells (and a sparse warm background) in
a box, in code units of kpc, 1e10 solMass and km/s, the way AREPO with SGChem writes them:
``Header`` attrs and ``PartType0`` datasets ``Coordinates``, ``Velocities``, ``Density``,
``InternalEnergy``, ``ChemicalAbundances`` (H2, H+, CO per H nucleus) and ``DustTemperature``.
The returned dict holds the physical truth (pc, km/s, solMass/pc3, K) for the assertions.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

KPC_CM = 3.0856775814913673e21
MSUN_G = 1.988409870698051e33
UNIT_LENGTH = KPC_CM                     # code length = 1 kpc
UNIT_MASS = 1e10 * MSUN_G                # code mass = 1e10 solMass
UNIT_VELOCITY = 1e5                      # code velocity = 1 km/s
CODE_DENSITY_IN_MSUN_PC3 = 1e10 / 1e9    # 1e10 solMass / kpc^3 = 10 solMass / pc^3
BOLTZMANN = 1.380649e-23                 # J / K
PROTON_MASS = 1.67262192369e-27          # kg


def internal_energy(temperature, x_h2, x_hplus, x_he=0.1, gamma=5.0 / 3.0):
    """Specific internal energy (km/s)^2 of gas at ``temperature`` K with these abundances."""
    mu = (1 + 4 * x_he) / (1 + x_he - x_h2 + x_hplus)
    return BOLTZMANN * temperature / ((gamma - 1) * mu * PROTON_MASS) / 1e6  # (m/s)^2 -> (km/s)^2


def write_arepo_snapshot(path, n_ring=3000, n_background=3000, radius=100.0, speed=150.0,
                         ring_density=50.0, box_kpc=1.0, clockwise=False, seed=0,
                         omit_datasets=(), omit_header=()):
    """Write a snapshot with a ring of gas of ``radius`` pc rotating at ``speed`` km/s.

    The ring lies in the box's mid-plane around the box centre, rotating counter-clockwise
    in the box's x-y plane (clockwise if ``clockwise``); its density is
    ``ring_density * (1 + 0.5 cos(phi))`` solMass/pc3 (phi from the box's +x axis), it is
    fully molecular at 60 K, and a marker of 400 solMass/pc3 spans |phi| < 0.06 rad.
    The background (|z| < 60 pc, > 15 pc from the ring) is atomic, 1000 K, 0.1 solMass/pc3,
    at rest.  Datasets or header attrs
    named in ``omit_*`` are left out.  Returns the physical truth as a dict of arrays.
    """
    rng = np.random.default_rng(seed)
    half = box_kpc * 500.0  # pc
    phi = np.linspace(0.0, 2 * np.pi, n_ring, endpoint=False)
    ring_r = radius + rng.uniform(-3.0, 3.0, n_ring)
    ring_z = rng.uniform(-3.0, 3.0, n_ring)
    ring_pos = np.column_stack([ring_r * np.cos(phi), ring_r * np.sin(phi), ring_z])
    sense = -1.0 if clockwise else 1.0
    ring_vel = sense * speed * np.column_stack([-np.sin(phi), np.cos(phi), np.zeros(n_ring)])
    ring_rho = ring_density * (1 + 0.5 * np.cos(phi))
    ring_rho[np.abs(np.angle(np.exp(1j * phi))) < 0.06] = 400.0  # marker around (x, y) = (radius, 0)
    back_pos = rng.uniform(-0.9 * half, 0.9 * half, (n_background, 3)) * np.array([1.0, 1.0, 60.0 / (0.9 * half)])
    keep = np.abs(np.hypot(back_pos[:, 0], back_pos[:, 1]) - radius) > 15.0
    back_pos = back_pos[keep]
    n_back = len(back_pos)

    position = np.concatenate([ring_pos, back_pos])
    velocity = np.concatenate([ring_vel, np.zeros((n_back, 3))])
    density = np.concatenate([ring_rho, np.full(n_back, 0.1)])
    temperature = np.concatenate([np.full(n_ring, 60.0), np.full(n_back, 1000.0)])
    x_h2 = np.concatenate([np.full(n_ring, 0.5), np.full(n_back, 0.0)])
    x_hplus = np.concatenate([np.zeros(n_ring), np.full(n_back, 0.01)])
    x_co = np.concatenate([np.full(n_ring, 5e-5), np.zeros(n_back)])
    dust = np.concatenate([np.full(n_ring, 20.0), np.full(n_back, 30.0)])

    datasets = {
        "Coordinates": (position / 1000.0 + 0.5 * box_kpc).astype(np.float64),
        "Velocities": (velocity * 1e5 / UNIT_VELOCITY).astype(np.float32),
        "Density": (density / CODE_DENSITY_IN_MSUN_PC3).astype(np.float32),
        "InternalEnergy": internal_energy(temperature, x_h2, x_hplus).astype(np.float32),
        "ChemicalAbundances": np.column_stack([x_h2, x_hplus, x_co]).astype(np.float32),
        "DustTemperature": dust.astype(np.float32),
    }
    header = {"BoxSize": box_kpc, "UnitLength_in_cm": UNIT_LENGTH, "UnitMass_in_g": UNIT_MASS,
              "UnitVelocity_in_cm_per_s": UNIT_VELOCITY, "NumPart_ThisFile": [len(position), 0, 0, 0, 0, 0],
              "HubbleParam": 1.0, "Time": 0.0}
    path = Path(path)
    with h5py.File(path, "w") as snap:
        head = snap.create_group("Header")
        for key, value in header.items():
            if key not in omit_header:
                head.attrs[key] = value
        gas = snap.create_group("PartType0")
        for key, value in datasets.items():
            if key not in omit_datasets:
                gas.create_dataset(key, data=value)
    return {"position": position, "velocity": velocity, "density": density, "temperature": temperature,
            "x_h2": x_h2, "x_co": x_co, "dust": dust, "n_ring": n_ring}
