"""What loss to expect: the validation loss that runs of the default recipe reached on each kind
of text, by the characters they had read, and the one line at the end of a run that compares the
run with it (README, "What loss to expect", holds the same measurements as a table).

Characters read, not seconds, are the measure of a run's length here, so that the expectation
holds on a faster or slower machine; the kind of text matters more than anything else (Python
source reaches about 1.25 nats/char where Shakespeare reaches 1.4-1.5, and Chinese poems, with
thousands of characters, about 5.2).
"""

from __future__ import annotations

import math
import unicodedata

# kind -> (characters read, best validation loss in nats/char) of the default recipe on a 2-core
# CPU (README, What loss to expect), refitted on 2026-12-07, night, on the recipe as it is (--lr
# 6e-3, bf16 where the CPU has it, batch 24, clipping at 5, weight decay with dropout): English
# text: the ends of tiny-shakespeare runs of 60 s (2.1 M characters, 1.558), 120 s (3.7 M, 1.497),
# 240 s (4.1 M 1.439 and 4.3 M 1.459, two budget runs), 600 s (6.0 M 1.399 and 10.0 M 1.398, one
# each of the two models the rule chooses there; beside a busy core 6.1 M 1.443) and 1,200 s
# (12.8 M, 1.374), and of `make demo` (the full Shakespeare, its validation 200 K characters:
# 5.3 M 1.483, 6.2 M 1.479),
# smoothed to fall with the characters read, each run within 0.05 of the curve (1 M kept from
# the 2026-12-01 fit); Chinese text: the Tang poems, the 1x128 of 300 s (its end, 2.5 M 5.167, and
# 1.3 M 5.336 on the way), within 0.08 of the two one-layer runs of the morning before (2.0 M
# 5.349, 1.9 M 5.209); source code: the mean of two Python standard-library texts of 1.15 M
# characters (300 s each, 2026-12-01 and 2026-12-07, ~0.1 apart at 4 M) up to 4 M, and the older
# run's end (6.2 M, 1.185) raised by half that gap (the night's run: 5.1 M 1.266, 0.01 above it).
CURVES: dict[str, tuple[tuple[float, float], ...]] = {
    "English text": ((1e6, 1.79), (2e6, 1.58), (4e6, 1.48), (6e6, 1.44), (1.3e7, 1.38)),
    "Chinese text": ((1e6, 5.45), (2e6, 5.27), (2.5e6, 5.17)),
    "source code": ((1e6, 1.58), (2e6, 1.38), (4e6, 1.27), (6.2e6, 1.24)),
}
TOLERANCE = 0.10  # nats/char either side: runs on other texts of a kind differ about this much


def kind_of(chars: str, counts=None) -> str:
    """The kind of text an alphabet (and, if given, how often each character occurs) looks like:
    "Chinese text" when most characters are CJK ideographs, "source code" when brackets,
    operators and underscores are frequent, else "English text" (any alphabetic text)."""
    weights = counts if counts is not None else [1] * len(chars)
    total = sum(weights) or 1
    cjk = sum(w for c, w in zip(chars, weights) if "CJK" in unicodedata.name(c, ""))
    if cjk / total > 0.3:
        return "Chinese text"
    code = sum(w for c, w in zip(chars, weights) if c in "{}[]()<>=;_*/\\|&#$%+")
    return "source code" if code / total > 0.03 else "English text"  # (prose: under 1%; Python 5-7%, C 9%)


def expected_loss(kind: str, chars_read: float) -> float | None:
    """The loss runs of this kind reached after `chars_read` characters: interpolated in log
    characters between measured points, or the nearest end point beyond them."""
    points = CURVES.get(kind)
    if not points or chars_read <= 0:
        return None
    x = math.log(chars_read)
    xs = [math.log(c) for c, _ in points]
    if x <= xs[0]:
        return points[0][1]
    if x >= xs[-1]:
        return points[-1][1]
    for (x0, (_, y0)), (x1, (_, y1)) in zip(zip(xs, points), zip(xs[1:], points[1:])):
        if x0 <= x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return None


