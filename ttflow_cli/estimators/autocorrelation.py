r"""Integrated autocorrelation time of Markov-chain series, accumulated chunk by chunk.

For a stationary series ``y_t`` with normalized autocorrelation ``rho(t)``,

.. math::

    \tau_{\mathrm{int}} = 1 + 2 \sum_{t=1}^{\infty} \rho(t), \qquad
    \mathrm{Var}(\bar y) \approx \tau_{\mathrm{int}} \, \mathrm{Var}(y) / N,

so ``N / tau_int`` is the effective number of independent samples. (Sokal's
``tau_int`` is half of this one, with ``2 tau_int`` in the variance.) The sum is cut
at Sokal's automatic window: the smallest ``M`` with ``M >= c tau_int(M)``, ``c = 5``.

References:
    Sokal, "Monte Carlo methods in statistical mechanics: foundations and new
    algorithms", in Functional Integration, Cargese 1996 (Plenum, 1997), section 3.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SOKAL_WINDOW = 5.0
"""The constant ``c`` of the automatic window ``M >= c tau_int(M)``."""

MAX_LAG = 4096
"""Largest lag whose autocovariance is accumulated: ``tau_int`` up to about ``MAX_LAG / 5``."""


@dataclass(frozen=True)
class AutocorrelationTime:
    """Integrated autocorrelation time of one series.

    Attributes:
        tau_int: ``1 + 2 sum_{t=1}^{M} rho(t)``, at least about 1 for a Markov chain.
        window: the cut-off lag ``M``.
        converged: whether ``M >= c tau_int(M)`` was reached within the lags kept.
            When false, ``tau_int`` is the sum up to the last lag and likely too small.
        variance: sample variance of the series (divided by ``N``).
    """

    tau_int: float
    window: int
    converged: bool
    variance: float


def sokal_window(rho: np.ndarray, c: float = SOKAL_WINDOW) -> tuple[float, int, bool]:
    """Return ``(tau_int, M, converged)`` for normalized autocorrelations ``rho[0..L]``.

    ``rho[0]`` must be 1. ``M`` is the smallest lag with ``M >= c tau_int(M)``, or ``L``
    when no lag up to ``L`` satisfies it.
    """
    tau = 1.0 + 2.0 * np.cumsum(rho[1:])
    lags = np.arange(1, rho.size)
    reached = np.nonzero(lags >= c * tau)[0]
    if reached.size:
        index = int(reached[0])
        return float(tau[index]), int(lags[index]), True
    if tau.size == 0:
        return 1.0, 0, False
    return float(tau[-1]), int(lags[-1]), False


class AutocovarianceAccumulator:
    """Accumulate lagged products of ``K`` series, chunk by chunk, for lags ``0..max_lag``.

    The state is the sum of ``y_{t-l} y_t`` per lag, the sum of ``y``, and the first and
    last ``max_lag`` values, which correct the lagged sums for the mean at the end.
    The series are shifted by their first value so that a large mean with small
    fluctuations (an energy, say) does not lose digits. Memory is ``O(max_lag K)``,
    whatever the length, and the result depends on the chunk sizes only through
    rounding.
    """

    def __init__(self, columns: int, max_lag: int = MAX_LAG) -> None:
        if max_lag < 1:
            raise ValueError(f"max_lag must be a positive integer; got {max_lag}")
        self.columns = columns
        self.max_lag = max_lag
        self.n = 0
        self._reference: np.ndarray | None = None
        self._head = np.empty((0, columns))
        self._tail = np.empty((0, columns))
        self._total = np.zeros(columns)
        self._lagged = np.zeros((max_lag + 1, columns))

    def update(self, values: np.ndarray) -> None:
        """Append the next ``(N_chunk, K)`` values of the series (float64)."""
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != self.columns:
            raise ValueError(f"expected values of shape (N, {self.columns}); got {values.shape}")
        if values.shape[0] == 0:
            return
        if self._reference is None:
            self._reference = values[0].copy()
        y = values - self._reference

        self._lagged += _lagged_products(self._tail, y, self.max_lag)
        self._total += y.sum(axis=0)
        if self._head.shape[0] < self.max_lag:
            self._head = np.concatenate([self._head, y[: self.max_lag - self._head.shape[0]]])
        self._tail = np.concatenate([self._tail, y])[-self.max_lag:]
        self.n += y.shape[0]

    def means(self) -> np.ndarray:
        """Return the mean of each series, shape ``(K,)``."""
        if self._reference is None:
            raise ValueError("no values were added; call update() with at least one row")
        return self._reference + self._total / self.n

    def autocovariance(self) -> np.ndarray:
        """Return ``C(l) = (1/N) sum_t (y_{t-l} - mean)(y_t - mean)``, shape ``(L + 1, K)``.

        ``L = min(max_lag, N - 1)``. Dividing by ``N`` rather than ``N - l`` keeps the
        sequence positive semi-definite, as usual for this estimator.
        """
        if self.n == 0:
            raise ValueError("no values were added; call update() with at least one row")
        lags = min(self.max_lag, self.n - 1)
        mean = self._total / self.n
        # A_l sums y_0..y_{N-1-l} and B_l sums y_l..y_{N-1}.
        tail_sums = np.concatenate([np.zeros((1, self.columns)), np.cumsum(self._tail[::-1], axis=0)])
        head_sums = np.concatenate([np.zeros((1, self.columns)), np.cumsum(self._head, axis=0)])
        a = self._total - tail_sums[: lags + 1]
        b = self._total - head_sums[: lags + 1]
        count = (self.n - np.arange(lags + 1))[:, None]
        centered = self._lagged[: lags + 1] - mean * (a + b) + count * mean**2
        return centered / self.n

    def times(self, c: float = SOKAL_WINDOW) -> list[AutocorrelationTime | None]:
        """Return the integrated autocorrelation time of each series.

        An entry is ``None`` for a constant series, whose ``tau_int`` is undefined.
        """
        covariance = self.autocovariance()
        result: list[AutocorrelationTime | None] = []
        for column in range(self.columns):
            variance = float(covariance[0, column])
            if not variance > 0.0:
                result.append(None)
                continue
            tau, window, converged = sokal_window(covariance[:, column] / variance, c)
            result.append(AutocorrelationTime(tau_int=tau, window=window, converged=converged, variance=variance))
        return result


def _lagged_products(previous: np.ndarray, chunk: np.ndarray, max_lag: int) -> np.ndarray:
    """Return ``sum_j chunk[j] * series[j - l]`` for ``l = 0..max_lag``, per column.

    ``series`` is ``previous`` followed by ``chunk``; terms before its start are zero.
    The cross-correlation is computed with one FFT per column, zero-padded so that the
    circular correlation has no wrap-around.
    """
    series = np.concatenate([previous, chunk])
    offset = previous.shape[0]
    size = 1 << int(np.ceil(np.log2(series.shape[0] + chunk.shape[0])))
    spectrum = np.conj(np.fft.rfft(chunk, size, axis=0)) * np.fft.rfft(series, size, axis=0)
    correlation = np.fft.irfft(spectrum, size, axis=0)
    # correlation[s] = sum_j chunk[j] * series[j + s], and lag l is the shift s = offset - l.
    shifts = offset - np.arange(max_lag + 1)
    return correlation[shifts % size] * (shifts > -chunk.shape[0])[:, None]
