"""Instances for the shared-memory reuse tests (importable, so instance processes load them)."""

from __future__ import annotations

import os
import time

import numpy as np

import yr


@yr.instance(invoke_options=yr.InvokeOptions(cpu=100))
class Store:
    """Keeps what it is told to keep and hands out arrays, so a test can see whether a
    segment was written over while someone still viewed it."""

    def __init__(self) -> None:
        self.kept: list[np.ndarray] = []

    def pid(self) -> int:
        return os.getpid()

    def total(self, array: np.ndarray) -> float:
        return float(array.sum())

    def keep(self, array: np.ndarray) -> float:
        self.kept.append(array)
        return float(array.sum())

    def kept_totals(self) -> list[float]:
        return [float(array.sum()) for array in self.kept]

    def filled(self, nbytes: int, value: float) -> np.ndarray:
        return np.full(nbytes // 8, value)

    def zeros(self, nbytes: int) -> bytes:
        return bytes(nbytes)

    def crash(self, *_holding: object) -> None:
        os._exit(3)


@yr.instance(invoke_options=yr.InvokeOptions(cpu=100, concurrency=4))
class ParallelStore:
    def slow_total(self, array: np.ndarray, seconds: float) -> float:
        time.sleep(seconds)  # later calls' arguments are written meanwhile
        return float(array.sum())