def verdict(val_loss: float | None, kind: str, chars_read: float) -> str | None:
    """One line that says whether a run went as expected, or None when there is nothing to
    compare (no validation loss)."""
    expected = expected_loss(kind, chars_read)
    if val_loss is None or expected is None or not math.isfinite(val_loss):
        return None
    read = f"{chars_read / 1e6:,.1f} M characters" if chars_read >= 1e5 else f"{chars_read:,.0f} characters"
    head = f"expected: runs on {kind} reach about {expected:.2f} nats/char after {read} (README, What loss to expect)"
    gap = val_loss - expected
    if gap > TOLERANCE:
        return (
            f"{head}; this one reached {val_loss:.2f}, worse than expected: a harder text, a run cut short, "
            "or options that do not suit it (try the defaults, or a longer --time-budget)"
        )
    if gap < -TOLERANCE:
        return f"{head}; this one reached {val_loss:.2f}, better than expected (an easier or more repetitive text)"
    return f"{head}; this one reached {val_loss:.2f}, as expected"


def run_verdict(val_loss: float, chars_read: float, alphabet: str, ids) -> str | None:
    """The verdict on a finished run: its kind of text judged from how often each character of
    `alphabet` occurs among (the first million of) its `ids`."""
    import numpy as np

    counts = np.bincount(np.asarray(ids[:1_000_000], dtype=np.int64), minlength=len(alphabet))
    return verdict(val_loss, kind_of(alphabet, counts.tolist()), chars_read)


OVERFIT_RISE = 0.05  # nats/char above the best validation loss, at least (2% of it for larger losses)
PATIENCE = 5  # evaluations without a better validation loss before a running run is told


class Overfitting:
    """Over-fitting, told from a run's evaluations (rows of metrics.jsonl, fed in order to `add`):
    the validation loss has risen clearly above its best while the training loss went on
    falling. The model is learning its training text by heart, not what carries over to new
    text; a lower --lr or a longer run would not help (a smaller model, more text or more
    dropout would). Kept as the best row and the latest, so a long run costs nothing to watch."""

    def __init__(self) -> None:
        self.best: dict | None = None  # the evaluation with the lowest validation loss (the first of equals)
        self.last: dict | None = None
        self.since_best = 0  # evaluations after it

    def add(self, row: dict) -> None:
        if not all(_is_loss(row.get(key)) for key in ("val_loss", "train_loss")):
            return
        if self.best is None or row["val_loss"] < self.best["val_loss"]:
            self.best, self.since_best = row, 0
        else:
            self.since_best += 1
        self.last = row

    def diagnosis(self, patience: int = 1) -> str | None:
        """What is wrong, in a line, once `patience` evaluations have come after the best and
        the latest shows over-fitting; None otherwise."""
        from charrnn.store.run_folder import BEST

        best, last = self.best, self.last
        if best is None or last is None or self.since_best < patience:
            return None
        rise = last["val_loss"] - best["val_loss"]
        if rise < max(OVERFIT_RISE, 0.02 * best["val_loss"]) or not last["train_loss"] < best["train_loss"]:
            return None
        return (
            f"over-fitting: the validation loss was best at step {best.get('step', '?'):,} "
            f"({best['val_loss']:.2f} nats/char) and has risen to {last['val_loss']:.2f} since, while the training "
            f"loss fell from {best['train_loss']:.2f} to {last['train_loss']:.2f}: the model learns this text by "
            f"heart, not what carries over to new text. {BEST} keeps it at its best; more text, a smaller model "
            "(--hidden, --layers) or more --dropout would do better"
        )


def overfitting(rows) -> str | None:
    """The over-fitting diagnosis of a finished run's evaluation rows (see `Overfitting`)."""
    watch = Overfitting()
    for row in rows:
        watch.add(row)
    return watch.diagnosis()


def _is_loss(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
