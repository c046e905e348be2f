"""A one-line progress bar for training (no dependencies).

    step 1200/3000 [#########...........]  40% | loss 1.62 | val 1.98 bpc | 31.2K chars/s | ETA 1:04

On a terminal the line is redrawn in place (``\\r``) at most every ``min_interval`` seconds. When
the stream is not a terminal (a log file, CI) a full line is printed every ``log_interval`` seconds
instead, so logs stay readable.
"""
import sys
import time


def format_duration(seconds):
    """75 -> '1:15', 3725 -> '1:02:05'."""
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def format_rate(x):
    """31234.5 -> '31.2K'."""
    for unit, scale in (("M", 1e6), ("K", 1e3)):
        if x >= scale:
            return f"{x / scale:.1f}{unit}"
    return f"{x:.0f}"


class Progress:
    def __init__(self, total=None, time_limit=None, stream=None, width=20, min_interval=0.1,
                 log_interval=10.0, enabled=True, unit="chars"):
        self.total, self.time_limit, self.unit = total, time_limit, unit
        self.stream = stream if stream is not None else sys.stderr
        self.width, self.min_interval, self.log_interval = width, min_interval, log_interval
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.perf_counter()
        self._last_draw = -1e9
        self._drawn = False
        self._line = ""

    def eta(self, step, elapsed, start_step=0):
        """Seconds left: the sooner of reaching ``total`` steps and hitting ``time_limit``."""
        candidates = []
        done = step - start_step
        if self.total and done > 0:
            candidates.append((self.total - step) * elapsed / done)
        if self.time_limit:
            candidates.append(max(0.0, self.time_limit - elapsed))
        return min(candidates) if candidates else None

    def render(self, step, loss=None, metric=None, rate=None, eta=None):
        """The bar's text; metric: preformatted (e.g. 'val 1.98 bpc'); rate: units per second."""
        parts = [f"step {step}" + (f"/{self.total}" if self.total else "")]
        if self.total:
            frac = min(1.0, step / self.total)
            filled = int(frac * self.width)
            parts[0] += f" [{'#' * filled}{'.' * (self.width - filled)}] {frac * 100:3.0f}%"
        if loss is not None:
            parts.append(f"loss {loss:.3f}")
        if metric is not None:
            parts.append(metric)
        if rate:
            parts.append(f"{format_rate(rate)} {self.unit}/s")
        if eta is not None:
            parts.append(f"ETA {format_duration(eta)}")
        return " | ".join(parts)

    def update(self, step, force=False, **fields):
        if not self.enabled:
            return
        now = time.perf_counter()
        interval = self.min_interval if self.tty else self.log_interval
        if not force and now - self._last_draw < interval:
            return
        self._last_draw = now
        self._line = self.render(step, **fields)
        if self.tty:
            self.stream.write("\r" + self._line.ljust(getattr(self, "_width_drawn", 0)))
            self._width_drawn = len(self._line)
        else:
            self.stream.write(self._line + "\n")
        self._drawn = True
        self.stream.flush()

    def write(self, message):
        """Print a message line without garbling the bar."""
        if self.tty and self._drawn:
            self.stream.write("\r" + " " * getattr(self, "_width_drawn", 0) + "\r")
        self.stream.write(message + "\n")
        if self.tty and self._drawn:
            self.stream.write(self._line)
        self.stream.flush()

    def close(self):
        if self.enabled and self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
